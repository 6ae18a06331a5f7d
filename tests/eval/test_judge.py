"""Pairwise judging: both orders cancel position bias; the endpoint back end retries and fails clearly."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from lmforge.cli import main
from lmforge.eval.judge import pairwise_compare, parse_verdict, summarize
from lmforge.synth.backend import EndpointBackend


class RuleJudge:
    """A judge back end with a rule: `prefer(first, second)` -> "1" | "2" | "tie"."""

    def __init__(self, prefer):
        self.prefer, self.calls = prefer, 0

    def chat(self, conversations, max_new_tokens=16, **_):
        self.calls += len(conversations)
        out = []
        for (message,) in conversations:
            text = message["content"]
            first = text.split("[Response 1]\n")[1].split("\n\n[Response 2]")[0]
            second = text.split("[Response 2]\n")[1].split("\n\nAnswer with")[0]
            out.append(f"Verdict: {self.prefer(first, second)}")
        return out


def test_position_bias_is_cancelled_and_real_preferences_survive():
    prompts, a, b = ["p1", "p2", "p3", "p4"], ["long answer", "x", "same", "longest one"], ["short", "yy", "same", "y"]
    always_first = RuleJudge(lambda f, s: "1")
    summary, rows = pairwise_compare(prompts, a, b, always_first)
    assert always_first.calls == 8 and {r["outcome"] for r in rows} == {"tie"} and summary["win_rate"] == 0.5
    longer = RuleJudge(lambda f, s: "1" if len(f) > len(s) else "2" if len(s) > len(f) else "tie")
    summary, rows = pairwise_compare(prompts, a, b, longer)
    assert [r["outcome"] for r in rows] == ["win", "loss", "tie", "win"]
    assert (summary["wins"], summary["ties"], summary["losses"]) == (2, 1, 1)
    assert summary["win_rate"] == pytest.approx(2.5 / 4)
    assert summary["ci95_low"] < summary["win_rate"] < summary["ci95_high"]


def test_verdict_parsing_and_summary_numbers():
    assert parse_verdict("I think 2 is better") == "2" and parse_verdict("TIE.") == "tie"
    assert parse_verdict("Response 1") == "1" and parse_verdict("neither") is None
    s = summarize([{"outcome": o} for o in ["win", "win", "loss", "tie"]])
    # scores 1, 1, 0, .5: mean .625, sample sd .4787, half-width 1.96 * .4787 / 2
    assert s["win_rate"] == 0.625 and s["ci95_low"] == pytest.approx(0.625 - 0.4691, abs=1e-3)


class _Endpoint(BaseHTTPRequestHandler):
    """A fake OpenAI-compatible server: fails `fail_first` times with 503, then answers."""
    script = {"fail_first": 0, "status": 200, "seen": []}

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.script["seen"].append((body, self.headers.get("Authorization")))
        if self.script["fail_first"] > 0:
            self.script["fail_first"] -= 1
            self.send_response(503), self.end_headers()
            return
        if self.script["status"] != 200:
            self.send_response(self.script["status"]), self.end_headers()
            self.wfile.write(b"bad request: unknown model")
            return
        text = body["messages"][-1]["content"]
        reply = "1" if "[Response 1]" in text else f"echo: {text}"
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = HTTPServer(("127.0.0.1", 0), _Endpoint)
    _Endpoint.script.update(fail_first=0, status=200, seen=[])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1", _Endpoint.script
    server.shutdown()


def test_endpoint_backend_keeps_order_retries_and_reads_the_key_from_the_environment(endpoint, monkeypatch):
    url, script = endpoint
    monkeypatch.setenv("TEST_KEY", "sk-123")
    backend = EndpointBackend(url, "judge-model", api_key_env="TEST_KEY", backoff_s=0.01, concurrency=3)
    script["fail_first"] = 2
    replies = backend.chat([[{"role": "user", "content": f"q{i}"}] for i in range(5)], max_new_tokens=7)
    assert replies == [f"echo: q{i}" for i in range(5)]
    body, auth = script["seen"][-1]
    assert auth == "Bearer sk-123" and body["model"] == "judge-model" and body["max_tokens"] == 7


def test_endpoint_backend_fails_at_once_on_a_client_error(endpoint):
    url, script = endpoint
    script["status"] = 400
    with pytest.raises(RuntimeError, match="HTTP 400: bad request: unknown model"):
        EndpointBackend(url, "m", backoff_s=0.01).chat([[{"role": "user", "content": "q"}]])
    assert len(script["seen"]) == 1  # not retried


def test_lmforge_eval_pairwise_end_to_end(chat_model_dir, endpoint, tmp_path):
    url, _ = endpoint  # the judge always says "1": a pure position bias, so every pair ties
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say {w}."}) + "\n" for w in ("hi", "bye", "yes")))
    out = tmp_path / "eval"
    assert main(["eval", str(chat_model_dir), "--task", str(prompts), "--against", str(chat_model_dir),
                 "--judge", "any", "--judge_url", url, "--answer_tokens", "4", "--output", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())["tasks"]["prompts"]
    assert (result["kind"], result["n"], result["ties"], result["win_rate"]) == ("pairwise", 3, 3, 0.5)
    rows = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
    assert all(r["answer_a"] == r["answer_b"] for r in rows)  # the same model, greedy
