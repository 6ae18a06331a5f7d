"""Held-out preference pairs, judged two ways: by a language model's own likelihood, and by
a reward model.

    likelihood_preference(model, rendered_pairs, pad_id)   # {"accuracy", "margin", "pairs"}
    reward_model_preference(rm, rendered_pairs, pad_id)    # {"accuracy", "margin", "spread", "pairs"}
    separation_auc(good_scores, bad_scores)                # unpaired (KTO): P(good above bad)

The first is the baseline every preference stage has before it trains: how often the model
already gives the chosen response a higher mean log-probability per token than the rejected
one (length-normalised, so a short answer does not win for being short). It is a measured
number, not 0 or 0.5 by construction, so "before -> after" can come out either way.
"""

from __future__ import annotations

import torch

from lmforge.data.preference import RenderedPair, collate_pairs, collate_shared_prompt
from lmforge.train.logprobs import label_mask, masked_mean, policy_logprobs
from lmforge.train.objectives.reward import pair_scores, preference_metrics


def _chunks(pairs: list[RenderedPair], batch_size: int):
    for start in range(0, len(pairs), batch_size):
        yield pairs[start:start + batch_size]


@torch.no_grad()
def likelihood_preference(model, pairs: list[RenderedPair], pad_id: int, batch_size: int = 16) -> dict:
    if not pairs:
        return {}
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    chosen, rejected = [], []
    for chunk in _chunks(pairs, batch_size):
        batch = collate_pairs(chunk, pad_id)
        for side, out in (("chosen", chosen), ("rejected", rejected)):
            x, y = batch[f"{side}_input_ids"].to(device), batch[f"{side}_labels"].to(device)
            out.append(masked_mean(policy_logprobs(model, x, y), label_mask(y)).float().cpu())
    model.train(was_training)
    metrics = preference_metrics(torch.cat(chosen)[:, None], torch.cat(rejected)[:, None])
    return {"accuracy": float(metrics["accuracy"]), "margin": float(metrics["margin"]), "pairs": len(pairs)}


@torch.no_grad()
def reward_model_preference(rm, pairs: list[RenderedPair], pad_id: int, batch_size: int = 16) -> dict:
    if not pairs:
        return {}
    was_training, device = rm.training, next(rm.parameters()).device
    rm.eval()
    chosen, rejected = [], []
    for chunk in _chunks(pairs, batch_size):
        c, r = pair_scores(rm, {k: v.to(device) for k, v in collate_shared_prompt(chunk, pad_id).items()})
        chosen.append(c.cpu())
        rejected.append(r.cpu())
    rm.train(was_training)
    metrics = preference_metrics(torch.cat(chosen), torch.cat(rejected))
    return {**{k: float(metrics[k]) for k in ("accuracy", "margin", "spread")}, "pairs": len(pairs)}


def separation_auc(good: torch.Tensor, bad: torch.Tensor) -> float:
    """How often a random good example scores above a random bad one, ties 1/2 (the ROC AUC,
    Mann–Whitney U / (n·m)): the unpaired counterpart of pair accuracy. Compares all n·m
    combinations, fine for held-out sets of thousands; NaN when either side is empty."""
    if not len(good) or not len(bad):
        return float("nan")
    above = (good[:, None] > bad[None, :]).float().mean()
    ties = (good[:, None] == bad[None, :]).float().mean()
    return float(above + 0.5 * ties)
