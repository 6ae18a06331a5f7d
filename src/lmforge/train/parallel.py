"""Wrap an unmodified model for speed and scale: torch.compile and DDP.

    train_model = wrap_model(model, runtime, compile=True)

The model file knows none of this (torchtitan's rule); the raw model stays the one that
is saved and sampled from, the wrapper is what the objective calls.
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint
from torch import nn

from lmforge.runtime import Runtime


def wrap_model(model: nn.Module, runtime: Runtime, compile: bool = False) -> nn.Module:
    """Sharded training (FSDP2) is not wired yet: every rank holds the whole model."""
    if compile:
        model = torch.compile(model)
    if runtime.world_size > 1:
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    return model


def checkpoint_activations(model) -> None:
    """Recompute each decoder layer's activations in backward instead of storing them.
    Done by replacing the layers' forward from outside (names and state dicts unchanged)."""
    for layer in model.model.layers:
        forward = layer.forward
        layer.forward = lambda *args, _f=forward: torch.utils.checkpoint.checkpoint(
            _f, *args, use_reentrant=False)
