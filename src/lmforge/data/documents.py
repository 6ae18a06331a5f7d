"""Read text documents from JSONL(.gz), Parquet and plain-text files, or folders of them.

    stats = ReadStats()
    for doc in read_documents(["data/corpus"], on_error="skip", stats=stats):
        doc["id"], doc["text"]
    print(stats.summary())

Every yielded document is the record's own fields plus `id` (kept when the record has
one, else `<file>:<line>`, stable across runs so hash-based splits are deterministic) and
`text` (copied from `text_field`). A malformed record raises `InputError` naming file,
line and field; with `on_error="skip"` it is counted in `ReadStats` instead.
These readers feed the tokenizer, `lmforge tokenize` and pretraining; the web formats
(WARC, HTML) live in `lmforge.curate`.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lmforge.errors import InputError, reading

OnError = Literal["raise", "skip"]
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
TEXT_SUFFIXES = (".txt", ".txt.gz")
DOCUMENT_SUFFIXES = JSONL_SUFFIXES + PARQUET_SUFFIXES + TEXT_SUFFIXES


@dataclass
class ReadStats:
    """What the readers saw: files opened, documents yielded, records skipped (by reason)."""

    files: int = 0
    documents: int = 0
    skipped: int = 0
    skip_reasons: Counter = field(default_factory=Counter)
    first_skip: str | None = None  # the first skip's full message, to show the user an example

    def record_skip(self, error: InputError) -> None:
        self.skipped += 1
        self.skip_reasons[_reason_of(error)] += 1
        self.first_skip = self.first_skip or str(error)

    def summary(self) -> str:
        text = f"{self.documents} documents from {self.files} files"
        if self.skipped:
            reasons = ", ".join(f"{n} {r}" for r, n in self.skip_reasons.most_common())
            text += f"; skipped {self.skipped} ({reasons}); first: {self.first_skip}"
        return text


def read_documents(paths: str | Path | Iterable[str | Path], text_field: str = "text",
                   on_error: OnError = "raise", stats: ReadStats | None = None) -> Iterator[dict]:
    """Yield documents from files and folders (searched recursively, in sorted order)."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    stats = stats if stats is not None else ReadStats()
    for path in list_document_files(paths):
        stats.files += 1
        for doc in _read_one_file(path, text_field, on_error, stats):
            stats.documents += 1
            yield doc


def list_document_files(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Expand folders into the document files under them; reject missing or unknown files."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and _is_document_file(p))
        elif not path.exists():
            raise InputError("no such file or directory", path)
        elif _is_document_file(path):
            files.append(path)
        else:
            raise InputError(f"unknown document format; expected one of {DOCUMENT_SUFFIXES}", path)
    return files


def _is_document_file(path: Path) -> bool:
    return path.name.endswith(DOCUMENT_SUFFIXES)


def _read_one_file(path: Path, text_field: str, on_error: OnError, stats: ReadStats):
    if path.name.endswith(JSONL_SUFFIXES):
        records = _jsonl_records(path, text_field)
    elif path.name.endswith(PARQUET_SUFFIXES):
        records = _parquet_records(path, text_field)
    else:
        records = _text_file_records(path)
    # Each reader yields a document or the InputError for one bad record, so "skip" can
    # count a record and carry on while "raise" stops at the first one.
    for record in records:
        if isinstance(record, InputError):
            if on_error == "raise":
                raise record
            stats.record_skip(record)
        else:
            yield record


def _jsonl_records(path: Path, text_field: str):
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f, reading(path):
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue  # blank lines (a trailing newline, hand-edited files) are not records
            try:
                record = json.loads(raw.rstrip(b"\r\n"))
            except UnicodeDecodeError as e:
                yield InputError(f"invalid UTF-8 ({e.reason})", path, line_no)
                continue
            except json.JSONDecodeError as e:
                yield InputError(f"invalid JSON ({e.msg} at column {e.colno})", path, line_no)
                continue
            yield _to_document(record, text_field, path, line_no)


def _parquet_records(path: Path, text_field: str):
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    if text_field not in parquet.schema_arrow.names:
        # The whole file lacks the column: one error, counted once per row when skipping.
        error = InputError(f"missing field {text_field!r} (columns: {parquet.schema_arrow.names})",
                           path)
        for _ in range(parquet.metadata.num_rows):
            yield error
        return
    row_no = 0
    for batch in parquet.iter_batches():
        for record in batch.to_pylist():
            row_no += 1
            yield _to_document(record, text_field, path, row_no)


def _text_file_records(path: Path):
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f, reading(path):
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line_no = raw[:e.start].count(b"\n") + 1
        yield InputError(f"invalid UTF-8 ({e.reason})", path, line_no)
        return
    yield {"id": str(path), "text": text}


def _to_document(record: object, text_field: str, path: Path, line_no: int) -> dict | InputError:
    if not isinstance(record, dict):
        return InputError(f"expected a JSON object, got {type(record).__name__}", path, line_no)
    text = record.get(text_field)
    if text is None:
        return InputError(f"missing field {text_field!r}", path, line_no)
    if not isinstance(text, str):
        return InputError(f"field {text_field!r} must be a string, got {type(text).__name__}",
                          path, line_no)
    doc = dict(record)
    doc["text"] = text
    doc["id"] = str(record.get("id") or f"{path}:{line_no}")
    return doc


def _reason_of(error: InputError) -> str:
    """The message without its `file:line:` prefix or details, to group skips by kind."""
    message = str(error)
    for prefix in (f"{error.path}:{error.line}: ", f"{error.path}: "):
        message = message.removeprefix(prefix)
    return message.split(" (")[0]
