"""Token shards on disk: flat binary arrays of token ids plus a small JSON index.

    with ShardWriter("runs/shards", "train", np.uint16, shard_size_tokens=50_000_000) as w:
        w.add_document([bos] + ids)
    write_index("runs/shards", {...})       # written last: its presence marks a complete set
    read_index("runs/shards")

Layout: `DIR/train_000.bin, train_001.bin, ..., val_000.bin, index.json`. Each document is
`[bos] + tokens`, and a shard is closed only at a document boundary once it reaches
`shard_size_tokens`, so every shard decodes on its own. Files are raw little-endian
integers (numpy `tofile`), memory-mapped by `lmforge.data.loader.TokenShards`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from lmforge.errors import InputError

INDEX_NAME = "index.json"
FORMAT = "lmforge-token-shards/1"


def choose_dtype(vocab_size: int, requested: str = "auto") -> np.dtype:
    """uint16 while every id (< vocab_size) fits in it, else uint32: half the disk and page cache."""
    fits_uint16 = vocab_size <= 2**16
    if requested == "auto":
        return np.dtype(np.uint16 if fits_uint16 else np.uint32)
    if requested == "uint16" and not fits_uint16:
        raise ValueError(f"dtype uint16 cannot hold ids of a vocabulary of {vocab_size}")
    if requested not in ("uint16", "uint32"):
        raise ValueError(f"dtype must be 'auto', 'uint16' or 'uint32', got {requested!r}")
    return np.dtype(requested)


def shard_name(split: str, number: int) -> str:
    return f"{split}_{number:03d}.bin"


class ShardWriter:
    """Appends documents to `DIR/{split}_NNN.bin`, starting a new file past the size limit."""

    def __init__(self, directory: str | Path, split: str, dtype: np.dtype, shard_size_tokens: int):
        self.directory, self.split, self.dtype = Path(directory), split, np.dtype(dtype)
        self.shard_size_tokens = shard_size_tokens
        self.shards: list[dict] = []  # {"file", "tokens", "documents"} per closed shard
        self._file = None

    def add_document(self, ids: np.ndarray | list[int]) -> None:
        if self._file is None:
            self._open_next()
        array = np.asarray(ids, dtype=self.dtype)
        array.tofile(self._file)
        current = self.shards[-1]
        current["tokens"] += len(array)
        current["documents"] += 1
        if current["tokens"] >= self.shard_size_tokens:
            self._close_current()

    def close(self) -> list[dict]:
        if self._file is not None:
            self._close_current()
        return self.shards

    def _open_next(self) -> None:
        name = shard_name(self.split, len(self.shards))
        self._file = open(self.directory / name, "wb")
        self.shards.append({"file": name, "tokens": 0, "documents": 0})

    def _close_current(self) -> None:
        self._file.close()
        self._file = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def remove_old_shards(directory: str | Path) -> None:
    """Delete a previous run's shards and index so a smaller rerun leaves no stale files."""
    directory = Path(directory)
    for path in [directory / INDEX_NAME, *directory.glob("train_*.bin"), *directory.glob("val_*.bin")]:
        path.unlink(missing_ok=True)


def write_index(directory: str | Path, index: dict) -> dict:
    """Write index.json atomically (temp file + rename): a reader never sees half of it."""
    path = Path(directory) / INDEX_NAME
    temporary = path.with_suffix(".json.tmp")
    index = {"format": FORMAT, **index}
    temporary.write_text(json.dumps(index, indent=2, ensure_ascii=False))
    os.replace(temporary, path)
    return index


def read_index(directory: str | Path) -> dict:
    path = Path(directory) / INDEX_NAME
    if not path.exists():
        raise InputError("no index.json: not a token-shard directory (run `lmforge tokenize`), "
                         "or tokenizing did not finish", Path(directory))
    index = json.loads(path.read_text())
    if index.get("format") != FORMAT:
        raise InputError(f"unsupported shard format {index.get('format')!r}, expected {FORMAT!r}",
                         path)
    return index
