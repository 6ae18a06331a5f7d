"""Where and how a run executes: device, dtype, seeding, distributed init, rank-aware print.

    rt = Runtime.setup(device="auto", dtype="auto", seed=0)
    with rt.autocast():
        loss = ...
    rt.print("only rank 0 prints this")
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

# bf16 dense peak per device, for MFU (DESIGN.md uses the H100 SXM datasheet figure).
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "4090": 165e12}


@dataclass
class Runtime:
    device: torch.device
    dtype: torch.dtype  # autocast compute dtype; fp32 means no autocast
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def setup(cls, device: str = "auto", dtype: str = "auto", seed: int = 0) -> "Runtime":
        rank, world, local = _init_distributed()
        if device == "auto":
            device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
            # TF32 for any fp32 matmul left outside autocast (optimizer, loss).
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if dtype == "auto":
            # Not on a CPU, even one with AMX: bf16 autocast pretrained the demo model 1.6x
            # faster there but ended 0.15 nats worse on validation (bench/RESULTS.md).
            dtype = "bfloat16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
        seed_everything(seed + rank)
        return cls(dev, getattr(torch, dtype), rank, world, local)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def print(self, *args, **kwargs) -> None:
        if self.is_main:
            print(*args, **kwargs, flush=True)

    def peak_flops(self) -> float | None:
        """Datasheet bf16 peak of this device, or None when unknown (CPU)."""
        if self.device.type != "cuda":
            return None
        name = torch.cuda.get_device_name(self.device)
        return next((v for k, v in PEAK_FLOPS.items() if k in name), None)

    def describe(self) -> dict:
        info = {"device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                "world_size": self.world_size, "torch": torch.__version__,
                "python": platform.python_version(), "cpu_threads": torch.get_num_threads()}
        if self.device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(self.device)
        return info


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def git_revision(path: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=path or Path(__file__).parent, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _init_distributed() -> tuple[int, int, int]:
    """torchrun sets RANK/WORLD_SIZE; NCCL on GPUs, gloo on CPU (what the tests use)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", 1)) == 1:
        return 0, 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
