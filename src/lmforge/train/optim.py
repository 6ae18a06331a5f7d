"""Optimizers and learning-rate schedules (schedules are plain functions of the step).

    opt = build_optimizer(model, OptimConfig(name="muon"), device)
    set_lr(opt, lr_multiplier(step, total_steps, cfg))

Weight decay applies to matrices only; norms, biases and embeddings are not decayed (as in
GPT-3 / Llama training recipes). Muon (torch.optim.Muon, Newton-Schulz orthogonalised
momentum; Jordan et al. 2024) is only defined for 2-D hidden matrices, so embeddings, the
output head and vectors stay on AdamW.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


@dataclass
class OptimConfig:
    name: Literal["adamw", "muon"] = "adamw"  # muon = Muon for hidden matrices + AdamW rest
    lr: float | None = None  # AdamW peak LR; None derives it from the model width
    muon_lr: float = 0.02  # Muon peak LR for hidden matrices
    weight_decay: float = 0.1  # decoupled weight decay on matrices
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"  # wsd = warmup-stable-decay
    warmup_steps: int = 20  # linear warmup from 0
    decay_fraction: float = 0.2  # wsd: share of steps spent decaying at the end
    min_lr_ratio: float = 0.1  # final LR as a fraction of the peak


def default_lr(hidden_size: int) -> float:
    """AdamW peak LR shrinking as 1/sqrt(width): 1.25e-3 at d=256, 7.2e-4 at d=768."""
    return 0.02 / math.sqrt(hidden_size)


class MultiOptimizer:
    """Several optimizers stepped as one (Muon for matrices + AdamW for the rest)."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = list(optimizers)

    @property
    def param_groups(self):
        return [g for o in self.optimizers for g in o.param_groups]

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        for o, s in zip(self.optimizers, state["optimizers"], strict=True):
            o.load_state_dict(s)


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device,
                    hidden_size: int | None = None) -> MultiOptimizer:
    lr = cfg.lr if cfg.lr is not None else default_lr(hidden_size or 768)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    is_embedding = lambda n: "embed_tokens" in n or "lm_head" in n  # noqa: E731
    hidden_matrices = [p for n, p in trainable if p.dim() == 2 and not is_embedding(n)]
    embeddings = [p for n, p in trainable if p.dim() == 2 and is_embedding(n)]
    vectors = [p for n, p in trainable if p.dim() != 2]
    fused = {"fused": True} if device.type == "cuda" else {"foreach": True}
    adam = lambda groups: torch.optim.AdamW(  # noqa: E731
        groups, lr=lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, **fused)
    if cfg.name == "adamw":
        groups = [{"params": hidden_matrices, "weight_decay": cfg.weight_decay},
                  {"params": embeddings + vectors, "weight_decay": 0.0}]
        optimizers = [adam([g for g in groups if g["params"]])]
    else:
        muon = torch.optim.Muon(hidden_matrices, lr=cfg.muon_lr, weight_decay=cfg.weight_decay,
                                adjust_lr_fn="match_rms_adamw")
        groups = [{"params": embeddings + vectors, "weight_decay": 0.0}]
        optimizers = [muon, adam(groups)] if hidden_matrices else [adam(groups)]
    opt = MultiOptimizer(*optimizers)
    for group in opt.param_groups:
        group["peak_lr"] = group["lr"]
    return opt


def lr_multiplier(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Fraction of the peak LR at `step` (0-based) of `total_steps`."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    floor = cfg.min_lr_ratio
    if cfg.schedule == "wsd":
        decay_start = total_steps * (1 - cfg.decay_fraction)
        if step < decay_start:
            return 1.0
        progress = (step - decay_start) / max(1.0, total_steps - decay_start)
        return 1.0 - (1.0 - floor) * min(1.0, progress)
    progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def set_lr(opt: MultiOptimizer, multiplier: float) -> None:
    for group in opt.param_groups:
        group["lr"] = group["peak_lr"] * multiplier
