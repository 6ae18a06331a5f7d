"""Reward modelling with the Bradley–Terry loss (Ouyang et al. 2022, InstructGPT §3.5).

    rm = RewardModel(trunk, heads=k, pad_id=tok.pad_id)          # model/reward.py
    train(rm, reward_objective(margin=0.0, bootstrap=masks), PreferenceBatches(..., collate=collate_shared_prompt), ...)

A batch (`collate_shared_prompt`) holds one row per pair, the prompt once and each answer
after it, and `pair_index` (which pairs they are). The model gives a score per head;
each head is trained on -log σ(r_chosen - r_rejected - margin) (the margin as in Llama 2,
§3.2.2; 0 = plain Bradley–Terry, which is TRL's RewardTrainer loss). With k > 1 heads and a
bootstrap mask (pairs × heads, 0/1) each head learns from its own resample of the pairs, so
the heads disagree where the data leaves the preference open: an ensemble whose spread is
an uncertainty (Dwaracherla et al. 2024 use it to choose what to label).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmforge.train.objectives.lm import shared_prefix_attention


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Elementwise -log σ(chosen - rejected - margin)."""
    return -F.logsigmoid(chosen - rejected - margin)


def bootstrap_masks(pairs: int, heads: int, seed: int = 0) -> torch.Tensor:
    """(pairs, heads) 0/1: which pairs each head trains on. One head sees every pair; with
    several, each pair goes to each head with probability 1/2 (a double-or-nothing
    bootstrap), and to at least one head, so no pair is wasted."""
    if heads == 1:
        return torch.ones(pairs, 1)
    g = torch.Generator().manual_seed(seed)
    masks = (torch.rand(pairs, heads, generator=g) < 0.5).float()
    unseen = masks.sum(1) == 0
    masks[unseen, torch.randint(heads, (int(unseen.sum()),), generator=g)] = 1.0
    return masks


def preference_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict:
    """Accuracy (ties 0.5) and margin of the ensemble mean; the heads' spread."""
    c, r = chosen.mean(-1), rejected.mean(-1)
    margin = c - r
    spread = torch.cat([chosen, rejected]).std(-1).mean() if chosen.shape[-1] > 1 else torch.zeros(())
    return {"accuracy": ((margin > 0).float() + 0.5 * (margin == 0).float()).mean(),
            "margin": margin.mean(), "score_chosen": c.mean(), "score_rejected": r.mean(),
            "spread": spread}


def reward_objective(margin: float = 0.0, bootstrap: torch.Tensor | None = None):
    """(reward model, batch) -> (loss, metrics); `bootstrap` (pairs, heads) weights each
    head's loss per pair (None: every head sees every pair)."""

    def objective(model, batch: dict) -> tuple[torch.Tensor, dict]:
        chosen, rejected = pair_scores(model, batch)
        losses = bradley_terry_loss(chosen, rejected, margin)  # (B, heads)
        if bootstrap is not None and "pair_index" in batch:
            weights = bootstrap.to(losses.device)[batch["pair_index"]]
            loss = (losses * weights).sum() / weights.sum().clamp(min=1)
        else:
            loss = losses.mean()
        metrics = preference_metrics(chosen.detach(), rejected.detach())
        return loss, {"tokens": (batch["segments"] >= 0).sum(), **metrics}

    return objective


def pair_scores(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """A `collate_shared_prompt` batch -> (chosen, rejected) scores, each (B, heads): one
    forward over rows that hold the shared prompt once."""
    scores = model(batch["input_ids"], score_index=batch["score_index"], positions=batch["positions"],
                   attn_mask=shared_prefix_attention(batch["segments"]))
    return scores[:, 0], scores[:, 1]
