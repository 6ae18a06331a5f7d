"""Work units: what makes a killed curation run restart where it stopped.

    units = plan_units(inputs, unit_mb=64)     # consecutive input files, ~64 MB a unit
    work = WorkDir(out / "_work", cfg, units)   # finished units of an earlier run, if any
    stage = work.stage(u); stage.add(batch_result) ...; stage.commit(read_log)
    work.signatures(u), work.records(u)          # a committed unit, for dedup and the shards

The expensive per-document work (extraction, filters, MinHash) is committed per unit: its
kept records (JSONL), dedup keys and signatures (.npz) and counts are written under
temporary names, renamed, and only then is the unit's marker (`unit-NNNNN.done.json`)
written, atomically. A unit is done exactly when its marker exists. Dedup is global, so it
cannot be committed per unit; it runs after every unit is done, over all units' signatures
in input order, which makes a resumed run's output identical to an uninterrupted one.

A work dir made by another config or other inputs (paths, sizes, modification times) is
discarded, not reused: reusing it would mix two runs' documents.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np

from lmforge.curate.readers import ReadLog
from lmforge.curate.steps import BatchResult

# Settings that change how the work is scheduled, not what it produces.
_SCHEDULING_FIELDS = ("executor", "workers", "batch_docs", "output", "report")


def plan_units(inputs: list[Path], unit_mb: float) -> list[list[Path]]:
    """Consecutive files grouped until a unit holds >= unit_mb MB (a big file is a unit alone),
    so a folder of small HTML files does not commit per file."""
    units: list[list[Path]] = []
    size = 0
    for path in inputs:
        if not units or size >= unit_mb * 2**20:
            units.append([])
            size = 0
        units[-1].append(path)
        size += path.stat().st_size
    return units


class WorkDir:
    def __init__(self, root: Path, cfg, units: list[list[Path]]):
        self.root, self.units = root, units
        plan = {"config": _config_hash(cfg),
                    "units": [[[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in unit]
                              for unit in units]}
        path = root / "plan.json"  # the config hash and the units: what this work belongs to
        if root.exists():
            previous = json.loads(path.read_text()) if path.exists() else None
            if previous != plan:
                print(f"curate: {root} holds unfinished work of another config or other inputs; "
                      "starting over")
                shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            _write_atomic(path, json.dumps(plan) + "\n")

    def done(self, u: int) -> bool:
        return self._marker(u).exists()

    def stage(self, u: int) -> "UnitStage":
        return UnitStage(self, u)

    def counts(self, u: int) -> dict:
        """A committed unit's read log and step counts."""
        return json.loads(self._marker(u).read_text())

    def count(self, u: int) -> int:
        """How many documents a committed unit kept."""
        return int(np.load(self._path(u, ".npz"))["count"])

    def signatures(self, u: int):
        """A committed unit's (dedup key, MinHash signature, shingle count) per kept document."""
        arrays = np.load(self._path(u, ".npz"))
        keys, signatures, shingles = (arrays[k] if k in arrays else None
                                      for k in ("keys", "signatures", "num_shingles"))
        for i in range(int(arrays["count"])):
            yield (None if keys is None else keys[i].tobytes(),
                   None if signatures is None else signatures[i],
                   None if shingles is None else int(shingles[i]))

    def records(self, u: int):
        """A committed unit's kept documents, as JSON lines, in input order."""
        with self._path(u, ".jsonl").open(encoding="utf-8") as f:
            yield from f

    def remove(self) -> None:
        shutil.rmtree(self.root)

    def _path(self, u: int, suffix: str) -> Path:
        return self.root / f"unit-{u:05d}{suffix}"

    def _marker(self, u: int) -> Path:
        return self._path(u, ".done.json")


class UnitStage:
    """One unit's results while its batches come back; nothing counts until commit()."""

    def __init__(self, work: WorkDir, u: int):
        self.work, self.u = work, u
        self.records = work._path(u, ".jsonl")
        self._tmp = self.records.with_suffix(".jsonl.tmp")
        self._file = self._tmp.open("w", encoding="utf-8")
        self.keys: list = []
        self.signatures: list = []
        self.num_shingles: list = []
        self.steps: dict[str, Counter] = {}

    def add(self, result: BatchResult) -> None:
        for record in result.records:
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.keys += result.keys
        self.signatures += result.signatures
        self.num_shingles += result.num_shingles
        for name, counts in result.stats.items():
            self.steps.setdefault(name, Counter()).update(counts)

    def commit(self, log: ReadLog) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        arrays = {"count": np.asarray(len(self.keys))}
        if self.keys and self.keys[0] is not None:
            arrays["keys"] = np.frombuffer(b"".join(self.keys), np.uint8).reshape(len(self.keys), -1)
        if self.signatures and self.signatures[0] is not None:
            arrays["signatures"] = np.stack(self.signatures)
            arrays["num_shingles"] = np.asarray(self.num_shingles, np.int64)
        npz = self.work._path(self.u, ".npz")
        with open(npz.with_suffix(".npz.tmp"), "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(npz.with_suffix(".npz.tmp"), npz)
        os.replace(self._tmp, self.records)
        counts = {"read": dict(log.counts), "read_errors": log.errors,
                  "steps": {name: dict(c) for name, c in self.steps.items()}}
        _write_atomic(self.work._marker(self.u), json.dumps(counts) + "\n")


def _config_hash(cfg) -> str:
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _SCHEDULING_FIELDS}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
