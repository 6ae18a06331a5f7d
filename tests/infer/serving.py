"""A live `lmforge serve` app on loopback for tests: uvicorn in a thread, a tiny model."""

import contextlib
import socket
import threading
import time

import uvicorn

from lmforge.infer.arena import Arena
from lmforge.infer.scheduler import Scheduler
from lmforge.infer.server import ServeLimits, ServedModel, create_app
from lmforge.model.load import load_pretrained
from lmforge.stages.common import stop_ids

KEY = "sk-test"
LIMITS = ServeLimits(max_prompt_tokens=200, max_tokens=50, max_body_bytes=20_000, max_running=4,
                     max_waiting=8)


@contextlib.contextmanager
def live_server(models: dict, limits: ServeLimits = LIMITS, arena: Arena | None = None):
    """uvicorn in a thread on a free loopback port -> base URL; schedulers started and stopped."""
    for m in models.values():
        m.scheduler.start()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(models, [KEY], limits, arena), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        for m in models.values():
            m.scheduler.shutdown()


def served(model_dir, scheduler_cls=Scheduler, limits: ServeLimits = LIMITS, **kwargs) -> ServedModel:
    model, tok = load_pretrained(model_dir)
    scheduler = scheduler_cls(model, set(stop_ids(tok)), limits.max_running, limits.max_waiting, **kwargs)
    return ServedModel("tiny", tok, scheduler)


def wait_until(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class SlowScheduler(Scheduler):
    """Decode steps that take 50 ms, so a test can act while requests are running."""

    def _decode(self, busy):
        time.sleep(0.05)
        super()._decode(busy)


def client(url: str, key: str = KEY):
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)
