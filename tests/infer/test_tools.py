"""Tool calls <-> template text, the AST calculator, and the Python tool in the sandbox."""

import json

import pytest

from lmforge.infer.tools import calculate, parse_tool_calls, run_builtin, to_template_messages


class Tok:
    special_tokens = {t: i for i, t in enumerate(
        ["<|tool_call|>", "<|/tool_call|>", "<|tool_result|>", "<|/tool_result|>"])}


def test_calls_and_results_render_as_tool_tokens_and_parse_back():
    messages = [{"role": "user", "content": "2+3?"},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
                    "name": "calculator", "arguments": '{"expression": "2+3"}'}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "5"}]
    tools = [{"type": "function", "function": {"name": "calculator", "parameters": {}}}]
    rendered = to_template_messages(messages, tools, Tok())
    assert rendered[0]["role"] == "system" and '"name": "calculator"' in rendered[0]["content"]
    call = rendered[2]["content"]
    assert call == '<|tool_call|>{"name": "calculator", "arguments": {"expression": "2+3"}}<|/tool_call|>'
    assert rendered[3] == {"role": "tool", "content": "<|tool_result|>5<|/tool_result|>"}
    content, calls = parse_tool_calls("Let me compute. " + call)
    assert content == "Let me compute." and json.loads(calls[0]["function"]["arguments"]) == {"expression": "2+3"}
    assert to_template_messages(messages, None, None)[1]["content"].startswith("<tool_call>")  # ChatML: Hermes
    assert parse_tool_calls("<tool_call>not json</tool_call>") == ("<tool_call>not json</tool_call>", [])


@pytest.mark.parametrize("expression, value", [("2 * (3 + 4) / 7", "2"), ("2^10", "1024"), ("-3 % 5", "2"),
                                               ("sqrt(2)", "1.4142135623730951"), ("10 ** 30", str(10 ** 30))])
def test_calculator(expression, value):
    assert calculate(expression) == value


@pytest.mark.parametrize("expression", ["__import__('os').system('ls')", "(1).__class__", "9 ** 9 ** 9",
                                        "open('x')", "[1] * 10", "x"])
def test_calculator_refuses_anything_but_arithmetic(expression):
    with pytest.raises(ValueError):
        calculate(expression)


def test_builtin_tools_return_errors_as_text():
    assert run_builtin("calculator", '{"expression": "1/0"}') == "error: division by zero"
    assert run_builtin("calculator", "not json").startswith("error:")
    assert run_builtin("python", json.dumps({"code": "print(6 * 7)"})) == "42\n"
    assert run_builtin("python", json.dumps({"code": "while True: pass"})).startswith("[timeout]")
    assert run_builtin("shell", "{}").startswith("error: no built-in tool")


def test_the_python_tool_cannot_signal_the_server_or_flood_it():
    from lmforge.sandbox import isolation

    if not isolation().own_uid:
        pytest.skip("signals are contained only when the sandbox runs under its own uid (as root)")
    code = "import os, signal\ntry:\n    os.kill(os.getppid(), signal.SIGTERM)\nexcept OSError as e:\n    print(type(e).__name__)"
    assert run_builtin("python", json.dumps({"code": code})).strip() == "PermissionError"
    flood = run_builtin("python", json.dumps({"code": "print('x' * 10_000_000)"}))
    assert flood.startswith("[output_limit]") and len(flood) <= 4100
