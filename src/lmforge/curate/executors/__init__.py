"""Executors map the per-document work over batches; results come back in input order.

    executor = make_executor("local", workers=0)        # or "ray"
    for result in executor.map(cfg, batches): ...

Order is kept so that dedup (which keeps the first document of a cluster) and output
shards are identical whichever executor ran, and however many workers it had.
"""

from __future__ import annotations


def make_executor(name: str, workers: int = 0):
    if name == "ray":
        from lmforge.curate.executors.ray_executor import RayExecutor

        return RayExecutor(workers)
    from lmforge.curate.executors.local import LocalExecutor

    return LocalExecutor(workers)
