"""The OpenAI-compatible server, driven by the official `openai` client over loopback."""

import json
import threading
import time

import httpx
import pytest
import torch

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from lmforge.data.preference import read_preferences  # noqa: E402
from lmforge.infer.arena import Arena  # noqa: E402
from lmforge.infer.engine import Sampling, generate  # noqa: E402
from lmforge.infer.scheduler import Scheduler  # noqa: E402
from lmforge.infer.server import ServeLimits, ServedModel  # noqa: E402
from lmforge.infer.tools import calculate  # noqa: E402
from lmforge.model.load import load_pretrained  # noqa: E402
from lmforge.model.transformer import Transformer  # noqa: E402
from lmforge.stages.common import stop_ids  # noqa: E402
from lmforge.tokenizer.chat import render_prompt  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402
from tests.infer.serving import KEY, SlowScheduler, client, live_server, served, wait_until  # noqa: E402


@pytest.fixture(scope="module")
def arena_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("arena")


@pytest.fixture(scope="module")
def server(chat_model_dir, arena_dir):
    with live_server({"tiny": served(chat_model_dir)}, arena=Arena(arena_dir)) as url:
        yield url


def greedy_reply(model_dir, messages, max_new_tokens) -> str:
    model, tok = load_pretrained(model_dir)
    stop = set(stop_ids(tok))
    out = generate(model, [render_prompt(tok, messages)], max_new_tokens, Sampling(0), stop_ids=stop)
    return tok.decode([t for t in out.tokens[0] if t not in stop], skip_special=True)


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}]


def test_models_and_health(server):
    assert [m.id for m in client(server).models.list().data] == ["tiny"]
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_chat_equals_the_engine_and_counts_usage(server, chat_model_dir):
    reply = client(server).chat.completions.create(model="tiny", messages=MESSAGES, temperature=0,
                                                   max_tokens=20, n=2)
    assert len(reply.choices) == 2
    expected = greedy_reply(chat_model_dir, MESSAGES, 20)
    assert [c.message.content for c in reply.choices] == [expected, expected]
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage.completion_tokens <= 40 and reply.usage.prompt_tokens > 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_stream_chunks_add_up_to_the_reply_and_end_with_usage(server):
    api = client(server)
    whole = api.chat.completions.create(model="tiny", messages=MESSAGES, temperature=0, max_tokens=20)
    chunks = list(api.chat.completions.create(model="tiny", messages=MESSAGES, temperature=0, max_tokens=20,
                                              stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_completions_honour_max_tokens_stop_and_seed(server):
    api = client(server)
    five = api.completions.create(model="tiny", prompt="Once upon a time", max_tokens=5, temperature=0,
                                  extra_body={"ignore_eos": True})
    assert five.usage.completion_tokens == 5 and five.choices[0].finish_reason == "length"
    long = api.completions.create(model="tiny", prompt="Once upon a time", max_tokens=30, temperature=0,
                                  extra_body={"ignore_eos": True}).choices[0].text
    stop = long[len(long) // 2:len(long) // 2 + 2]
    cut = api.completions.create(model="tiny", prompt="Once upon a time", max_tokens=30, temperature=0,
                                 stop=[stop], extra_body={"ignore_eos": True}).choices[0]
    assert cut.text == long[:long.index(stop)] and cut.finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in api.completions.create(
        model="tiny", prompt="Once upon a time", max_tokens=30, temperature=0, stop=stop, stream=True,
        extra_body={"ignore_eos": True}))
    assert streamed == cut.text
    sampled = [api.completions.create(model="tiny", prompt="Once", max_tokens=12, temperature=1.0, seed=s,
                                      extra_body={"ignore_eos": True}).choices[0].text for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] != sampled[2]


def test_wrong_key_is_401_and_bad_requests_are_400_with_a_message(server):
    with pytest.raises(openai.AuthenticationError):
        client(server, key="sk-wrong").models.list()
    api = client(server)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        api.chat.completions.create(model="tiny", messages=MESSAGES, temperature=5)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        api.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=10_000)
    with pytest.raises(openai.BadRequestError, match="prompt has"):
        api.completions.create(model="tiny", prompt="word " * 400)
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(model="nope", messages=MESSAGES)


def test_malformed_bodies_get_openai_errors_and_the_server_lives_on(server):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    post = lambda body: httpx.post(f"{server}/v1/chat/completions", content=body, headers=headers)  # noqa: E731
    for body in (b"{not json", b'{"model": "tiny", "messages": "\xff\xfe"}', b"[]", b'{"model": "tiny"}'):
        response = post(body)
        assert response.status_code == 400 and response.json()["error"]["message"]
    assert post(b"x" * 30_000).status_code == 413
    unknown = post(json.dumps({"model": "tiny", "messages": MESSAGES, "max_tokens": 2, "frobnicate": 1}))
    assert unknown.status_code == 200
    assert httpx.get(f"{server}/health").status_code == 200


def test_web_page_and_arena_votes_reach_the_preference_file(server, arena_dir):
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and "Leaderboard" in page.text
    headers = {"Authorization": f"Bearer {KEY}"}
    post = lambda path, body: httpx.post(f"{server}{path}", json=body, headers=headers, timeout=30)  # noqa: E731
    for winner in ("a", "tie", "b"):
        fight = post("/v1/arena/battle", {"messages": MESSAGES[1:], "max_tokens": 8}).json()
        assert {"a", "b", "battle_id"} <= set(fight) and "tiny" not in json.dumps(fight)  # anonymous
        assert post("/v1/arena/vote", {"battle_id": fight["battle_id"], "winner": winner}).json()["a"] == "tiny"
        assert post("/v1/arena/vote", {"battle_id": fight["battle_id"], "winner": winner}).status_code == 404
    pairs = read_preferences(arena_dir / "pairs.jsonl")
    assert len(pairs) == 2 and pairs[0].prompt == MESSAGES[1:]
    assert len((arena_dir / "ties.jsonl").read_text().splitlines()) == 1
    board = httpx.get(f"{server}/v1/arena/leaderboard", headers=headers).json()["models"]
    assert board[0]["model"] == "tiny" and board[0]["votes"] == 6


def test_a_client_leaving_mid_stream_frees_its_slot_and_a_full_queue_is_429(chat_model_dir):
    limits = ServeLimits(max_prompt_tokens=100, max_tokens=100, max_running=1, max_waiting=1)
    model = served(chat_model_dir, SlowScheduler, limits)
    submitted = []
    submit = model.scheduler.submit
    model.scheduler.submit = lambda *a, **k: submitted.append(submit(*a, **k)) or submitted[-1]
    with live_server({"tiny": model}, limits) as url:
        body = {"model": "tiny", "prompt": "Once", "max_tokens": 100, "stream": True, "ignore_eos": True}
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.stream("POST", f"{url}/v1/completions", json=body, headers=headers) as first:
            lines = first.iter_lines()  # held: a dropped iterator closes the connection
            next(lines)
            assert model.scheduler.running == 1
            waiting = threading.Thread(target=httpx.post, args=(f"{url}/v1/completions",),
                                       kwargs={"json": {**body, "stream": False, "max_tokens": 3},
                                               "headers": headers, "timeout": 30})
            waiting.start()
            wait_until(lambda: model.scheduler.waiting.qsize() == 1)
            with pytest.raises(openai.RateLimitError) as busy:
                client(url).completions.create(model="tiny", prompt="Once", max_tokens=3)
            assert busy.value.response.headers["retry-after"] == "1"
        wait_until(lambda: submitted[0].done, seconds=2)
        assert submitted[0].finish_reason == "cancelled" and len(submitted[0].output) < 50
        waiting.join(10)
        assert submitted[1].finish_reason == "length"


def test_a_request_past_its_timeout_is_cut(chat_model_dir):
    limits = ServeLimits(max_prompt_tokens=100, max_tokens=100, request_timeout_s=0.5)
    with live_server({"tiny": served(chat_model_dir, SlowScheduler, limits)}, limits) as url:
        started = time.monotonic()
        reply = client(url).completions.create(model="tiny", prompt="Once", max_tokens=100,
                                               extra_body={"ignore_eos": True})
        assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens < 50
        assert time.monotonic() - started < 3


class ScriptedScheduler(Scheduler):
    """A real scheduler whose sampler is overruled by a script: prompt text -> the reply."""

    def __init__(self, *args, script, tok, **kwargs):
        super().__init__(*args, **kwargs)
        self.script, self.tok, self.prompts = script, tok, []

    def _emit(self, slot, logits):
        request = self.slots[slot]
        if not request.output:
            self.prompts.append(self.tok.decode(request.prompt))
        reply = self.tok.encode(self.script(self.prompts[-1]), allow_special=True) + [self.tok.eos_id]
        forced = torch.full_like(logits, float("-inf"))
        forced[0, reply[min(len(request.output), len(reply) - 1)]] = 0
        super()._emit(slot, forced)


def test_tool_call_round_trip(chat_model_dir):
    _, tok = load_pretrained(chat_model_dir)
    call = '<|tool_call|>{"name": "calculator", "arguments": {"expression": "2 * (3 + 4)"}}<|/tool_call|>'

    def script(prompt: str) -> str:
        return "It is 14." if "<|tool_result|>14<|/tool_result|>" in prompt else call

    limits = ServeLimits(max_prompt_tokens=800, max_tokens=200)
    long_context = Transformer(tiny_config(vocab_size=512, max_position_embeddings=1024))  # the schema is long
    model = ServedModel("tiny", tok, ScriptedScheduler(long_context, set(stop_ids(tok)), script=script, tok=tok))
    tools = [{"type": "function", "function": {
        "name": "calculator", "description": "Evaluate arithmetic.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}}}}]
    with live_server({"tiny": model}, limits) as url:
        api = client(url)
        messages = [{"role": "user", "content": "What is 2 * (3 + 4)?"}]
        first = api.chat.completions.create(model="tiny", messages=messages, tools=tools, max_tokens=200)
        assert first.choices[0].finish_reason == "tool_calls"
        tool_call = first.choices[0].message.tool_calls[0]
        assert tool_call.function.name == "calculator"
        result = calculate(json.loads(tool_call.function.arguments)["expression"])
        messages += [first.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": tool_call.id, "content": result}]
        second = api.chat.completions.create(model="tiny", messages=messages, tools=tools, max_tokens=200)
        assert second.choices[0].message.content == "It is 14."
        assert second.choices[0].finish_reason == "stop"
        assert '"name": "calculator"' in model.scheduler.prompts[0]  # the schema reached the prompt
        served_side = api.chat.completions.create(model="tiny", messages=messages[:1], max_tokens=200,
                                                  extra_body={"builtin_tools": ["calculator"]})
        assert served_side.choices[0].message.content == "It is 14."
        assert served_side.model_extra["tool_results"][0]["result"] == "14"
        with pytest.raises(openai.BadRequestError, match="not enabled"):
            api.chat.completions.create(model="tiny", messages=messages[:1], extra_body={"builtin_tools": ["python"]})
        streamed = list(api.chat.completions.create(model="tiny", messages=messages[:1], tools=tools,
                                                    max_tokens=200, stream=True))
        calls = [c.choices[0].delta.tool_calls for c in streamed if c.choices and c.choices[0].delta.tool_calls]
        assert calls[0][0].function.name == "calculator"


def test_cli_serves_every_model_named(chat_model_dir, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from lmforge.cli import STAGES, _positionals_to_overrides, main
    from lmforge.config import load_config
    from lmforge.stages.serve import ServeConfig, build_app

    assert main(["serve"]) == 2 and "name at least one model" in capsys.readouterr().err
    args = _positionals_to_overrides([str(chat_model_dir), str(chat_model_dir) + "/", "--device", "cpu",
                                      "--arena_dir", str(tmp_path)], STAGES["serve"][3])
    app = build_app(load_config(ServeConfig, args))
    ids = [m["id"] for m in TestClient(app).get("/v1/models").json()["data"]]
    assert ids == [str(chat_model_dir)]  # the same path twice is one model
