"""Test helpers: tiny HTML pages, WARC files written with warcio, planted near-duplicates
(also used by bench/curate.py to build a dedup set with known ground truth)."""

import io
import re
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from lmforge.curate.document import Document

SAMPLE_WARC = Path(__file__).resolve().parents[2] / "data" / "web" / "sample.warc.gz"

PROSE = ("The committee met on Tuesday to discuss the budget for the coming year. Members agreed "
         "that the library needs new shelves and that the reading room should stay open later in "
         "the evening. Several residents wrote letters asking for more books in other languages, "
         "and the librarian said she would look into the cost of a larger collection. The meeting "
         "ended with a vote to publish the minutes on the town website before the next session.")


def page(title: str, body_html: str, meta_charset: str | None = "utf-8") -> str:
    meta = f'<meta charset="{meta_charset}">' if meta_charset else ""
    return (f"<html><head>{meta}<title>{title}</title></head><body>"
            "<nav><a href='/'>Home</a> | <a href='/news'>News</a> | <a href='/contact'>Contact</a></nav>"
            f"<article><h1>{title}</h1>{body_html}</article>"
            "<footer>Copyright 2026 Example Town. All rights reserved.</footer></body></html>")


def write_warc(path: Path, records: list[tuple]) -> Path:
    """records: (kind, url, body_bytes, content_type) with kind response|revisit|request."""
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=str(path).endswith(".gz"))
    for kind, url, body, ctype in records:
        if kind == "revisit":
            rec = writer.create_revisit_record(url, digest="sha1:AAAA", refers_to_uri=url,
                                               refers_to_date="2026-01-01T00:00:00Z")
        elif kind == "request":
            req = StatusAndHeaders("GET / HTTP/1.1", [("Host", "x")], is_http_request=True)
            rec = writer.create_warc_record(url, "request", payload=io.BytesIO(b""), http_headers=req)
        else:
            headers = StatusAndHeaders("200 OK", [("Content-Type", ctype)], protocol="HTTP/1.1")
            rec = writer.create_warc_record(url, "response", payload=io.BytesIO(body),
                                            http_headers=headers)
        writer.write_record(rec)
    path.write_bytes(buf.getvalue())
    return path


def doc(text: str, url: str | None = None) -> Document:
    return Document(id="t", text=text, url=url)


BOILERPLATE = ("Mirror hosted by Example Networks. Copyright 2026 Example Networks Ltd. All rights "
               "reserved. Visit our sponsors for fast and reliable hosting. Report broken links to "
               "the webmaster of this mirror site. Subscribe to our newsletter for weekly updates.")


def shuffle_sentences(text, rng):
    sentences = re.split(r"(?<=[.!?])\s+", text)
    rng.shuffle(sentences)
    return " ".join(sentences)


def edit_words(text, rng, rate=0.02):
    words = text.split()
    for i in range(len(words)):
        if rng.random() < rate:
            words[i] = rng.choice(["server", "module", "file", "request", "value"])
    return " ".join(words)


def append_boilerplate(text, rng):
    return text + "\n" + BOILERPLATE
