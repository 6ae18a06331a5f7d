"""Tool calling: OpenAI `tools` / `tool_calls` <-> the text a chat template renders, and
the built-in tools (a calculator, Python in the sandbox).

    messages = to_template_messages(openai_messages, tools, tok)  # plain role/content dicts
    content, calls = parse_tool_calls(generated_text)             # -> OpenAI tool_calls
    run_builtin("calculator", '{"expression": "2 * (3 + 4)"}')      # "14"

The format: a call is `<|tool_call|>{"name": ..., "arguments": {...}}<|/tool_call|>` in the
assistant's text, a result is `<|tool_result|>...<|/tool_result|>` in a `tool` turn; these
are our tokenizer's tool tokens (tokenizer/bpe.py). A tokenizer without them (SmolLM2,
Qwen: ChatML) gets Hermes' `<tool_call>...</tool_call>` text, which Qwen2.5 was trained on.
The tools' schemas go into the system turn. Templates render message *content* only, so a
call and a result are content text; SFT on the same rendering teaches a model to call.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
import secrets

from lmforge.tokenizer.bpe import TOOL_CALL, TOOL_CALL_END, TOOL_RESULT, TOOL_RESULT_END

HERMES = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")
_CALL = re.compile(r"(?:<\|tool_call\|>|<tool_call>)\s*(.*?)\s*(?:<\|/tool_call\|>|</tool_call>)", re.S)

BUILTIN_TOOLS = {
    "calculator": {"type": "function", "function": {
        "name": "calculator", "description": "Evaluate an arithmetic expression exactly.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                       "required": ["expression"]}}},
    "python": {"type": "function", "function": {
        "name": "python", "description": "Run a Python program; returns what it prints.",
        "parameters": {"type": "object", "properties": {"code": {"type": "string"}},
                       "required": ["code"]}}},
}


def markers(tok) -> tuple[str, str, str, str]:
    """(call open, call close, result open, result close) for this tokenizer."""
    ours = (TOOL_CALL, TOOL_CALL_END, TOOL_RESULT, TOOL_RESULT_END)
    specials = tok.special_tokens if tok is not None else {}
    return ours if all(m in specials for m in ours) else HERMES


def to_template_messages(messages: list[dict], tools: list[dict] | None, tok=None) -> list[dict]:
    """OpenAI messages (tool_calls, tool turns, content parts) -> {"role", "content"} text."""
    call_open, call_close, result_open, result_close = markers(tok)
    out = []
    for m in messages:
        content = _text(m.get("content"))
        role = "system" if m["role"] == "developer" else m["role"]
        for call in m.get("tool_calls") or []:
            fn = call["function"]
            body = {"name": fn["name"], "arguments": _json_or_text(fn.get("arguments") or "{}")}
            content += f"{call_open}{json.dumps(body, ensure_ascii=False)}{call_close}"
        if role == "tool":
            content = f"{result_open}{content}{result_close}"
        out.append({"role": role, "content": content})
    if tools:
        out = _with_tool_system_prompt(out, tools, call_open, call_close)
    return out


def parse_tool_calls(text: str) -> tuple[str, list[dict]]:
    """Generated text -> (text outside the calls, OpenAI tool_calls). A call whose JSON does
    not parse, or names no function, stays in the text."""
    calls = []

    def take(match: re.Match) -> str:
        try:
            body = json.loads(match.group(1))
            name, arguments = body["name"], body.get("arguments", {})
        except (ValueError, KeyError, TypeError):
            return match.group(0)
        if not isinstance(name, str):
            return match.group(0)
        arguments = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        calls.append({"id": f"call_{secrets.token_hex(12)}", "type": "function",
                      "function": {"name": name, "arguments": arguments}})
        return ""

    return _CALL.sub(take, text).strip(), calls


def run_builtin(name: str, arguments: str) -> str:
    """Run a built-in tool; errors come back as text for the model to read."""
    try:
        args = json.loads(arguments or "{}")
        if name == "calculator":
            return calculate(str(args["expression"]))
        if name == "python":
            from lmforge.sandbox import run_python

            result = run_python(str(args["code"]), timeout_s=10, cpu_s=5, memory_mb=256,
                                max_output_bytes=16_384)
            if result.status == "ok":
                return result.stdout
            return f"[{result.status}] " + (result.stdout + result.stderr)[-4000:]  # the end says why
    except (ValueError, KeyError, TypeError, ArithmeticError) as e:
        return f"error: {e}"
    return f"error: no built-in tool {name!r}"


# --- the calculator: arithmetic on an AST, never eval ----------------------------------
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {"sqrt": math.sqrt, "abs": abs, "round": round, "min": min, "max": max,
              "log": math.log, "exp": math.exp, "sin": math.sin, "cos": math.cos}
_CONSTANTS = {"pi": math.pi, "e": math.e}
MAX_RESULT_BITS = 100_000  # 10**30000 is fine; 9**9**9 would take the server's CPU for minutes
MAX_EXPRESSION_CHARS = 500


def calculate(expression: str) -> str:
    """'2 * (3 + 4) / 7' -> '2'. Numbers, + - * / // % **, parentheses, a few math functions."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from e
    value = _evaluate(tree.body)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return str(value)


def _evaluate(node: ast.AST):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(left) > 1 and abs(right) * math.log2(abs(left)) > MAX_RESULT_BITS:
            raise ValueError(f"the result of {ast.unparse(node)!r} would be too large")
        return _BINARY[type(node.op)](left, right)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
            and not node.keywords):
        return _FUNCTIONS[node.func.id](*(_evaluate(a) for a in node.args))
    raise ValueError(f"not allowed in an expression: {ast.unparse(node)!r}")


def _text(content) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if part.get("type") == "text")
    return content or ""


def _json_or_text(arguments: str):
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def _with_tool_system_prompt(messages: list[dict], tools: list[dict], call_open: str,
                             call_close: str) -> list[dict]:
    schemas = "\n".join(json.dumps(t.get("function", t), ensure_ascii=False) for t in tools)
    prompt = ("You can call these tools. To call one, reply with "
              f'{call_open}{{"name": <tool name>, "arguments": <JSON object>}}{call_close}; '
              f"its result comes back in a tool turn.\nTools:\n{schemas}")
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": messages[0]["content"] + "\n\n" + prompt}] + messages[1:]
    return [{"role": "system", "content": prompt}] + messages
