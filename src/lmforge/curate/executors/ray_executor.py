"""Ray tasks: the same CurationWorker, scheduled by Ray across a cluster (`--executor ray`).

    ray start --head            # or RAY_ADDRESS=... for an existing cluster
    lmforge curate --input s3-mounted/crawl --executor ray

Connects to a running cluster when RAY_ADDRESS is set, otherwise starts a local one.
Each Ray worker process builds its CurationWorker once (cached by config) and reuses it.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Iterable, Iterator

from lmforge.curate.steps import BatchResult, CurationWorker

_workers: dict[str, CurationWorker] = {}  # per Ray worker process: config repr -> worker


class RayExecutor:
    def __init__(self, workers: int = 0):
        self.workers = workers

    def map(self, cfg, batches: Iterable[list]) -> Iterator[BatchResult]:
        ray = self._ray()
        task = ray.remote(_process)
        cfg_ref = ray.put(cfg)
        yield from self._bounded(ray, (task.remote(cfg_ref, batch) for batch in batches))

    def run(self, fn, tasks: list[tuple]) -> list:
        """fn(*args) for every args tuple, as Ray tasks; results in task order."""
        ray = self._ray()
        remote = ray.remote(fn)
        return list(self._bounded(ray, (remote.remote(*args) for args in tasks)))

    def _ray(self):
        try:
            import ray
        except ImportError as e:
            raise RuntimeError("--executor ray needs Ray: pip install 'lmforge[ray]'") from e
        if not ray.is_initialized():
            ray.init(address=os.environ.get("RAY_ADDRESS"), num_cpus=self.workers or None,
                     include_dashboard=False,
                     log_to_driver=False, ignore_reinit_error=True)
        return ray

    @staticmethod
    def _bounded(ray, refs) -> Iterator:
        """Results in submission order, with ~2 tasks per CPU in flight (not the whole input)."""
        in_flight = 2 * int(ray.available_resources().get("CPU", 1) or 1)
        pending: deque = deque()
        for ref in refs:
            pending.append(ref)
            if len(pending) >= in_flight:
                yield ray.get(pending.popleft())
        while pending:
            yield ray.get(pending.popleft())


def _process(cfg, batch: list) -> BatchResult:
    key = repr(cfg)
    if key not in _workers:
        _workers[key] = CurationWorker(cfg)
    return _workers[key].process(batch)
