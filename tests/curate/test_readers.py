import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmforge.curate.extract import Extractor, decode_html
from lmforge.curate.readers import ReadLog, read_inputs
from lmforge.errors import InputError

from .webdata import PROSE, page, write_warc


def _warc_records():
    return [
        ("request", "http://a.example/", b"", ""),
        ("response", "http://a.example/", page("A", f"<p>{PROSE}</p>").encode(), "text/html; charset=utf-8"),
        ("revisit", "http://a.example/", b"", ""),
        ("response", "http://a.example/logo.png", b"\x89PNG....", "image/png"),
        ("response", "http://b.example/", page("B", f"<p>{PROSE}</p>").encode(), "text/html"),
    ]


def test_warc_reads_html_responses_and_counts_skips(tmp_path):
    path = write_warc(tmp_path / "crawl.warc.gz", _warc_records())
    log = ReadLog()
    docs = list(read_inputs([path], log))
    assert [d.url for d in docs] == ["http://a.example/", "http://b.example/"]
    assert docs[0].encoding == "utf-8" and docs[1].encoding is None
    assert docs[0].metadata["date"]
    assert log.counts["skipped.revisit"] == 1
    assert log.counts["skipped.non_html"] == 1
    assert log.counts["warc.response"] == 2


def test_uncompressed_warc(tmp_path):
    path = write_warc(tmp_path / "crawl.warc", _warc_records())
    assert len(list(read_inputs([path], ReadLog()))) == 2


def test_truncated_warc_gz_yields_readable_records_and_counts_error(tmp_path):
    records = [("response", f"http://p{i}.example/", page(f"P{i}", f"<p>{PROSE} {i}</p>").encode(),
                "text/html") for i in range(10)]
    full = write_warc(tmp_path / "full.warc.gz", records).read_bytes()
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(full[: int(len(full) * 0.65)])
    log = ReadLog()
    with pytest.raises(InputError, match="cut.warc.gz: damaged WARC"):
        list(read_inputs([cut], ReadLog()))
    docs = list(read_inputs([cut], log, on_error="skip"))
    assert 3 <= len(docs) < 10
    assert [d.url for d in docs] == [f"http://p{i}.example/" for i in range(len(docs))]
    assert log.counts["errors.corrupt"] == 1
    assert "cut.warc.gz" in log.errors[0]


def test_charset_from_header_meta_and_fallback():
    text = "Le café crème coûte trois euros."
    html = page("Café", f"<p>{text}</p>", meta_charset="iso-8859-1").encode("latin-1")
    assert text in decode_html(html)                     # from <meta>
    assert text in decode_html(html, "iso-8859-1")       # from HTTP headers
    no_meta = page("Café", f"<p>{text}</p>", meta_charset=None)
    assert text in decode_html(no_meta.encode("utf-8"))  # UTF-8 without any declaration
    assert "caf" in decode_html(no_meta.encode("cp1252"))  # cp1252 fallback never fails


def test_extractor_removes_boilerplate_and_keeps_metadata(tmp_path):
    path = write_warc(tmp_path / "c.warc.gz", _warc_records()[1:2])
    doc = next(read_inputs([path], ReadLog()))
    out = Extractor()(doc)
    assert "library needs new shelves" in out.text
    assert "All rights reserved" not in out.text and "Contact" not in out.text
    assert out.metadata["title"] == "A" and out.url == "http://a.example/" and out.html is None


def test_html_folder_jsonl_parquet_and_text(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "a.html").write_text(page("A", f"<p>{PROSE}</p>"))
    (tmp_path / "docs.jsonl").write_text(json.dumps({"text": "hello", "id": "x1", "url": "u"}) + "\n")
    with gzip.open(tmp_path / "more.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": "gz"}) + "\n")
    pq.write_table(pa.table({"text": ["p1", "p2"], "lang": ["en", "fr"]}), tmp_path / "t.parquet")
    (tmp_path / "note.txt").write_text("plain")
    log = ReadLog()
    docs = list(read_inputs([tmp_path], log))
    texts = sorted(d.text or "html" for d in docs)
    assert texts == sorted(["html", "hello", "gz", "p1", "p2", "plain"])
    jdoc = next(d for d in docs if d.text == "hello")
    assert (jdoc.id, jdoc.url) == ("x1", "u")
    assert next(d for d in docs if d.text == "p2").metadata == {"lang": "fr"}


def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"text": oops}\n{"no_text": 1}\n{"text": "ok2"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: malformed"):
        list(read_inputs([path], ReadLog()))
    log = ReadLog()
    docs = list(read_inputs([path], log, on_error="skip"))
    assert [d.text for d in docs] == ["ok", "ok2"]
    assert log.counts["errors.malformed"] == 2 and "bad.jsonl:3" in log.errors[1]


def test_missing_input_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        list(read_inputs([tmp_path / "nope.warc.gz"], ReadLog()))
