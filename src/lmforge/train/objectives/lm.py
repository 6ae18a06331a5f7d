"""Next-token prediction: the objective of pretraining and (with masked labels) SFT.

    loss, metrics = lm_objective(model, {"input_ids": x, "labels": y})

Labels equal to -100 are ignored, which is how SFT trains on assistant tokens only. The
loss goes through the fused head (train/head_loss.py): the (tokens × vocab) logits are
never materialised whole. A batch with `segments` (packed rows, data/sft.py) attends only
within each segment, with positions restarting per segment.
"""

from __future__ import annotations

import torch

from lmforge.train.head_loss import IGNORE_INDEX, model_cross_entropy

__all__ = ["IGNORE_INDEX", "lm_objective", "segment_attention", "shared_prefix_attention"]


def lm_objective(model, batch: dict) -> tuple[torch.Tensor, dict]:
    labels = batch["labels"]
    packing = segment_attention(batch["segments"]) if "segments" in batch else {}
    loss = model_cross_entropy(model, batch["input_ids"], labels, **packing)
    return loss, {"tokens": (labels != IGNORE_INDEX).sum()}


def segment_attention(segments: torch.Tensor) -> dict:
    """segments (B, T) -> the model's `attn_mask` (B, 1, T, T): causal and within a segment
    only, and `positions` (B, T): the index of each token inside its segment."""
    B, T = segments.shape
    idx = torch.arange(T, device=segments.device)
    causal = idx[None, :] <= idx[:, None]
    mask = (segments[:, :, None] == segments[:, None, :]) & causal
    is_start = torch.ones_like(segments, dtype=torch.bool)
    is_start[:, 1:] = segments[:, 1:] != segments[:, :-1]
    start = torch.cummax(torch.where(is_start, idx, 0), dim=1).values
    return {"attn_mask": mask[:, None], "positions": idx - start}


def shared_prefix_attention(segments: torch.Tensor) -> torch.Tensor:
    """segments (B, T): 0 = a prefix the row's continuations share, i > 0 = continuation i,
    -1 = padding -> the model's `attn_mask` (B, 1, T, T): causal, and a continuation's tokens
    see the prefix and their own continuation only. With each continuation's positions
    starting where the prefix ends, every continuation is computed exactly as if it followed
    the prefix alone, the prefix once. A padding query still sees the prefix, so no softmax
    row is empty."""
    T = segments.shape[1]
    causal = torch.ones((T, T), dtype=torch.bool, device=segments.device).tril()
    keys, queries = segments[:, None, :], segments[:, :, None]
    return (causal & ((keys == 0) | (keys == queries)))[:, None]
