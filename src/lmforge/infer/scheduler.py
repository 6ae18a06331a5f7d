"""Continuous batching: requests join and leave one running decode batch between steps.

    scheduler = Scheduler(model, stop_ids={2}, max_running=16, max_waiting=64)
    scheduler.start()                                  # one background thread owns the model
    request = scheduler.submit([1, 5, 9], max_new_tokens=64, sampling=Sampling(0.0))
    for token in request.tokens():                     # blocks; or pass on_event= to stream
        ...
    request.cancel()                                   # frees its slot before the next step

The KV cache is static: (layers, max_running, H_kv, max_len, D), one row per *slot* (as
llama.cpp's server calls them). A new request is prefilled alone into a free slot, then
decodes with every other running request, one token per step, each row at its own
position; a finished or cancelled request leaves its slot between steps and a waiting one
takes it. Rows never see each other (each attends to its own row of the cache, from slot
0 to its length), so greedy output equals `engine.generate` on the request alone (tested).

A step runs on rows 0..h-1, where h is one past the highest busy slot (free slots are
taken lowest first, so the batch stays dense), and on keys 0..w-1, where w is one past the
longest running sequence: the work per step grows with what is running, not with the cache.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import torch

from lmforge.infer.engine import Sampling, sample_next
from lmforge.model.peft import split_virtual_tokens
from lmforge.model.transformer import ModelConfig


class QueueFull(RuntimeError):
    """The waiting queue is at its limit: the caller should retry later (HTTP 429)."""


@dataclass
class Request:
    prompt: list[int]
    max_new_tokens: int
    sampling: Sampling
    generator: torch.Generator | None
    on_event: Callable[[str, int | None], None] | None = None  # ("token", id) / ("done", None)
    stop_ids: frozenset = frozenset()  # tokens that end this request (kept in its output)
    output: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" (a stop token) | "length" | "cancelled" | "error"
    submitted_s: float = field(default_factory=time.perf_counter)
    first_token_s: float | None = None
    _cancelled: bool = False
    _done: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Retire this request before the scheduler's next step (idempotent)."""
        self._cancelled = True

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()


class SlotCache:
    """The static cache; `write` takes one slot per row in decode and a row slice in prefill.

    The model calls `write(layer, k, v, cache_position)` and attends over what it returns,
    so the returned view is trimmed to the keys the step may see (`width`).
    """

    def __init__(self, cfg: ModelConfig, slots: int, max_len: int, dtype, device):
        shape = (cfg.num_hidden_layers, slots, cfg.num_key_value_heads, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.rows = slice(0, slots)  # rows this step runs on
        self.width = max_len  # keys this step attends over

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, cache_position: torch.Tensor):
        """k/v (B, H, T, D). Prefill: cache_position (T,) slots of one row. Decode (T = 1):
        cache_position (B,) holds each row's own slot."""
        keys, values = self.k[layer, self.rows], self.v[layer, self.rows]
        if k.shape[2] == 1 and cache_position.numel() == k.shape[0] > 1:
            rows = torch.arange(k.shape[0], device=k.device)
            keys[rows, :, cache_position] = k[:, :, 0]
            values[rows, :, cache_position] = v[:, :, 0]
        else:
            keys.index_copy_(2, cache_position, k)
            values.index_copy_(2, cache_position, v)
        return keys[:, :, :self.width], values[:, :, :self.width]


class Scheduler:
    def __init__(self, model, stop_ids: set[int] | frozenset = frozenset(), max_running: int = 16,
                 max_waiting: int = 64, max_len: int | None = None):
        if split_virtual_tokens(model)[1] is not None:
            raise ValueError("a prompt-tuned model cannot be served yet (its virtual tokens would "
                             "need a prefix in every slot); use `lmforge chat` or `generate`")
        self.model = model.eval()
        param = next(model.parameters())
        self.device, self.stop_ids = param.device, frozenset(stop_ids)
        self.max_len = min(max_len or model.config.max_position_embeddings,
                           model.config.max_position_embeddings)
        self.cache = SlotCache(model.config, max_running, self.max_len, param.dtype, self.device)
        self.slots: list[Request | None] = [None] * max_running
        self.lengths = [0] * max_running  # tokens in each slot's cache row
        self.waiting: queue.Queue[Request] = queue.Queue(maxsize=max_waiting)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.steps = 0

    # --- the caller's side (any thread) ----------------------------------------------
    def submit(self, prompt: list[int], max_new_tokens: int, sampling: Sampling | None = None,
               seed: int | None = None, on_event=None, stop_ids: frozenset | None = None) -> Request:
        """Queue a request; stop_ids default to the scheduler's. Raises QueueFull, or
        ValueError when the prompt plus max_new_tokens exceed the cache."""
        if not prompt:
            raise ValueError("a prompt needs at least one token (e.g. BOS)")
        if len(prompt) + max_new_tokens > self.max_len:
            raise ValueError(f"{len(prompt)} prompt + {max_new_tokens} new tokens exceed the "
                             f"context of {self.max_len}")
        generator = None if seed is None else torch.Generator(device=self.device).manual_seed(seed)
        request = Request(list(prompt), max_new_tokens, sampling or Sampling(), generator, on_event,
                          self.stop_ids if stop_ids is None else frozenset(stop_ids))
        try:
            self.waiting.put_nowait(request)
        except queue.Full:
            raise QueueFull(f"{self.waiting.maxsize} requests already waiting") from None
        self._wake.set()
        return request

    @property
    def running(self) -> int:
        return sum(r is not None for r in self.slots)

    def start(self) -> Scheduler:
        self._thread = threading.Thread(target=self._loop, name="lmforge-scheduler", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    # --- the loop (the only code that touches the model) ------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.step()
            except Exception:  # noqa: BLE001 -- a failed step must not strand every request
                traceback.print_exc()
                for slot, request in enumerate(self.slots):
                    if request is not None:
                        self._retire(slot, "error")
                continue
            if not busy:
                self._wake.wait(0.05)
                self._wake.clear()
        for request in [r for r in self.slots if r is not None] + _drain(self.waiting):
            self._finish(request, "cancelled")

    @torch.no_grad()
    def step(self) -> bool:
        """Retire cancelled requests, admit waiting ones, decode one token for every running
        request. False when there was nothing to do."""
        for slot, request in enumerate(self.slots):
            if request is not None and request._cancelled:
                self._retire(slot, "cancelled")
        self._admit()
        busy = [s for s, r in enumerate(self.slots) if r is not None]
        if not busy:
            return False
        self._decode(busy)
        self.steps += 1
        return True

    def _admit(self) -> None:
        while None in self.slots:
            try:
                request = self.waiting.get_nowait()
            except queue.Empty:
                return
            if request._cancelled:
                self._finish(request, "cancelled")
                continue
            slot = self.slots.index(None)
            self.slots[slot] = request
            self._prefill(slot, request)

    def _prefill(self, slot: int, request: Request) -> None:
        P = len(request.prompt)
        ids = torch.tensor([request.prompt], device=self.device)
        self.cache.rows, self.cache.width = slice(slot, slot + 1), P
        positions = torch.arange(P, device=self.device)
        causal = positions[None, :] <= positions[:, None]
        logits = self.model(ids, positions=positions[None], cache=self.cache,
                            attn_mask=causal[None, None], cache_position=positions)[:, -1]
        self.lengths[slot] = P
        self._emit(slot, logits)

    def _decode(self, busy: list[int]) -> None:
        """Sample each running row's next token from its last logits, then one forward."""
        rows = max(busy) + 1
        tokens = torch.zeros((rows, 1), dtype=torch.long, device=self.device)
        for slot in busy:
            tokens[slot, 0] = self.slots[slot].output[-1]
        lengths = torch.tensor(self.lengths[:rows], device=self.device)
        self.cache.rows, self.cache.width = slice(0, rows), max(self.lengths[s] for s in busy) + 1
        keys = torch.arange(self.cache.width, device=self.device)
        mask = keys[None, :] <= lengths[:, None]  # free rows see slot 0..: never an empty row
        logits = self.model(tokens, positions=lengths[:, None], cache=self.cache,
                            attn_mask=mask[:, None, None], cache_position=lengths)[:, -1]
        for slot in busy:
            self.lengths[slot] += 1
            self._emit(slot, logits[slot:slot + 1])

    def _emit(self, slot: int, logits: torch.Tensor) -> None:
        """Sample the slot's next token; retire the request when it is done."""
        request = self.slots[slot]
        token = int(sample_next(logits, request.sampling, request.generator)[0])
        request.output.append(token)
        if request.first_token_s is None:
            request.first_token_s = time.perf_counter()
        if request.on_event is not None:
            request.on_event("token", token)
        if token in request.stop_ids:
            self._retire(slot, "stop")
        elif len(request.output) >= request.max_new_tokens or self.lengths[slot] >= self.max_len:
            self._retire(slot, "length")

    def _retire(self, slot: int, reason: str) -> None:
        request, self.slots[slot], self.lengths[slot] = self.slots[slot], None, 0
        self._finish(request, reason)

    def _finish(self, request: Request, reason: str) -> None:
        request.finish_reason = reason
        request._done.set()
        if request.on_event is not None:
            request.on_event("done", None)


def _drain(q: queue.Queue) -> list:
    items = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items
