"""Build data/web/sample.warc.gz from the Apache httpd 2.4 manual (Apache-2.0).

    apt-get download apache2-doc && dpkg-deb -x apache2-doc_*.deb /tmp/a2doc
    python data/web/make_sample.py /tmp/a2doc/usr/share/doc/apache2-doc/manual data/web/sample.warc.gz

The manual is real web HTML with heavy navigation and footer boilerplate in 10+ languages.
On top of the real pages the sample plants what a crawl contains and curation must remove:
exact duplicates (the same page under a second URL, as the manual's language fallbacks),
near duplicates (small word edits, appended boilerplate, shuffled paragraphs), junk pages
(spam, lorem ipsum, repeated lines, too short, a blocked URL), records that are not HTML
(CSS, PNG), revisit and request records, and a page in ISO-8859-1 declared only by <meta>.
Deterministic (seeded); ground truth is written to sample_truth.json next to the WARC.
"""

from __future__ import annotations

import io
import json
import random
import re
import sys
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

BASE = "http://httpd.apache.org/docs/2.4/"
DATE = "2026-11-20T12:00:00Z"
MAX_PAGE_BYTES = 40_000
N_ENGLISH = 150
OTHER_LANGS = {"de": 4, "fr": 6, "es": 3, "ja": 3, "zh-cn": 2, "ru": 2, "tr": 2, "ko": 2}


def main(manual: Path, out: Path) -> None:
    rng = random.Random(0)
    english = _pages(manual / "en", N_ENGLISH, rng)
    others = [p for lang, n in OTHER_LANGS.items() for p in _pages(manual / lang, n, rng)]
    records, truth = [], {"exact_duplicates": [], "near_duplicates": [], "junk": []}
    for path in english + others:
        records.append(("response", _url(manual, path), path.read_bytes(), "text/html; charset=utf-8"))
    # exact duplicates: same bytes, a second URL (as the manual's language fallbacks)
    for path in rng.sample(english, 10):
        url = BASE + path.relative_to(manual / "en").as_posix()
        records.append(("response", url, path.read_bytes(), "text/html"))
        truth["exact_duplicates"].append([_url(manual, path), url])
    # near duplicates of other pages
    for i, path in enumerate(rng.sample(english, 24)):
        kind = ("edit", "boilerplate", "shuffle")[i % 3]
        html = path.read_text(encoding="utf-8")
        html = {"edit": _edit_words, "boilerplate": _append_boilerplate,
                "shuffle": _shuffle_paragraphs}[kind](html, rng)
        url = f"http://mirror{i}.example.org/apache/{path.name}"
        records.append(("response", url, html.encode(), "text/html; charset=utf-8"))
        truth["near_duplicates"].append({"original": _url(manual, path), "copy": url, "kind": kind})
    for url, html in _junk_pages():
        records.append(("response", url, html.encode(), "text/html; charset=utf-8"))
        truth["junk"].append(url)
    latin1 = _page("Caf\u00e9 cr\u00e8me", "<p>" + " ".join([_PROSE] * 3) + " Le caf\u00e9 est cr\u00e8me.</p>",
                   meta_charset="iso-8859-1")
    records.append(("response", "http://latin1.example.org/cafe.html", latin1.encode("latin-1"), "text/html"))
    css = (manual / "style/css/manual.css").read_bytes()[:4000]
    records.append(("response", BASE + "style/css/manual.css", css, "text/css"))
    png = (manual / "images/feather.png").read_bytes()
    records.append(("response", BASE + "images/feather.png", png, "image/png"))
    rng.shuffle(records)
    _write(out, records, rng)
    out.with_name("sample_truth.json").write_text(json.dumps(truth, indent=1) + "\n")


def _pages(folder: Path, n: int, rng: random.Random) -> list[Path]:
    files = sorted(p for p in folder.rglob("*.html") if not p.is_symlink()
                   and p.stat().st_size <= MAX_PAGE_BYTES)
    return sorted(rng.sample(files, min(n, len(files))))


def _url(manual: Path, path: Path) -> str:
    return BASE + path.relative_to(manual).as_posix()


def _edit_words(html: str, rng: random.Random) -> str:
    """Change ~3% of the words inside text nodes."""
    def edit(m):
        words = m.group(1).split(" ")
        for j in range(len(words)):
            if words[j].isalpha() and rng.random() < 0.03:
                words[j] = rng.choice(["server", "module", "file", "request", "value"])
        return ">" + " ".join(words) + "<"
    return re.sub(r">([^<>]{20,})<", edit, html)


def _append_boilerplate(html: str, rng: random.Random) -> str:
    footer = ("<p>Mirror hosted by Example Networks. Copyright 2026 Example Networks Ltd. "
              "All rights reserved. Visit our sponsors for fast and reliable hosting. "
              "Report broken links to the webmaster of this mirror site.</p>")
    return html.replace('<div class="bottomlang">', footer + '<div class="bottomlang">', 1)


def _shuffle_paragraphs(html: str, rng: random.Random) -> str:
    paragraphs = re.findall(r"<p>.*?</p>", html, flags=re.S)
    shuffled = paragraphs[:]
    rng.shuffle(shuffled)
    it = iter(shuffled)
    return re.sub(r"<p>.*?</p>", lambda m: next(it), html, flags=re.S)


_PROSE = ("The quick brown fox jumps over the lazy dog while the farmer watches from the "
          "porch, and the children laugh as they run across the field to the old barn.")


def _page(title: str, body: str, meta_charset: str = "utf-8") -> str:
    return (f'<!DOCTYPE html><html><head><meta charset="{meta_charset}"><title>{title}</title>'
            f"</head><body><nav><a href='/'>Home</a> | <a href='/about'>About</a></nav>"
            f"<main><h1>{title}</h1>{body}</main><footer>Copyright 2026</footer></body></html>")


def _junk_pages() -> list[tuple[str, str]]:
    spam = " ".join(["cheap pills buy now best price discount online pharmacy"] * 30)
    return [
        ("http://spam.example.net/deals.html", _page("Deals", f"<p>{spam}</p>")),
        ("http://lorem.example.net/", _page("Lorem", "<p>" + " ".join(
            ["Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor."] * 12)
            + "</p>")),
        ("http://repeat.example.net/", _page("Repeat", "".join(
            "<p>Click here to subscribe to our newsletter today.</p>" for _ in range(40)))),
        ("http://short.example.net/", _page("Short", "<p>Under construction.</p>")),
        ("http://best-casino-online.example.com/win.html", _page("Win", "<p>" + " ".join([_PROSE] * 4) + "</p>")),
        ("http://links.example.net/", _page("Links", "<ul>" + "".join(
            f"<li><a href='/p{i}'>Product {i}</a></li>" for i in range(80)) + "</ul>")),
        ("http://numbers.example.net/", _page("Numbers", "<p>" + " ".join(
            str(i * 7919 % 10007) for i in range(400)) + "</p>")),
    ]


def _write(out: Path, records, rng: random.Random) -> None:
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    writer.write_record(writer.create_warcinfo_record(out.name, {"software": "lmforge make_sample.py"}))
    for i, (rtype, url, body, ctype) in enumerate(records):
        headers = StatusAndHeaders("200 OK", [("Content-Type", ctype)], protocol="HTTP/1.1")
        rec = writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=headers,
                                        warc_headers_dict={"WARC-Date": DATE})
        writer.write_record(rec)
        if i % 40 == 0:  # a crawler's request record, and a revisit of the same URL
            req = StatusAndHeaders("GET / HTTP/1.1", [("Host", "httpd.apache.org")], is_http_request=True)
            writer.write_record(writer.create_warc_record(url, "request", payload=io.BytesIO(b""),
                                                          http_headers=req))
            writer.write_record(writer.create_revisit_record(
                url, digest=rec.rec_headers.get_header("WARC-Payload-Digest"),
                refers_to_uri=url, refers_to_date=DATE))
    out.write_bytes(buf.getvalue())


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
