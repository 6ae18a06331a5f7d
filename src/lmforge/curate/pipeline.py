"""The curation driver: read -> (workers: extract, filter, scrub, sign) -> dedup -> shards.

    stats = run_pipeline(cfg)     # cfg: lmforge.stages.curate.CurateConfig

Reading and dedup run here, in one process, so results are deterministic; the expensive
per-document work runs in the executor. Kept documents are staged on disk with their
index, and only written to the output once dedup has seen every document: a document's
cluster may be decided by one that comes later, and memory holds only signatures.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

from lmforge.curate.dedup import DedupIndex
from lmforge.curate.executors import make_executor
from lmforge.curate.readers import ReadLog, expand_inputs, read_inputs
from lmforge.curate.report import write_curation_report
from lmforge.curate.writers import ShardWriter
from lmforge.errors import InputError


def run_pipeline(cfg) -> dict:
    if not cfg.input:
        raise ValueError("curate needs --input PATH [PATH ...]")
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    inputs = expand_inputs(cfg.input)
    started = time.perf_counter()
    log = ReadLog()
    d = cfg.dedup
    index = DedupIndex(d.num_bands, exact=d.exact, near=d.near, min_jaccard=d.min_jaccard,
                       min_containment=d.min_containment)
    step_stats: dict[str, Counter] = {}
    staging = out / "_staging.jsonl"
    n_staged = 0
    with staging.open("w", encoding="utf-8") as f:
        docs = read_inputs(inputs, log, cfg.on_error, cfg.text_field)
        executor = make_executor(cfg.executor, cfg.workers)
        for result in executor.map(cfg, batched(docs, cfg.batch_docs)):
            for name, counts in result.stats.items():
                step_stats.setdefault(name, Counter()).update(counts)
            for record, key, signature, num_shingles in zip(result.records, result.keys,
                                                            result.signatures, result.num_shingles):
                index.add(n_staged, key, signature, num_shingles)
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                n_staged += 1
    if not any(n for kind, n in log.counts.items() if not kind.startswith("errors.")):
        staging.unlink()
        raise InputError("no documents in the inputs (empty files?)", ", ".join(map(str, inputs)))
    step_stats["dedup"], shards = _write_kept(staging, index, out, cfg)
    staging.unlink()
    stats = _summary(cfg, inputs, log, step_stats, index, shards, time.perf_counter() - started)
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    if cfg.report:
        write_curation_report(out, cfg, stats)
    return stats


def batched(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def _write_kept(staging: Path, index: DedupIndex, out: Path, cfg) -> tuple[Counter, list[str]]:
    counts: Counter = Counter()
    with ShardWriter(out, cfg.format, cfg.docs_per_shard) as writer, staging.open(encoding="utf-8") as f:
        for doc_no, line in enumerate(f):
            counts["in"] += 1
            reason = index.drop_reason(doc_no)
            if reason:
                counts[f"dropped.{reason}"] += 1
            else:
                counts["kept"] += 1
                writer.write(json.loads(line))
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
