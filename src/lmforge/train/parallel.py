"""Wrap an unmodified model for speed and scale: torch.compile, DDP, FSDP2.

    train_model = wrap_model(model, runtime, compile=True, strategy="ddp")

The model file knows none of this (torchtitan's rule); the raw model stays the one that
is saved and sampled from, the wrapper is what the objective calls.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from lmforge.runtime import Runtime


def wrap_model(model: nn.Module, runtime: Runtime, compile: bool = False,
               strategy: Literal["ddp", "fsdp"] = "ddp") -> nn.Module:
    if runtime.world_size > 1 and strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:  # shard per block so all-gathers overlap compute
            fully_shard(layer)
        fully_shard(model)
    if compile:
        model = torch.compile(model)
    if runtime.world_size > 1 and strategy == "ddp":
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    return model
