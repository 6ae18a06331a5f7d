"""Sharded document output: part-00000.jsonl (or .parquet), `docs_per_shard` rows each.

    with ShardWriter(out_dir, "jsonl", docs_per_shard=50_000) as w:
        w.write({"text": ..., "id": ..., "url": ...})
    w.paths   # shard file names, in order

Shards are written under a temporary name and renamed when complete, so a reader never
sees half a shard.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class ShardWriter:
    def __init__(self, out_dir: Path, fmt: str = "jsonl", docs_per_shard: int = 50_000):
        self.out_dir, self.fmt, self.docs_per_shard = Path(out_dir), fmt, docs_per_shard
        self.paths: list[str] = []
        self._rows: list[dict] = []
        self._jsonl = None
        self._count = 0

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self._finish_shard()

    def write(self, record: dict) -> None:
        if self.fmt == "parquet":
            self._rows.append(record)
        else:
            if self._jsonl is None:
                self._jsonl = open(self._tmp_path(), "w", encoding="utf-8")
            self._jsonl.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._count += 1
        if self._count >= self.docs_per_shard:
            self._finish_shard()

    def _shard_path(self) -> Path:
        return self.out_dir / f"part-{len(self.paths):05d}.{self.fmt}"

    def _tmp_path(self) -> Path:
        return self._shard_path().with_suffix(".tmp")

    def _finish_shard(self) -> None:
        if self._count == 0:
            return
        if self.fmt == "parquet":
            self._write_parquet(self._tmp_path())
        else:
            self._jsonl.close()
            self._jsonl = None
        os.replace(self._tmp_path(), self._shard_path())
        self.paths.append(self._shard_path().name)
        self._rows, self._count = [], 0

    def _write_parquet(self, path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        # metadata keys differ between documents: give every row every column
        columns = list(dict.fromkeys(k for row in self._rows for k in row))
        table = pa.Table.from_pylist([{k: row.get(k) for k in columns} for row in self._rows])
        pq.write_table(table, path)
