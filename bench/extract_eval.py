"""Main-text extraction scored against the pages' own source texts: Sphinx documentation from Debian.

    .venv/bin/python bench/extract_eval.py --repeats 3     # fetch once, build, score both parts (~3 min)
    .venv/bin/python bench/extract_eval.py --part tuning --variants all   # the variant comparison
    .venv/bin/python bench/extract_eval.py --part held_out --variants sphinx_main_div   # the ceiling
    .venv/bin/python bench/extract_eval.py --curate --curate-args '--extract.container_growth 0'
        # + the pages through `lmforge curate` (filters, PII, dedup off): the same numbers as `lmforge`

Pages: Sphinx-built HTML documentation in Debian packages, which ship every page's
reStructuredText source next to it (`_sources/PAGE.rst.txt` or `PAGE.txt`). `apt-get download`
fetches the packages below into runs/extract_eval/ (once, 25 MB), `dpkg-deb -x` unpacks them;
nothing is committed but the package list. The reference text of a page is its source rendered
to plain text by docutils (pip install docutils), with Sphinx's directives and roles read
generically (a directive's argument and content are text; a role's text is its title; code
blocks are kept; info fields as Sphinx titles them). Pages whose HTML shows text that is not in
their source are left out: toctrees, autodoc/autosummary, include and literalinclude, executed
examples (click:run), pages under 100 words, and pages whose source and the text of Sphinx's
main-content <div> disagree (word precision or recall < 0.9: content made by custom
directives; this check knows the template, no extractor is involved). Up to 25 pages a package
(seeded sample). The split is by package, so that no page template of the held-out part is seen
in tuning; both parts mix several Sphinx themes (TUNING, HELD_OUT below).

Score: bag-of-words precision and recall (case-folded \\w+ tokens, counted with multiplicity)
of the extracted text against the reference, F1 per page, then averaged over the part's pages;
a page where extraction returned nothing scores 0 (coverage = pages with text). ms/doc: the
mean wall time of one extraction in this process (median over --repeats rounds, min/max);
variants run page by page in turn so that background load hits them alike. `sphinx_main_div`
is not an extractor but the set's ceiling: Sphinx's main <div>, which an extractor does not know.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from common import ROOT, Meta, add_repeats, summary

sys.path.insert(0, str(ROOT / "src"))
from lmforge.curate.document import Document  # noqa: E402
from lmforge.curate.extract import Extractor, decode_html, time_limit  # noqa: E402

CACHE = ROOT / "runs" / "extract_eval"
# package -> (documentation root under /usr/share/doc, theme); split by package
TUNING = {
    "python3.11-doc": ("python3.11/html", "pydoctheme"),
    "python-flask-doc": ("python-flask-doc/html", "pallets"),
    "python-jinja2-doc": ("python-jinja2-doc/html", "pallets"),
    "python-requests-doc": ("python-requests-doc/html", "alabaster"),
    "python-cryptography-doc": ("python-cryptography-doc/html", "sphinx_rtd"),
    "python-pygments-doc": ("python-pygments-doc/html", "pygments14"),
}
HELD_OUT = {
    "sphinx-doc": ("sphinx-doc/html", "sphinx13"),
    "python-werkzeug-doc": ("python-werkzeug-doc/html", "pallets"),
    "python-click-doc": ("python-click-doc/html", "pallets"),
    "python-setuptools-doc": ("python-setuptools-doc/html", "alabaster"),
    "python-pytest-doc": ("python-pytest-doc/html", "flask"),
    "python-babel-doc": ("python-babel-doc/html", "babel"),
}
_EXCLUDE = re.compile(r"^\s*\.\. (toctree|auto\w+|include|literalinclude|program-output|click:\w+|"
                      r"jinja:\w+|raw|csv-table)::", re.M)
_WORD = re.compile(r"\w+")
# A page is in the set when its source and the text inside Sphinx's main <div> agree this well
# (precision and recall): this drops pages with generated content the source does not hold.
MIN_AGREEMENT = 0.9


@dataclass
class Page:
    package: str
    theme: str
    path: str
    html: bytes
    reference: str


# ---------------------------------------------------------------------------------------------
# the set

def fetch(packages: list[str], root: Path) -> Path:
    """The packages' files unpacked under root/root (downloaded once)."""
    unpacked, debs = root / "root", root / "deb"
    missing = [p for p in packages if not list(debs.glob(f"{p}_*.deb"))]
    if missing:
        debs.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", *missing], cwd=debs, check=True)
    for p in packages:
        marker = unpacked / f".{p}"
        if not marker.exists():
            deb = next(debs.glob(f"{p}_*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
            marker.touch()
    return unpacked / "usr" / "share" / "doc"


def load_pages(packages: dict, pages_per_package: int, seed: int) -> list[Page]:
    docs = fetch(list(packages), CACHE)
    pages = []
    for package, (sub, theme) in packages.items():
        found = []
        html_root = (docs / sub).resolve()
        for source in sorted((html_root / "_sources").rglob("*.txt")):
            page = _page(package, theme, html_root, source)
            if page is not None:
                found.append(page)
        random.Random(f"{seed}/{package}").shuffle(found)
        pages += found[:pages_per_package]
    return pages


def _page(package: str, theme: str, html_root: Path, source: Path) -> Page | None:
    rel = source.relative_to(html_root / "_sources")
    name = re.sub(r"(\.rst)?\.txt$", "", str(rel))
    html = html_root / f"{name}.html"
    if str(rel).endswith(".md.txt") or not html.is_file():
        return None
    rst = source.read_text(errors="replace")
    if _EXCLUDE.search(rst):
        return None
    reference = rst_to_text(rst)
    if len(_WORD.findall(reference)) < 100:
        return None
    raw = html.read_bytes()
    if min(word_scores(sphinx_body(raw), reference)[:2]) < MIN_AGREEMENT:
        return None
    return Page(package, theme, str(html.relative_to(html_root.parent)), raw, reference)


def sphinx_body(raw: bytes) -> str:
    """All text inside Sphinx's main-content element: only to check that a reference is faithful."""
    import lxml.html

    tree = lxml.html.fromstring(raw)
    for el in tree.xpath('//script|//style|//a[@class="headerlink"]'):
        el.drop_tree()
    main = tree.xpath('//div[@role="main"]') or tree.xpath('//div[contains(@class, "body")]')
    return main[0].text_content() if main else ""


def rst_to_text(rst: str) -> str:
    """reStructuredText with Sphinx markup -> the text a reader sees (docutils, generic Sphinx)."""
    from docutils import nodes
    from docutils.core import publish_doctree

    _register_sphinx_generics()
    tree = publish_doctree(rst, settings_overrides={
        "report_level": 5, "halt_level": 5, "warning_stream": False, "file_insertion_enabled": False,
        "raw_enabled": False, "syntax_highlight": "none"})
    for node in list(tree.findall(lambda n: n.tagname in ("comment", "system_message", "substitution_definition",
                                                          "target"))):
        node.parent.remove(node)
    for fields in tree.findall(nodes.field_list):  # Sphinx shows each title once per list
        shown = set()
        for name in fields.findall(nodes.field_name):
            kind, *rest = name.astext().split() or [""]
            title = _FIELD_TITLES.get(kind, kind)
            name.children = [nodes.Text(" ".join([title * (title not in shown), *rest[-1:]]))]
            shown.add(title)
    return tree.astext()


# Sphinx's info fields as their HTML shows them (":param x:" -> "Parameters x")
_FIELD_TITLES = {"param": "Parameters", "parameter": "Parameters", "arg": "Parameters", "argument": "Parameters",
                 "key": "Parameters", "keyword": "Parameters", "kwarg": "Parameters", "type": "",
                 "raises": "Raises", "raise": "Raises", "except": "Raises", "exception": "Raises",
                 "returns": "Returns", "return": "Returns", "rtype": "Return type", "var": "Variables",
                 "ivar": "Variables", "cvar": "Variables", "vartype": ""}


_REGISTERED = False


def _register_sphinx_generics() -> None:
    """Unknown directives and roles (Sphinx's) are read as text instead of being errors."""
    global _REGISTERED
    if _REGISTERED:
        return
    from docutils import nodes
    from docutils.parsers.rst import Directive, directives, roles

    class AnyOptions(dict):
        def __getitem__(self, key):
            return directives.unchanged

        def __contains__(self, key):
            return True

    silent = {"index", "highlight", "currentmodule", "module", "moduleauthor", "sectionauthor",
              "codeauthor", "tabularcolumns", "default-role", "default-domain", "py:currentmodule",
              "py:module", "c:namespace", "cpp:namespace", "role", "meta", "spelling:word-list"}
    code = {"code-block", "sourcecode", "code", "doctest", "testcode", "testoutput", "productionlist",
            "parsed-literal", "prompt"}
    labels = {"versionadded": "New in version", "versionchanged": "Changed in version",
              "deprecated": "Deprecated since version"}

    class Generic(Directive):
        required_arguments, optional_arguments, final_argument_whitespace = 0, 1, True
        has_content, option_spec = True, AnyOptions()

        def run(self):
            kind = self.name.split(":")[-1]
            if self.name in silent or kind in silent:
                return []
            if kind in code:
                return [nodes.literal_block(text="\n".join(self.content))]
            out = []
            heading = " ".join(filter(None, [labels.get(kind), *self.arguments]))
            if heading:
                out.append(nodes.paragraph(text=heading))
            container = nodes.container()
            self.state.nested_parse(self.content, self.content_offset, container)
            return out + [container]

    def generic_role(name, rawtext, text, lineno, inliner, options=None, content=None):
        title = re.match(r"^(.*?)\s*<[^<>]*>$", text, re.S)
        if title and title.group(1):
            text = title.group(1)
        elif name.split(":")[-1] in ("ref", "doc", "numref"):  # Sphinx shows the target's title
            text = ""
        if text.startswith("~"):  # Sphinx shows the last component only
            text = text[1:].rsplit(".", 1)[-1]
        text = text.lstrip("!")
        return [nodes.literal(rawtext, text)] if text else [], []

    known_directive, known_role = directives.directive, roles.role

    def directive(name, language, document):
        found, messages = known_directive(name, language, document)
        return (found or Generic), messages

    def role(name, language, lineno, reporter):
        found, messages = known_role(name, language, lineno, reporter)
        return (found or generic_role), messages

    directives.directive, roles.role = directive, role
    _REGISTERED = True


# ---------------------------------------------------------------------------------------------
# scoring

def word_scores(extracted: str, reference: str) -> tuple[float, float, float]:
    """Bag-of-words precision, recall and F1 of extracted against reference text."""
    got, want = Counter(_WORD.findall(extracted.casefold())), Counter(_WORD.findall(reference.casefold()))
    common = sum((got & want).values())
    if not common:
        return 0.0, 0.0, 0.0
    p, r = common / sum(got.values()), common / sum(want.values())
    return p, r, 2 * p * r / (p + r)


def trafilatura_defaults(timeout_s: float):
    import trafilatura

    def run(page: Page) -> str:
        with time_limit(timeout_s):
            return trafilatura.extract(decode_html(page.html), url=page.path) or ""
    return run


def lmforge(trafilatura_options: dict | None = None, **options):
    """lmforge's Extractor (the code path `lmforge curate` runs); options override its defaults."""
    extractor = Extractor(**options)
    extractor.options.update(trafilatura_options or {})

    def run(page: Page) -> str:
        doc = extractor(Document(id=page.path, html=page.html, url=page.path))
        return doc.text if doc is not None else ""
    return run


VARIANTS = {
    "trafilatura_defaults": lambda: trafilatura_defaults(5.0),
    # lmforge's recipe before this bench: fast, favor_precision, include_tables, no container
    "lmforge_before": lambda: lmforge(favor_precision=True, container_growth=0),
    "precision_off": lambda: lmforge(container_growth=0),
    "favor_recall": lambda: lmforge({"favor_recall": True}, container_growth=0),
    "formatting": lambda: lmforge({"include_formatting": True}, container_growth=0),
    "fallback": lambda: lmforge(fast=False, container_growth=0),  # trafilatura's justext/readability check
    "container_1.2": lambda: lmforge(container_growth=1.2),
    "container_2": lambda: lmforge(container_growth=2.0),
    "lmforge": lambda: lmforge(),  # the working tree's defaults (ExtractConfig's: container_growth 1.5)
    # not an extractor: the text of Sphinx's main <div>, knowing the template (the set's ceiling)
    "sphinx_main_div": lambda: lambda page: sphinx_body(page.html),
}


def score(pages: list[Page], variants: dict, repeats: int = 1) -> dict:
    """Scores (the same in every round) and ms/doc: the median over rounds of a round's mean."""
    runs = {name: make() for name, make in variants.items()}
    rows: dict[str, list] = {name: [] for name in runs}
    seconds: dict[str, list] = {name: [0.0] * repeats for name in runs}
    for page in pages:
        texts = {}
        for r in range(repeats):
            for name, run in runs.items():
                start = time.perf_counter()
                texts[name] = run(page)
                seconds[name][r] += time.perf_counter() - start
        for name, text in texts.items():
            rows[name].append((*word_scores(text, page.reference), bool(text.strip())))
    return {name: {**scores(pages, rows[name]), "ms_per_doc": summary([1000 * s / len(pages) for s in seconds[name]], 1)}
            for name in runs}


def scores(pages: list[Page], rows: list[tuple]) -> dict:
    """Means over pages of (precision, recall, f1, has_text) rows, and F1 by package."""
    mean = lambda rs, i: round(statistics.fmean(r[i] for r in rs), 4)  # noqa: E731
    by_package = {}
    for package in dict.fromkeys(p.package for p in pages):
        by_package[package] = mean([r for p, r in zip(pages, rows) if p.package == package], 2)
    return {"f1": mean(rows, 2), "precision": mean(rows, 0), "recall": mean(rows, 1), "coverage": mean(rows, 3),
            "f1_by_package": by_package}


def through_curate(pages: list[Page], work: Path, extra_args: list[str]) -> dict:
    """The same pages through `lmforge curate` with every filter, PII and dedup switched off."""
    import json
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    (work / "in").mkdir(parents=True)
    for i, page in enumerate(pages):
        (work / "in" / f"{i:05d}.html").write_bytes(page.html)
    off = [arg for name in ("url", "length", "language", "gopher_repetition", "gopher", "c4", "fineweb",
                            "quality_model", "decontamination") for arg in (f"--filters.{name}.enabled", "false")]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lmforge.cli", "curate", "--input", str(work / "in"), "--output",
                    str(work / "out"), "--workers", "1", "--pii.enabled", "false", "--dedup.exact", "false",
                    "--dedup.near", "false", *off, *extra_args], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    seconds = time.perf_counter() - start
    texts = {}
    for shard in (work / "out").glob("*.jsonl"):
        for line in shard.open():
            record = json.loads(line)
            texts[Path(record["id"]).name] = record["text"]
    rows = []
    for i, page in enumerate(pages):
        text = texts.get(f"{i:05d}.html", "")
        rows.append((*word_scores(text, page.reference), bool(text.strip())))
    return {**scores(pages, rows), "args": extra_args, "seconds_whole_run": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["tuning", "held_out", "both"], default="both")
    ap.add_argument("--variants", default="trafilatura_defaults,lmforge_before,lmforge",
                    help="comma-separated names from VARIANTS, or 'all'")
    ap.add_argument("--pages-per-package", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    add_repeats(ap, default=1)
    ap.add_argument("--curate", action="store_true",
                    help="also run `lmforge curate` over each part's pages (filters, PII and dedup off)")
    ap.add_argument("--curate-args", default="", help="extra curate arguments, e.g. '--extract.container_growth 0'")
    args = ap.parse_args()
    meta = Meta(["trafilatura", "docutils", "lxml"])
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    variants = {n: VARIANTS[n] for n in names}
    parts = {"tuning": TUNING, "held_out": HELD_OUT}
    if args.part != "both":
        parts = {args.part: parts[args.part]}
    result = {}
    for part, packages in parts.items():
        pages = load_pages(packages, args.pages_per_package, args.seed)
        result[part] = {"pages": len(pages), "packages": dict(Counter(p.package for p in pages)),
                        "variants": score(pages, variants, args.repeats)}
        if args.curate:
            result[part]["lmforge_curate"] = through_curate(pages, CACHE / "curate" / part,
                                                            shlex.split(args.curate_args))
    print(meta.dump(result))


if __name__ == "__main__":
    main()
