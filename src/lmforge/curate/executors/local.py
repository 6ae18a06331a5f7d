"""Local processes: one CurationWorker per core, at most 2 batches in flight per worker.

The bound matters: a plain `Pool.imap` reads the whole input ahead into memory.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from typing import Iterable, Iterator

from lmforge.curate.steps import BatchResult, CurationWorker

_worker: CurationWorker | None = None  # one per worker process, built once by _init


class LocalExecutor:
    def __init__(self, workers: int = 0):
        self.workers = workers or os.cpu_count() or 1

    def map(self, cfg, batches: Iterable[list]) -> Iterator[BatchResult]:
        if self.workers == 1:
            worker = CurationWorker(cfg)
            yield from map(worker.process, batches)
            return
        # fork: workers inherit imported modules instead of re-importing (~1 s each)
        ctx = mp.get_context("fork")
        with ctx.Pool(self.workers, initializer=_init, initargs=(cfg,)) as pool:
            pending: deque = deque()
            for batch in batches:
                pending.append(pool.apply_async(_process, (batch,)))
                if len(pending) >= 2 * self.workers:
                    yield pending.popleft().get()
            while pending:
                yield pending.popleft().get()


    def run(self, fn, tasks: list[tuple]) -> list:
        """fn(*args) for every args tuple, in worker processes; results in task order."""
        if self.workers == 1 or len(tasks) <= 1:
            return [fn(*args) for args in tasks]
        with mp.get_context("fork").Pool(min(self.workers, len(tasks))) as pool:
            return pool.starmap(fn, tasks)


def _init(cfg) -> None:
    global _worker
    _worker = CurationWorker(cfg)


def _process(batch: list) -> BatchResult:
    return _worker.process(batch)
