"""A small OpenAI-compatible chat-completions server for the data engine's endpoint path.

`script["fail"]` is a queue of misbehaviours served before normal answers: "500", "malformed"
(a 200 with a body that is not JSON), "no_choices" (JSON without choices), "slow" (answers
after the client's timeout), "drop" (closes the connection without a reply);
`script["broken_after"] = (n, kind)` answers the first n requests, then fails every one. Normal answers:
a judge prompt gets "1" or "2" for the longer response, anything else an answer that depends
on the question and the request's seed, cut to `max_tokens` words (finish_reason "length")."""

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


def default_reply(body: dict) -> str:
    text = body["messages"][-1]["content"]
    if "[Response 1]" in text:
        first = text.split("[Response 1]\n")[1].split("\n\n[Response 2]")[0]
        second = text.split("[Response 2]\n")[1].split("\n\nAnswer with")[0]
        return "1" if len(first) > len(second) else "2" if len(second) > len(first) else "tie"
    numbers = [int(n) for n in re.findall(r"\d+", text)]
    seed = body.get("seed", 0)
    if len(numbers) == 2 and ("+" in text or " - " in text):  # right for even seeds, wrong for odd ones
        a, op, b = numbers[0], "+" if "+" in text else "-", numbers[1]
        return f"{a} {op} {b} = {(a + b if op == '+' else a - b) + seed % 2}." + " Indeed." * (seed % 3)
    return f"Answer {seed % 5} to: {text}"


class _Handler(BaseHTTPRequestHandler):
    script: dict = {}

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.script["lock"]:
            self.script["requests"].append(body)
            failure = self.script["fail"].pop(0) if self.script["fail"] else None
            broken_after = self.script["broken_after"]
            if broken_after and len(self.script["requests"]) > broken_after[0]:
                failure = broken_after[1]
        if failure == "drop":
            self.close_connection = True
            self.connection.close()
            return
        if failure == "500":
            return self._send(500, b"internal error")
        if failure == "slow":
            time.sleep(self.script["slow_s"])
        if failure == "malformed":
            return self._send(200, b"{not json")
        if failure == "no_choices":
            return self._send(200, b'{"error": "overloaded"}')
        words, finish = self.script["reply"](body).split(" "), "stop"
        if len(words) > body["max_tokens"]:  # a word stands for a token
            words, finish = words[:body["max_tokens"]], "length"
        choice = {"message": {"role": "assistant", "content": " ".join(words)}, "finish_reason": finish}
        self._send(200, json.dumps({"choices": [choice]}).encode())

    def _send(self, status: int, data: bytes):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except BrokenPipeError:  # the client timed out and left
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    """(url, script): the server's base URL (…/v1) and its mutable behaviour."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    _Handler.script = {"fail": [], "requests": [], "reply": default_reply, "slow_s": 0.5, "broken_after": None,
                       "lock": threading.Lock()}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1", _Handler.script
    server.shutdown()
    server.server_close()
