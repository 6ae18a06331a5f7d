"""Memory of dedup as the corpus grows: one in-process DedupIndex vs the distributed stage
(curate/distributed_dedup.py, what `--executor ray` runs). Prints JSON.

    python bench/dedup_scale.py                       # 50k, 100k, 200k, 400k documents
    python bench/dedup_scale.py --docs 20000 40000    # a quick look

The corpus is generated as signatures, the input of the dedup stage (hashing text would
only add time): originals with random MinHash signatures, and a fifth of the documents
near-copies of an earlier one that agree on 85% of its hashes (Jaccard ~0.85, caught by
37 x 3 LSH and the containment check), written as committed work units of 25,000 documents
in units.py's format. Each side runs in fresh processes (spawn), and every process reports
its peak RSS: the in-process index holds every signature and bucket entry in one process;
the distributed stage's driver holds the union-find, and each scatter / bucket task a
unit or one (band, partition) slice, however big the corpus (partitions grow with it,
`bucket_docs` documents each). Both must drop the same documents.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

UNIT_DOCS = 25_000


class Units:
    """Committed units on disk, as distributed_dedup reads a units.WorkDir."""

    def __init__(self, root: Path, num_units: int):
        self.root, self.units = root, [[] for _ in range(num_units)]

    def _load(self, u):
        return np.load(self.root / f"unit-{u:05d}.npz")

    def count(self, u):
        return int(self._load(u)["count"])

    def signatures(self, u):
        a = self._load(u)
        for key, sig, n in zip(a["keys"], a["signatures"], a["num_shingles"]):
            yield key.tobytes(), sig, int(n)


def make_corpus(root: Path, docs: int, seed: int = 0) -> int:
    """Units of generated signatures; returns the number of planted near-copies."""
    rng = np.random.default_rng(seed)
    sig = rng.integers(0, 2**32, size=(docs, 111), dtype=np.uint32)
    shingles = rng.integers(100, 400, size=docs)
    copies = np.flatnonzero(rng.random(docs) < 0.2)
    copies = copies[copies > 0]
    source = (rng.random(len(copies)) * copies).astype(np.int64)  # an earlier document
    agree = rng.random((len(copies), 111)) < 0.85
    sig[copies] = np.where(agree, sig[source], sig[copies])
    shingles[copies] = shingles[source]
    keys = rng.integers(0, 256, size=(docs, 16), dtype=np.uint8)
    for u, start in enumerate(range(0, docs, UNIT_DOCS)):
        end = min(start + UNIT_DOCS, docs)
        np.savez(root / f"unit-{u:05d}.npz", count=np.asarray(end - start), keys=keys[start:end],
                 signatures=sig[start:end], num_shingles=shingles[start:end])
    return len(copies)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measured(fn, args):
    return fn(*args), peak_mb()


class FreshProcesses:
    """executor.run with every task in a new spawned process; keeps each task's peak RSS."""

    def __init__(self, workers: int):
        self.workers, self.task_peaks_mb = workers, []

    def run(self, fn, tasks):
        with mp.get_context("spawn").Pool(self.workers, maxtasksperchild=1) as pool:
            out = pool.starmap(_measured, [(fn, args) for args in tasks])
        self.task_peaks_mb += [p for _, p in out]
        return [r for r, _ in out]


def local_side(root: str, num_units: int):
    from lmforge.curate.dedup import DedupIndex

    units, index, doc_no, started = Units(Path(root), num_units), DedupIndex(37), 0, time.perf_counter()
    for u in range(num_units):
        for key, sig, n in units.signatures(u):
            index.add(doc_no, key, sig, n)
            doc_no += 1
    dropped = [n for n in range(doc_no) if index.drop_reason(n)]
    return {"seconds": round(time.perf_counter() - started, 1), "peak_rss_mb": round(peak_mb()),
            "dropped": len(dropped), "dropped_hash": hash(tuple(dropped))}


def distributed_side(root: str, num_units: int, workers: int, bucket_docs: int):
    from lmforge.curate.distributed_dedup import distributed_dedup
    from lmforge.stages.curate import DedupConfig

    units, executor, started = Units(Path(root), num_units), FreshProcesses(workers), time.perf_counter()
    index = distributed_dedup(units, DedupConfig(), executor, bucket_docs=bucket_docs)
    total = sum(units.count(u) for u in range(num_units))
    dropped = [n for n in range(total) if index.drop_reason(n)]
    return {"seconds": round(time.perf_counter() - started, 1), "driver_peak_rss_mb": round(peak_mb()),
            "max_task_peak_rss_mb": round(max(executor.task_peaks_mb)), "tasks": len(executor.task_peaks_mb),
            "dropped": len(dropped), "dropped_hash": hash(tuple(dropped))}


def in_fresh_process(fn, *args):
    # not a Pool: its daemonic workers may not start the tasks' own processes
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, nargs="+", default=[50_000, 100_000, 200_000, 400_000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--bucket_docs", type=int, default=100_000)
    args = ap.parse_args()
    baseline = in_fresh_process(_measured, peak_mb, ())[1]  # an interpreter with numpy, nothing else
    rows = []
    for docs in args.docs:
        root = Path(tempfile.mkdtemp(prefix="dedup_scale_"))
        try:
            planted = make_corpus(root, docs)
            num_units = -(-docs // UNIT_DOCS)
            local = in_fresh_process(local_side, str(root), num_units)
            dist = in_fresh_process(distributed_side, str(root), num_units, args.workers, args.bucket_docs)
        finally:
            shutil.rmtree(root)
        same = local.pop("dropped_hash") == dist.pop("dropped_hash")
        rows.append({"documents": docs, "planted_copies": planted, "in_process": local, "distributed": dist,
                     "same_documents_dropped": same})
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps({"bench": "dedup_scale", "unit_docs": UNIT_DOCS, "bucket_docs": args.bucket_docs,
                      "workers": args.workers, "empty_process_rss_mb": round(baseline), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
