"""The curation driver: read -> (workers: extract, filter, scrub, sign) -> dedup -> shards.

    stats = run_pipeline(cfg)     # cfg: lmforge.stages.curate.CurateConfig

Reading runs here, in one process, so results are deterministic; the expensive per-document
work runs in the executor. Dedup runs here too (local executor), or as Ray tasks that never
hold every signature in one process (distributed_dedup.py; the same kept documents). Inputs are grouped into work units (units.py), each
committed to OUTPUT/_work with a completion marker, so a killed run started again with the
same output and config skips the finished units. Documents are written to the output only
once dedup has seen every unit: a document's cluster may be decided by one that comes
later, and memory holds only signatures.
"""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

from lmforge.curate.dedup import DedupIndex
from lmforge.curate.distributed_dedup import distributed_dedup
from lmforge.curate.executors import make_executor
from lmforge.curate.readers import ReadLog, expand_inputs, read_inputs
from lmforge.curate.report import write_curation_report
from lmforge.curate.units import WorkDir, plan_units
from lmforge.curate.writers import ShardWriter
from lmforge.errors import InputError


def run_pipeline(cfg) -> dict:
    if not cfg.input:
        raise ValueError("curate needs --input PATH [PATH ...]")
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    inputs = expand_inputs(cfg.input)
    started = time.perf_counter()
    units = plan_units(inputs, cfg.unit_mb)
    work = WorkDir(out / "_work", cfg, units)
    todo = [u for u in range(len(units)) if not work.done(u)]
    if len(todo) < len(units):
        print(f"curate: resuming, {len(units) - len(todo)} of {len(units)} input units already done")
    _process_units(cfg, work, todo)

    log, step_stats = ReadLog(), {}
    for u in range(len(units)):
        counts = work.counts(u)
        log.counts.update(counts["read"])
        log.errors += counts["read_errors"]
        for name, c in counts["steps"].items():
            step_stats.setdefault(name, Counter()).update(c)
    if not any(n for kind, n in log.counts.items() if not kind.startswith("errors.")):
        work.remove()
        raise InputError("no documents in the inputs (empty files?)", ", ".join(map(str, inputs)))
    if cfg.executor == "ray":  # signatures -> buckets -> clusters as tasks: no process holds them all
        index = distributed_dedup(work, cfg.dedup, make_executor(cfg.executor, cfg.workers))
    else:
        index = _local_dedup(work, len(units), cfg.dedup)
    step_stats["dedup"], shards = _write_kept(work, len(units), index, out, cfg)
    stats = _summary(cfg, inputs, log, step_stats, index, shards, time.perf_counter() - started)
    stats["resumed_units"] = len(units) - len(todo)
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    if cfg.report:
        write_curation_report(out, cfg, stats)
    work.remove()  # only now: a crash above re-runs dedup and the writing from the units
    return stats


def _local_dedup(work: WorkDir, num_units: int, d) -> DedupIndex:
    """Every unit's signatures through one in-process index, in input order."""
    index = DedupIndex(d.num_bands, exact=d.exact, near=d.near, min_jaccard=d.min_jaccard,
                       min_containment=d.min_containment)
    doc_no = 0
    for u in range(num_units):
        for key, signature, num_shingles in work.signatures(u):
            index.add(doc_no, key, signature, num_shingles)
            doc_no += 1
    return index


def _process_units(cfg, work: WorkDir, todo: list[int]) -> None:
    """Every unit in `todo` through the executor, each committed as its last batch returns.
    Results come back in the order the batches were read, so a queue of (unit, last?) tags
    pushed as each batch is read says where each result belongs."""
    tags: deque = deque()
    stage = None
    for result in make_executor(cfg.executor, cfg.workers).map(cfg, _unit_batches(cfg, work, todo, tags)):
        u, log, last = tags.popleft()
        stage = stage or work.stage(u)
        stage.add(result)
        if last:
            stage.commit(log)
            stage = None


def _unit_batches(cfg, work: WorkDir, todo: list[int], tags: deque) -> Iterator[list]:
    """Each unit's batches, the last one tagged; an empty unit sends one empty batch, so that
    it is committed too. One batch of lookahead: a unit's reader is exhausted (its read log
    complete) before its last batch leaves."""
    for u in todo:
        log = ReadLog()
        batches = batched(read_inputs(work.units[u], log, cfg.on_error, cfg.text_field), cfg.batch_docs)
        batch = next(batches, [])
        while True:
            following = next(batches, None)
            tags.append((u, log, following is None))
            yield batch
            if following is None:
                break
            batch = following


def batched(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def _write_kept(work: WorkDir, num_units: int, index: DedupIndex, out: Path, cfg) -> tuple[Counter, list[str]]:
    counts: Counter = Counter()
    doc_no = 0
    with ShardWriter(out, cfg.format, cfg.docs_per_shard) as writer:
        for u in range(num_units):
            for line in work.records(u):
                counts["in"] += 1
                reason = index.drop_reason(doc_no)
                if reason:
                    counts[f"dropped.{reason}"] += 1
                else:
                    counts["kept"] += 1
                    writer.write(json.loads(line))
                doc_no += 1
    return counts, writer.paths


def _summary(cfg, inputs, log: ReadLog, step_stats, index: DedupIndex, shards, seconds) -> dict:
    read_docs = sum(v for k, v in log.counts.items()
                    if k in ("warc.response", "html.files", "jsonl.records", "parquet.records",
                             "text.files"))
    steps = {name: _step_summary(c) for name, c in step_stats.items()}
    kept = steps["dedup"]["kept"]
    clusters = index.clusters()
    return {
        "inputs": [str(p) for p in inputs],
        "documents_read": read_docs,
        "documents_kept": kept,
        "seconds": round(seconds, 2),
        "documents_per_second": round(read_docs / seconds, 2) if seconds else None,
        "read": dict(sorted(log.counts.items())),
        "read_errors": log.errors,
        "steps": steps,
        "dedup_clusters": {"count": len(clusters),
                           "size_histogram": {str(k): v for k, v in index.cluster_size_histogram().items()},
                           "largest": max((len(m) for m in clusters.values()), default=1)},
        "shards": shards,
        "executor": cfg.executor,
    }


def _step_summary(counts: Counter) -> dict:
    dropped = {k.removeprefix("dropped."): v for k, v in sorted(counts.items())
               if k.startswith("dropped.")}
    other = {k: v for k, v in sorted(counts.items())
             if k not in ("in", "kept") and not k.startswith("dropped.")}
    return {"in": counts["in"], "kept": counts["kept"], "dropped": dropped, **other}
