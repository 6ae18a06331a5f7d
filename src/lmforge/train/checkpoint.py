"""Atomic checkpoints with exact resume.

A checkpoint is a model directory (an HF checkpoint, or a PEFT adapter, written by the
stage's `save_model`) plus `trainer_state/` beside the weights: optimizer, step, RNG and
data position. It is written to `<name>.tmp`, then swapped in by renames, so a crash at any
moment leaves a complete checkpoint under `<name>` or `<name>.old` (`find_checkpoint`
looks in both).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from lmforge.runtime import rng_state, set_rng_state

STATE_DIR = "trainer_state"


def save_checkpoint(path: Path, save_model: Callable[[Path], None], optimizer: Any,
                    state: dict, batches_state: dict | None) -> None:
    path = Path(path)
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(tmp)
    state_dir = tmp / STATE_DIR
    state_dir.mkdir(parents=True, exist_ok=True)
    torch.save(optimizer.state_dict(), state_dir / "optimizer.pt")
    torch.save({"rng": rng_state(), "batches": batches_state}, state_dir / "rng_and_data.pt")
    (state_dir / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    _fsync_tree(tmp)
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
    tmp.rename(path)
    _fsync_dir(path.parent)  # make the renames themselves durable
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(path: Path) -> Path | None:
    """The newest complete checkpoint at `path`, or the previous one a crash left behind."""
    for candidate in (Path(path), Path(str(path) + ".old")):
        if (candidate / STATE_DIR / "state.json").exists():
            return candidate
    return None


def load_trainer_state(path: Path, optimizer: Any) -> tuple[dict, dict | None]:
    """Restore optimizer and RNG; return (state.json contents, data-source state)."""
    state_dir = Path(path) / STATE_DIR
    optimizer.load_state_dict(torch.load(state_dir / "optimizer.pt", weights_only=False))
    extra = torch.load(state_dir / "rng_and_data.pt", weights_only=False)
    set_rng_state(extra["rng"])
    return json.loads((state_dir / "state.json").read_text()), extra["batches"]


def _fsync_tree(root: Path) -> None:
    """Flush file contents before the rename makes them the checkpoint of record."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(root)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
