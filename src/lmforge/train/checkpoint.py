"""Atomic checkpoints with exact resume.

A checkpoint is a model directory (an HF checkpoint, or a PEFT adapter, written by the
stage's `save_model`) plus `trainer_state/` beside the weights: optimizer, step, RNG and
data position. It is written to `<name>.tmp`, then swapped in by renames, so a crash at any
moment leaves a complete checkpoint under `<name>` or `<name>.old` (`find_checkpoint`
looks in both).

Under FSDP2 (`sharded`: the sharded model) every rank calls `save_checkpoint`: the model is
gathered and written whole by rank 0 (the checkpoint stays a loadable model dir), and each
rank writes its own slice of the optimizer state through torch.distributed.checkpoint
(`trainer_state/optimizer/`), so no rank ever holds the whole optimizer state, and its own
RNG and data position. Such a checkpoint resumes with FSDP2 on the same number of ranks.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from lmforge.errors import InputError
from lmforge.runtime import rng_state, set_rng_state

STATE_DIR = "trainer_state"
SHARDED_OPTIMIZER = "optimizer"  # a torch.distributed.checkpoint directory, one file per rank


def save_checkpoint(path: Path, save_model: Callable[[Path], None], optimizer: Any,
                    state: dict, batches_state: dict | None, sharded: nn.Module | None = None) -> None:
    path = Path(path)
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    main = sharded is None or dist.get_rank() == 0
    state_dir = tmp / STATE_DIR
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        state_dir.mkdir(parents=True)
    _barrier(sharded)
    save_model(tmp)
    if sharded is not None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        dcp.save(get_optimizer_state_dict(sharded, _torch_optimizers(optimizer)),
                 checkpoint_id=state_dir / SHARDED_OPTIMIZER)
    else:
        torch.save(optimizer.state_dict(), state_dir / "optimizer.pt")
    torch.save({"rng": rng_state(), "batches": batches_state}, state_dir / _rng_and_data(sharded))
    _barrier(sharded)  # every rank's files are in place before rank 0 renames the directory
    if main:
        (state_dir / "state.json").write_text(json.dumps(state, indent=2) + "\n")
        _fsync_tree(tmp)
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        tmp.rename(path)
        _fsync_dir(path.parent)  # make the renames themselves durable
        shutil.rmtree(old, ignore_errors=True)
    _barrier(sharded)  # no rank goes on (or reads the checkpoint) before it is in place


def find_checkpoint(path: Path) -> Path | None:
    """The newest complete checkpoint at `path`, or the previous one a crash left behind."""
    for candidate in (Path(path), Path(str(path) + ".old")):
        if (candidate / STATE_DIR / "state.json").exists():
            return candidate
    return None


def load_trainer_state(path: Path, optimizer: Any, sharded: nn.Module | None = None) -> tuple[dict, dict | None]:
    """Restore optimizer and RNG; return (state.json contents, data-source state)."""
    state_dir = Path(path) / STATE_DIR
    saved_sharded = (state_dir / SHARDED_OPTIMIZER).is_dir()
    if saved_sharded != (sharded is not None):
        raise InputError(f"this checkpoint was written {'with' if saved_sharded else 'without'} FSDP2: resume it "
                         f"with --parallel {'fsdp' if saved_sharded else 'ddp'}" +
                         (" on the same number of processes" if saved_sharded else ""), str(state_dir))
    if sharded is not None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

        optimizers = _torch_optimizers(optimizer)
        optim_state = get_optimizer_state_dict(sharded, optimizers)  # the layout to read into
        dcp.load(optim_state, checkpoint_id=state_dir / SHARDED_OPTIMIZER)
        set_optimizer_state_dict(sharded, optimizers, optim_state)
    else:
        optimizer.load_state_dict(torch.load(state_dir / "optimizer.pt", weights_only=False))
    own = state_dir / _rng_and_data(sharded)
    extra = torch.load(own if own.exists() else state_dir / _rng_and_data(None), weights_only=False)
    set_rng_state(extra["rng"])
    return json.loads((state_dir / "state.json").read_text()), extra["batches"]


def _rng_and_data(sharded: nn.Module | None) -> str:
    """The file of this rank's RNG and data position. Under FSDP2 each rank writes its own (a
    rollout source's generator and unserved micro-batches differ by rank); under DDP only rank
    0 saves, and every rank resumes from its file."""
    rank = dist.get_rank() if sharded is not None else 0
    return "rng_and_data.pt" if rank == 0 else f"rng_and_data.rank{rank}.pt"


def _torch_optimizers(optimizer: Any) -> list:
    """torch.distributed.checkpoint takes torch optimizers; a MultiOptimizer holds some."""
    return list(getattr(optimizer, "optimizers", [optimizer]))


def _barrier(sharded: nn.Module | None) -> None:
    if sharded is not None:
        dist.barrier()


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
