"""Next-token prediction: the objective of pretraining and (with masked labels) SFT.

    loss, metrics = lm_objective(model, {"input_ids": x, "labels": y})

Labels equal to -100 are ignored, which is how SFT trains on assistant tokens only. The
loss goes through the fused head (train/head_loss.py): the (tokens × vocab) logits are
never materialised whole.
"""

from __future__ import annotations

import torch

from lmforge.train.head_loss import IGNORE_INDEX, model_cross_entropy

__all__ = ["IGNORE_INDEX", "lm_objective"]


def lm_objective(model, batch: dict) -> tuple[torch.Tensor, dict]:
    labels = batch["labels"]
    loss = model_cross_entropy(model, batch["input_ids"], labels)
    return loss, {"tokens": (labels != IGNORE_INDEX).sum()}
