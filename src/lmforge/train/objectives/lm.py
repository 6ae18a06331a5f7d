"""Next-token prediction: the objective of pretraining and (with masked labels) SFT.

    loss, metrics = lm_objective(model, {"input_ids": x, "labels": y})

Labels equal to -100 are ignored, which is how SFT trains on assistant tokens only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def lm_objective(model, batch: dict) -> tuple[torch.Tensor, dict]:
    logits = model(batch["input_ids"])
    labels = batch["labels"]
    loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
    return loss, {"tokens": (labels != IGNORE_INDEX).sum()}
