"""Near-duplicate recall and precision on planted copies of real documents, three methods side by side.

    .venv/bin/python bench/near_dup_eval.py                    # fetch once, build, score (~2 min)
    .venv/bin/python bench/near_dup_eval.py --seed 1 --variants  # + recipe variants, tuning part only

Documents: Moby Dick chapters and State of the Union speeches (data/corpus), the English Apache
httpd manual and Debian handbook pages (`apt-get download apache2-doc debian-handbook`, unpacked
under runs/near_dup/, text by lmforge's extractor), licence texts from /usr/share/common-licenses.
Long texts are cut into 150-1200-word documents. Source texts (a speech, a page, a chapter) are
split at random into a tuning part and a held-out part; each part is built from its own texts only,
and the held-out part was not looked at while the recipe was chosen.

Planted duplicates, each a copy of an original in the same part (ground truth: original + copies
form a group; >= 85% of a copy's text, before edits, is in the original or the other way round):
  boilerplate   the text inside another page's real navigation/footer lines (10-50% of the copy)
  edit          1-3% of words substituted, deleted, inserted or misspelt
  shuffle       sentences (up to a full stop, lines joined) in random order, regrouped into paragraphs
  reflow        line breaks removed, or the text re-wrapped at 60-100 characters
  excerpt       a contiguous 50-90% of the original (half the time behind a short unrelated intro)
  superset      the whole original plus 30-100% as much unrelated text (a page embedding another)
  and combinations (edit+shuffle, boilerplate+edit, edit+reflow, excerpt+edit, superset+shuffle).
Hard negatives, each a group of its own: 2-4 distinct texts sharing one real licence text or one
real page template, the shared part 20-50% of each document. Originals are real and distinct: any
pair sharing >= 30% of a document's shingles is thinned before planting.

Scores, for the order the documents are shuffled into: a dropped document is correct when the
document kept in its place (`kept_copy`) is in its group. precision = correct drops / drops;
recall = correct drops / (group size - 1, summed); recall by kind = copies that end up with the same
kept document as their original. docs/s: signatures + index + decisions, one process.

Methods: lmforge_before (the committed dedup.py at HEAD: 14 x 8 LSH, no check), plain_minhash
(datasketch's MinHash + MinHashLSH scheme re-implemented here: sha1 32-bit shingle hashes,
(a*x + b) mod 2^61-1 permutations, 14 x 8 bands, query then insert), lmforge (the working tree).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import random
import re
import struct
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common import ROOT, Meta, summary

sys.path.insert(0, str(ROOT / "src"))
from lmforge.curate import dedup  # noqa: E402

CACHE = ROOT / "runs" / "near_dup"
PLANTED = ["boilerplate", "edit", "shuffle", "reflow", "excerpt", "superset",
           "edit+shuffle", "boilerplate+edit", "edit+reflow", "excerpt+edit", "superset+shuffle"]
NEGATIVES = ["shared_licence", "shared_template"]
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_ENDS_SENTENCE = re.compile(r"[.!?][\"'”’)\]]*$")


@dataclass
class Source:
    unit: str  # the text it was cut from: the tuning/held-out split is by unit
    paragraphs: list[str]


@dataclass
class EvalDoc:
    text: str
    group: int
    kind: str  # "original", a planted kind, or a hard-negative kind
    original: int | None = None  # for copies: index of the original in the final order


@dataclass
class Part:
    docs: list[EvalDoc] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# sources

def fetch_debian(root: Path) -> Path:
    """apache2-doc and debian-handbook unpacked under root (once; needs the Debian archive)."""
    unpacked = root / "root"
    if not (unpacked / "usr/share/doc/apache2-doc").exists():
        debs = root / "deb"
        debs.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "apache2-doc", "debian-handbook"], cwd=debs, check=True)
        for deb in debs.glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    return unpacked


def load_sources(root: Path) -> tuple[list[Source], list[list[str]], list[str]]:
    """(documents, page templates as lists of lines, licence texts); extraction cached."""
    cache = root / "sources.json.gz"
    if cache.exists():
        data = json.loads(gzip.decompress(cache.read_bytes()))
    else:
        pages = _html_docs(fetch_debian(root))
        data = {"docs": _corpus_docs() + pages, "licences": _licences(),
                "templates": [page.pop("template") for page in pages]}
        cache.write_bytes(gzip.compress(json.dumps(data).encode()))
    docs = [Source(d["unit"], d["paragraphs"]) for d in data["docs"]]
    return docs, data["templates"], data["licences"]


def _corpus_docs() -> list[dict]:
    docs = []
    for name in ("en_moby_dick", "en_sotu"):
        with gzip.open(ROOT / "data" / "corpus" / f"{name}.jsonl.gz", "rt") as f:
            for line in f:
                rec = json.loads(line)
                paras = [p.strip() for p in rec["text"].split("\n") if p.strip()]
                if len(paras) < 3:  # speeches are one line: paragraphs of four sentences
                    sents = _SENTENCE.split(rec["text"])
                    paras = [" ".join(sents[i:i + 4]) for i in range(0, len(sents), 4)]
                docs.append({"unit": f"{name}/{rec['id']}", "paragraphs": paras})
    return docs


def _html_docs(unpacked: Path) -> list[dict]:
    from lmforge.curate.document import Document
    from lmforge.curate.extract import Extractor

    extract, docs = Extractor(), []
    pages = sorted((unpacked / "usr/share/doc/apache2-doc/manual/en").rglob("*.html"))
    pages += sorted((unpacked / "usr/share/doc/debian-handbook/html/en-US").glob("*.html"))
    for path in pages:
        if path.is_symlink():
            continue
        raw = path.read_bytes()
        doc = extract(Document(id=str(path), html=raw))
        if doc is None:
            continue
        paras = [p.strip() for p in doc.text.split("\n") if p.strip()]
        docs.append({"unit": str(path.relative_to(unpacked)), "paragraphs": paras,
                     "template": _template(raw, dedup.normalize_text(doc.text))})
    return docs


def _template(raw: bytes, main: str) -> list[str]:
    """The page's lines above and below its main text (navigation, header, footer)."""
    import lxml.html

    tree = lxml.html.fromstring(raw)
    for el in tree.xpath("//script|//style"):
        el.drop_tree()
    lines = [ln.strip() for ln in tree.text_content().split("\n") if len(ln.split()) >= 2]
    in_main = [i for i, ln in enumerate(lines) if dedup.normalize_text(ln) in main]
    if not in_main:
        return []
    return lines[:in_main[0]] + lines[in_main[-1] + 1:]


def _licences() -> list[str]:
    out = []
    for path in sorted(Path("/usr/share/common-licenses").iterdir()):
        if path.is_file() and not path.is_symlink():
            out.append(path.read_text(errors="replace"))
    return out


def cut(source: Source, rng: random.Random) -> list[Source]:
    """Documents of 150-1200 words at paragraph ends; shorter texts are kept whole."""
    out, current, words, target = [], [], 0, rng.randint(400, 1200)
    for p in source.paragraphs:
        current.append(p)
        words += len(p.split())
        if words >= target:
            out.append(Source(source.unit, current))
            current, words, target = [], 0, rng.randint(400, 1200)
    if current and (words >= 150 or not out):
        out.append(Source(source.unit, current))
    return [s for s in out if sum(len(p.split()) for p in s.paragraphs) >= 150]


# ---------------------------------------------------------------------------------------------
# planting

class Filler:
    """Unrelated text, each sentence used once, so fillers never plant a duplicate by accident."""

    def __init__(self, sources: list[Source]):
        sentences = [s.split() for src in sources for p in src.paragraphs for s in _SENTENCE.split(p)]
        self.sentences = [" ".join(w[i:i + 30]) for w in sentences for i in range(0, len(w), 30)]
        self.pos = 0

    def take(self, num_words: int) -> list[str]:
        """Paragraphs of about num_words words."""
        out, n = [], 0
        while n < num_words and self.pos < len(self.sentences):
            out.append(self.sentences[self.pos])
            n += len(self.sentences[self.pos].split())
            self.pos += 1
        return [" ".join(out[i:i + 4]) for i in range(0, len(out), 4)]


def sentences(paragraphs: list[str]) -> list[str]:
    return [s for p in paragraphs for s in _SENTENCE.split(p) if s.strip()]


def regroup(sents: list[str], rng: random.Random) -> list[str]:
    """Paragraphs of 1-5 sentences; a line that does not end a sentence ends its paragraph
    (joining a table row or heading to the next line would make text that is in neither copy)."""
    out, current = [], []
    for s in sents:
        current.append(s)
        if len(current) >= rng.randint(1, 5) or not _ENDS_SENTENCE.search(s):
            out.append(" ".join(current))
            current = []
    return out + ([" ".join(current)] if current else [])


def num_words(paragraphs: list[str]) -> int:
    return sum(len(p.split()) for p in paragraphs)


def boilerplate(paras, rng, ctx, fraction=None):
    """Another site's real template lines around the text, 10-50% of the copy."""
    lines = rng.choice(ctx["templates"])
    fraction = fraction or rng.uniform(0.1, 0.5)
    want = int(num_words(paras) * fraction / (1 - fraction))
    chosen, n = [], 0
    for line in lines * (1 + want // max(1, num_words(lines))):
        if n >= want:
            break
        chosen.append(line)
        n += len(line.split())
    head = rng.randint(0, len(chosen))
    return chosen[:head] + paras + chosen[head:]


def edit(paras, rng, ctx):
    rate = rng.uniform(0.01, 0.03)
    vocab = " ".join(paras).split()
    out = []
    for p in paras:
        words = []
        for w in p.split():
            r = rng.random()
            if r >= rate:
                words.append(w)
            elif r < rate / 4:  # substitute
                words.append(rng.choice(vocab))
            elif r < rate / 2:  # insert
                words += [w, rng.choice(vocab)]
            elif r < 3 * rate / 4 and len(w) > 3:  # misspell: swap two letters
                i = rng.randrange(len(w) - 1)
                words.append(w[:i] + w[i + 1] + w[i] + w[i + 2:])
            # else: delete
        out.append(" ".join(words))
    return out


def shuffle(paras, rng, ctx):
    sents = _SENTENCE.split(" ".join(paras))  # a line without a full stop goes with the next
    rng.shuffle(sents)
    return regroup(sents, rng)


def reflow(paras, rng, ctx):
    """Line breaks as another extractor or site puts them: none, or wrapped at 60-100 characters."""
    text = " ".join(" ".join(paras).split())
    if rng.random() < 0.5:
        return [text]
    width = rng.randint(60, 100)
    return textwrap.wrap(text, width)


def excerpt(paras, rng, ctx):
    """A contiguous 50-90% of the sentences; half the time behind an intro of <= 10% of it."""
    sents = sentences(paras)
    lengths = np.cumsum([len(s.split()) for s in sents])
    want = rng.uniform(0.5, 0.9) * lengths[-1]
    start = rng.randint(0, int(np.searchsorted(lengths, lengths[-1] - want)))
    taken, n = [], 0
    for s in sents[start:]:
        if n >= want:
            break
        taken.append(s)
        n += len(s.split())
    body = regroup(taken, rng)
    intro = ctx["filler"].take(int(n * rng.uniform(0.03, 0.1))) if rng.random() < 0.5 else []
    return intro + body


def superset(paras, rng, ctx):
    """The whole text with 30-100% as much unrelated text before or after it."""
    extra = ctx["filler"].take(int(num_words(paras) * rng.uniform(0.3, 1.0)))
    return extra + paras if rng.random() < 0.5 else paras + extra


KINDS = {"boilerplate": boilerplate, "edit": edit, "shuffle": shuffle, "reflow": reflow, "excerpt": excerpt,
         "superset": superset}


def make_copy(paras, kind, rng, ctx) -> str:
    for step in kind.split("+"):
        if step == "boilerplate" and "+" in kind:  # with edits: template <= 15% of the copy
            paras = boilerplate(paras, rng, ctx, rng.uniform(0.05, 0.15))
        else:
            paras = KINDS[step](paras, rng, ctx)
    return "\n".join(paras)


def hard_negatives(kind, rng, ctx) -> list[str]:
    """2-4 distinct texts sharing one licence or template, shared part 20-50% of each."""
    if kind == "shared_licence":
        lic = [p for p in re.split(r"\n\s*\n", rng.choice(ctx["licences"])) if p.strip()]
        start = rng.randrange(max(1, len(lic) - 3))
        shared = []
        for p in lic[start:]:
            shared.append(" ".join(p.split()))
            if num_words(shared) >= rng.randint(80, 400):
                break
    else:
        shared = rng.choice(ctx["templates"])[:60]
    docs = []
    for _ in range(rng.randint(2, 4)):
        s = rng.uniform(0.2, 0.5)
        own = ctx["filler"].take(int(num_words(shared) * (1 - s) / s))
        if kind == "shared_licence":
            docs.append("\n".join(own + shared if rng.random() < 0.7 else shared + own))
        else:
            head = rng.randint(0, len(shared))
            docs.append("\n".join(shared[:head] + own + shared[head:]))
    return docs


def thin(sources: list[Source], max_containment: float = 0.3) -> list[Source]:
    """Drop sources sharing >= max_containment of their shingles with an earlier kept one (exact)."""
    hasher, postings, kept = dedup.MinHasher(1, 1), {}, []
    for src in sources:
        sh = set(hasher.shingle_hashes("\n".join(src.paragraphs)).tolist())
        counts: dict[int, int] = {}
        for h in sh:
            for k in postings.get(h, ()):
                counts[k] = counts.get(k, 0) + 1
        if any(c >= max_containment * min(len(sh), kept[k][1]) for k, c in counts.items()):
            continue
        for h in sh:
            postings.setdefault(h, []).append(len(kept))
        kept.append((src, len(sh)))
    return [s for s, _ in kept]


def build_part(units: list[list[Source]], ctx_base: dict, rng: random.Random) -> Part:
    """Originals, planted copies (one kind per original, 15% get a second) and hard negatives."""
    docs = thin([d for unit in units for d in unit])
    rng.shuffle(docs)
    n_fill = len(docs) // 4
    ctx = dict(ctx_base, filler=Filler(docs[:n_fill]))
    originals = docs[n_fill:]
    items: list[tuple[str, int, str, int | None]] = []  # (text, group, kind, original item)
    for g, src in enumerate(originals):
        items.append(("\n".join(src.paragraphs), g, "original", None))
    copied = rng.sample(range(len(originals)), k=int(0.5 * len(originals)))
    for i, g in enumerate(copied):
        kinds = [PLANTED[i % len(PLANTED)]]
        if rng.random() < 0.15:
            kinds.append(rng.choice(PLANTED))
        for kind in kinds:
            items.append((make_copy(originals[g].paragraphs, kind, rng, ctx), g, kind, g))
    group = len(originals)
    for i in range(max(8, len(originals) // 12)):
        for text in hard_negatives(NEGATIVES[i % 2], rng, ctx):
            items.append((text, group, NEGATIVES[i % 2], None))
            group += 1
    order = list(range(len(items)))
    rng.shuffle(order)
    position = {item: pos for pos, item in enumerate(order)}  # originals are items 0..n-1
    return Part([EvalDoc(items[i][0], items[i][1], items[i][2],
                         None if items[i][3] is None else position[items[i][3]]) for i in order])


def build(seed: int) -> tuple[Part, Part, dict]:
    sources, templates, licences = load_sources(CACHE)
    rng = random.Random(seed)
    units: dict[str, list[Source]] = {}
    for src in sources:
        units.setdefault(src.unit, []).extend(cut(src, rng))
    names = sorted(u for u in units if units[u])
    rng.shuffle(names)
    half = len(names) // 2
    ctx = {"templates": [t for t in templates if num_words(t) >= 40], "licences": licences}
    parts = [build_part([units[u] for u in sorted(part)], ctx, random.Random(seed * 1000 + k))
             for k, part in enumerate((names[:half], names[half:]))]
    return parts[0], parts[1], {"units": len(names), "templates": len(ctx["templates"]),
                                "licences": len(licences)}


# ---------------------------------------------------------------------------------------------
# methods: texts -> kept_copy per document

def load_before():
    """dedup.py as committed at HEAD (the current default), whatever the working tree holds."""
    text = subprocess.run(["git", "show", "HEAD:src/lmforge/curate/dedup.py"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    spec = importlib.util.spec_from_loader("dedup_before", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(text, "dedup_before.py", "exec"), module.__dict__)
    return module


def run_lmforge(module, texts, bands=14, rows=8, **index_kw) -> list[int]:
    """As the pipeline does it: exact key + signature (+ shingle count where the module has it)."""
    hasher = module.MinHasher(bands, rows, 5)
    index = module.DedupIndex(bands, **index_kw)
    for n, text in enumerate(texts):
        if hasattr(hasher, "sketch"):
            index.add(n, module.exact_key(text), *hasher.sketch(text))
        else:
            index.add(n, module.exact_key(text), hasher.signature(text))
    return [index._find(n) for n in range(len(texts))]


class PlainMinHash:
    """datasketch 1.x MinHash(num_perm=112, seed=1) + MinHashLSH(params=(14, 8)), re-implemented."""

    PRIME, MAX = np.uint64((1 << 61) - 1), np.uint64((1 << 32) - 1)

    def __init__(self, bands=14, rows=8, seed=1):
        gen = np.random.RandomState(seed)
        perms = [(gen.randint(1, (1 << 61) - 1, dtype=np.uint64), gen.randint(0, (1 << 61) - 1, dtype=np.uint64))
                 for _ in range(bands * rows)]
        self.a, self.b = np.array(perms, dtype=np.uint64).T
        self.bands, self.rows = bands, rows

    def signature(self, text: str) -> np.ndarray:
        words = dedup.normalize_text(text).split()
        shingles = {" ".join(words[i:i + 5]) for i in range(max(1, len(words) - 4))}
        hv = np.array([struct.unpack("<I", hashlib.sha1(s.encode()).digest()[:4])[0] for s in shingles],
                      dtype=np.uint64)[:, None]
        return ((hv * self.a + self.b) % self.PRIME & self.MAX).min(axis=0)

    def __call__(self, texts) -> list[int]:
        buckets = [{} for _ in range(self.bands)]
        kept = []
        for n, text in enumerate(texts):
            keys = [sig.tobytes() for sig in self.signature(text).reshape(self.bands, self.rows)]
            hits = sorted({buckets[b][k] for b, k in enumerate(keys) if k in buckets[b]})
            if hits:
                kept.append(hits[0])
                continue
            for b, k in enumerate(keys):
                buckets[b].setdefault(k, n)
            kept.append(n)
        return kept


def methods(before, variants: bool) -> dict:
    out = {
        "lmforge_before": lambda t: run_lmforge(before, t),
        "plain_minhash": PlainMinHash(),
        "lmforge": lambda t: run_lmforge(dedup, t, 37, 3),
    }
    if variants:
        out |= {
            "sentence_shingles_14x8": lambda t: run_lmforge(dedup, t, 14, 8, min_containment=0),
            "sentence_shingles_20x5": lambda t: run_lmforge(dedup, t, 20, 5, min_containment=0),
            "contain0.7_37x3": lambda t: run_lmforge(dedup, t, 37, 3, min_containment=0.7),
            "contain0.75_37x3": lambda t: run_lmforge(dedup, t, 37, 3, min_containment=0.75),
            "contain0.6_37x3": lambda t: run_lmforge(dedup, t, 37, 3, min_containment=0.6),
            "contain0.7_28x4": lambda t: run_lmforge(dedup, t, 28, 4, min_containment=0.7),
            "jaccard0.5_37x3": lambda t: run_lmforge(dedup, t, 37, 3, min_jaccard=0.5, min_containment=0),
        }
    return out


# ---------------------------------------------------------------------------------------------
# scoring

def score(part: Part, kept: list[int]) -> dict:
    groups = [d.group for d in part.docs]
    dropped = [n for n, k in enumerate(kept) if k != n]
    correct = [n for n in dropped if groups[kept[n]] == groups[n]]
    sizes: dict[int, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    needed = sum(s - 1 for s in sizes.values())
    by_kind = {}
    for kind in PLANTED:
        copies = [n for n, d in enumerate(part.docs) if d.kind == kind]
        by_kind[kind] = round(float(np.mean([kept[n] == kept[part.docs[n].original] for n in copies])), 3)
    negatives = [n for n, d in enumerate(part.docs) if d.kind in NEGATIVES]
    return {"recall": round(len(correct) / needed, 3), "precision": round(len(correct) / max(1, len(dropped)), 3),
            "drops": len(dropped), "wrong_drops": len(dropped) - len(correct),
            "hard_negatives_dropped": f"{sum(kept[n] != n for n in negatives)}/{len(negatives)}",
            "recall_by_kind": by_kind}


def evaluate(part: Part, fn, repeats: int) -> dict:
    texts = [d.text for d in part.docs]
    walls, kept = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        kept = fn(texts)
        walls.append(time.perf_counter() - t0)
    return {**score(part, kept), "docs_per_s": summary([len(texts) / w for w in walls], 1)}


def describe(part: Part) -> dict:
    kinds: dict[str, int] = {}
    for d in part.docs:
        kinds[d.kind] = kinds.get(d.kind, 0) + 1
    return {"documents": len(part.docs), "words": sum(len(d.text.split()) for d in part.docs), "by_kind": kinds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per method (median docs/s)")
    ap.add_argument("--variants", action="store_true", help="also score recipe variants on the tuning part")
    args = ap.parse_args()
    meta = Meta(["numpy", "xxhash", "trafilatura"])
    tuning, held_out, sources = build(args.seed)
    before = load_before()
    result = {"sources": sources, "sets": {"tuning": describe(tuning), "held_out": describe(held_out)},
              "results": {}}
    for name, fn in methods(before, args.variants).items():
        parts = {"tuning": tuning} if name not in ("lmforge_before", "plain_minhash", "lmforge") else \
            {"tuning": tuning, "held_out": held_out}
        result["results"][name] = {p: evaluate(part, fn, args.repeats) for p, part in parts.items()}
        print(name, json.dumps(result["results"][name]), file=sys.stderr, flush=True)
    meta.add(seed=args.seed)
    print(meta.dump(result))


if __name__ == "__main__":
    main()
