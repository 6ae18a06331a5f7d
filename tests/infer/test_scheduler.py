"""Continuous batching: requests that join and leave a running batch decode as if alone."""

import threading

import pytest
import torch

from lmforge.infer.engine import Sampling, generate
from lmforge.infer.scheduler import QueueFull, Scheduler
from lmforge.model.transformer import Transformer
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Transformer(tiny_config(vocab_size=96, max_position_embeddings=96)).eval()


def prompts(n: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 96, (int(torch.randint(1, 20, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


def test_staggered_requests_decode_exactly_as_alone(model):
    """Requests of different lengths arrive mid-decode, fill freed slots and finish at
    different steps; each one's greedy tokens equal the engine's on the prompt alone."""
    stop = {5}
    scheduler = Scheduler(model, stop_ids=stop, max_running=3, max_waiting=16)
    work = list(zip(prompts(8), [4, 30, 11, 25, 7, 19, 30, 2]))
    requests = []
    for i, (prompt, max_new) in enumerate(work):
        requests.append(scheduler.submit(prompt, max_new, Sampling(temperature=0)))
        for _ in range(i % 3 + 1):  # a few steps between arrivals: joins mid-batch
            scheduler.step()
    while scheduler.step():
        pass
    assert scheduler.running == 0 and all(r.done for r in requests)
    assert scheduler.steps < sum(len(r.output) for r in requests)  # rows shared steps
    for request, (prompt, max_new) in zip(requests, work):
        alone = generate(model, [prompt], max_new, Sampling(temperature=0), stop_ids=stop)
        assert request.output == alone.tokens[0]
        assert request.finish_reason == ("stop" if alone.stopped[0] else "length")


def test_seeded_sampling_equals_the_engine_with_the_same_seed(model):
    scheduler = Scheduler(model, max_running=4)
    sampling = Sampling(temperature=0.9, top_p=0.8)
    batch = [scheduler.submit(p, 12, sampling, seed=7) for p in prompts(3, seed=1)]
    while scheduler.step():
        pass
    for request, prompt in zip(batch, prompts(3, seed=1)):
        assert request.output == generate(model, [prompt], 12, sampling, seed=7).tokens[0]


def test_cancel_frees_the_slot_for_a_waiting_request(model):
    scheduler = Scheduler(model, max_running=1, max_waiting=1)
    first = scheduler.submit([1, 2, 3], 50, Sampling(0))
    scheduler.step()
    second = scheduler.submit([4, 5], 3, Sampling(0))
    with pytest.raises(QueueFull):
        scheduler.submit([6], 3)
    assert scheduler.slots[0] is first
    first.cancel()
    scheduler.step()
    assert first.finish_reason == "cancelled" and scheduler.slots[0] is second
    while scheduler.step():
        pass
    assert second.finish_reason == "length" and len(second.output) == 3


def test_background_thread_streams_events_and_rejects_overlong_requests(model):
    scheduler = Scheduler(model, max_running=2, max_len=40).start()
    try:
        with pytest.raises(ValueError, match="exceed"):
            scheduler.submit([1] * 30, 20)
        seen, finished = [], threading.Event()
        request = scheduler.submit([1, 2], 6, Sampling(0), on_event=lambda kind, token: (
            seen.append(token) if kind == "token" else finished.set()))
        assert finished.wait(10) and request.done
        assert seen == request.output and len(seen) == 6
    finally:
        scheduler.shutdown()
