"""Streaming readers: WARC / HTML folders / JSONL / Parquet / plain text -> Documents.

    log = ReadLog()
    for doc in read_inputs(["crawl.warc.gz", "pages/"], log, on_error="skip"):
        ...
    log.counts  # {"warc.response": 812, "skipped.revisit": 3, "errors.corrupt": 1, ...}

Every reader streams (one record in memory at a time). A truncated or corrupt file is
reported in `log.errors` and counted; the records read before the damage are still
yielded, because losing a whole shard to one bad byte is worse than a short shard.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

from lmforge.curate.document import Document
from lmforge.errors import InputError, reading

HTML_SUFFIXES = (".html", ".htm", ".xhtml")
OnError = Literal["raise", "skip"]


@dataclass
class ReadLog:
    counts: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # "path: what went wrong", for the report

    def error(self, kind: str, message: str) -> None:
        self.counts[f"errors.{kind}"] += 1
        self.errors.append(message)


def read_inputs(paths: list[str | Path], log: ReadLog, on_error: OnError = "raise",
                text_field: str = "text") -> Iterator[Document]:
    """All documents of all inputs, in a stable order (files sorted within folders)."""
    for path in expand_inputs(paths):
        yield from read_file(path, log, on_error, text_field)


def expand_inputs(paths: list[str | Path]) -> list[Path]:
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and _kind(f) is not None)
        elif p.exists():
            files.append(p)
        else:
            raise InputError("input does not exist", p)
    return files


def read_file(path: Path, log: ReadLog, on_error: OnError = "raise",
              text_field: str = "text") -> Iterator[Document]:
    kind = _kind(path)
    if kind is None:
        raise InputError("unknown input type (expected .warc[.gz], .html, .jsonl[.gz], "
                         ".parquet or .txt)", path)
    if kind == "warc":
        yield from read_warc(path, log, on_error)
    elif kind == "html":
        log.counts["html.files"] += 1
        yield Document(id=str(path), url=path.resolve().as_uri(), html=path.read_bytes())
    elif kind == "jsonl":
        yield from read_jsonl(path, log, on_error, text_field)
    elif kind == "parquet":
        yield from read_parquet(path, log, text_field)
    else:
        log.counts["text.files"] += 1
        with reading(path):
            text = path.read_bytes().decode("utf-8")  # a binary file is no text to clean
        yield Document(id=str(path), text=text)


def read_warc(path: Path, log: ReadLog, on_error: OnError = "raise") -> Iterator[Document]:
    """HTML response records; revisits and non-HTML responses are skipped and counted. A
    damaged file is an error, or with on_error="skip" yields what precedes the damage and
    counts it (crawls do end mid-record)."""
    from warcio.archiveiterator import ArchiveIterator

    n, last_offset = 0, None
    with open(path, "rb") as f:
        records = ArchiveIterator(f)
        while True:
            try:
                record = next(records)
                doc = _warc_document(record, path, n, log)
                last_offset = records.get_record_offset()  # after the body: this reads to its end
            except StopIteration:
                break
            except Exception as e:  # noqa: BLE001
                # warcio raises a zoo of types on damage (ArchiveLoadFailed, EOFError,
                # zlib.error, ValueError); all mean "the rest of this file is unreadable".
                _damaged(log, on_error, path, f"unreadable after record {n}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}")
                return
            n += 1
            if record.raw_stream.limit > 0:  # the file ends inside this record's body
                _damaged(log, on_error, path, f"truncated inside record {n} "
                         f"({record.rec_headers.get_header('WARC-Target-URI')})")
                return
            if doc is not None:
                log.counts["warc.response"] += 1
                yield doc
    problem = _gzip_tail_problem(path, last_offset)
    if problem:
        _damaged(log, on_error, path, f"{problem} after record {n}")


def _damaged(log: ReadLog, on_error: OnError, path: Path, problem: str) -> None:
    if on_error == "raise":
        raise InputError(f"damaged WARC: {problem} (--on_error skip keeps the records before it)", path)
    log.error("corrupt", f"{path}: {problem}")


def _gzip_tail_problem(path: Path, last_offset: int | None) -> str | None:
    """warcio stops silently at a cut gzip stream: check the last member and what follows it."""
    if not path.name.endswith(".gz"):
        return None
    with open(path, "rb") as f:
        f.seek(last_offset or 0)
        tail = f.read()
    inflater = zlib.decompressobj(wbits=31)
    try:
        inflater.decompress(tail)
    except zlib.error as e:
        return f"corrupt gzip member ({e})"
    if not inflater.eof:
        return "truncated gzip member"
    return "unreadable trailing bytes" if inflater.unused_data.strip(b"\0") else None


def _warc_document(record, path: Path, n: int, log: ReadLog) -> Document | None:
    rtype = record.rec_type
    if rtype != "response":
        if rtype == "revisit":
            log.counts["skipped.revisit"] += 1
        else:
            log.counts[f"ignored.{rtype}"] += 1
        return None
    ctype = record.http_headers.get_header("Content-Type", "") if record.http_headers else ""
    if "html" not in ctype.lower():
        log.counts["skipped.non_html"] += 1
        record.content_stream().read()  # drain so the iterator can find the next record
        return None
    body = record.content_stream().read()
    headers = record.rec_headers
    return Document(
        id=headers.get_header("WARC-Record-ID") or f"{path.name}/{n}",
        url=headers.get_header("WARC-Target-URI"),
        html=body,
        encoding=_charset(ctype),
        metadata={"date": headers.get_header("WARC-Date"), "source": path.name},
    )


def _charset(content_type: str) -> str | None:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            return value.strip("\"' ").lower()
    return None


def read_jsonl(path: Path, log: ReadLog, on_error: OnError, text_field: str) -> Iterator[Document]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f, reading(path):
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                    raise ValueError(f"field {text_field!r} missing or not a string")
            except ValueError as e:  # JSONDecodeError and UnicodeDecodeError among them
                if on_error == "raise":
                    raise InputError(f"malformed JSONL record: {e}", path, lineno) from None
                log.error("malformed", f"{path}:{lineno}: {e}")
                continue
            log.counts["jsonl.records"] += 1
            yield _row_document(row, text_field, f"{path.name}/{lineno}")


def read_parquet(path: Path, log: ReadLog, text_field: str) -> Iterator[Document]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    if text_field not in pf.schema_arrow.names:
        raise InputError(f"column {text_field!r} not found (have {pf.schema_arrow.names})", path)
    row_no = 0
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            row_no += 1
            log.counts["parquet.records"] += 1
            yield _row_document(row, text_field, f"{path.name}/{row_no}")


def _row_document(row: dict, text_field: str, default_id: str) -> Document:
    text = row.pop(text_field) or ""
    doc_id = str(row.pop("id", None) or default_id)
    url = row.pop("url", None)
    meta = {k: v for k, v in row.items() if isinstance(v, (str, int, float, bool)) or v is None}
    return Document(id=doc_id, text=text, url=url, metadata=meta)


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith((".warc", ".warc.gz", ".arc.gz")):
        return "warc"
    if name.endswith(HTML_SUFFIXES):
        return "html"
    if name.endswith((".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".txt", ".md")):
        return "text"
    return None
