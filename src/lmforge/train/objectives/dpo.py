"""Direct Preference Optimization (Rafailov et al. 2023) and IPO (Azar et al. 2023).

    objective = dpo_objective(beta=0.1, reference=frozen_reference(model))
    train(model, objective, PreferenceBatches(...), optimizer, ...)

A batch holds chosen and rejected responses padded to one length (`chosen_input_ids`,
`chosen_labels`, `rejected_input_ids`, `rejected_labels`; labels -100 outside the
response). Reference log-probs come either precomputed in the batch (`ref_chosen_logps`,
`ref_rejected_logps`: summed over response tokens) or from `reference(input_ids, labels)`:
a frozen copy for full fine-tuning, the adapter-disabled base for LoRA.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from lmforge.train.logprobs import ReferenceFn, label_mask, masked_sum, policy_logprobs

LossType = Literal["sigmoid", "ipo"]


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
             ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float,
             loss_type: LossType = "sigmoid", label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-pair losses (B,) from response log-probs (B,) under the policy and the reference.

    h = (log π(c) - log π_ref(c)) - (log π(r) - log π_ref(r))
    sigmoid: -log σ(β h)  (with label smoothing ε: conservative DPO, -(1-ε)logσ(βh) - ε logσ(-βh))
    ipo:     (h - 1/(2β))², on length-averaged log-probs (the caller averages, as in IPO).
    """
    h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    if loss_type == "ipo":
        return (h - 1 / (2 * beta)) ** 2
    if loss_type == "sigmoid":
        return -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    raise ValueError(f"unknown DPO loss type {loss_type!r} (sigmoid | ipo)")


def win_rate(margin: torch.Tensor) -> torch.Tensor:
    """Share of pairs with margin > 0, ties counted 0.5: a policy equal to its reference
    (margin 0 everywhere) scores 0.5, a coin flip, not 0."""
    return ((margin > 0).float() + 0.5 * (margin == 0).float()).mean()


def dpo_objective(beta: float = 0.1, loss_type: LossType = "sigmoid",
                  reference: ReferenceFn | None = None, label_smoothing: float = 0.0):
    """(model, batch) -> (loss, metrics). Without `reference`, the batch must carry
    precomputed `ref_chosen_logps` / `ref_rejected_logps`."""

    def objective(model, batch: dict) -> tuple[torch.Tensor, dict]:
        B = batch["chosen_input_ids"].shape[0]
        # One forward over chosen and rejected together: half the kernel launches.
        input_ids = torch.cat([batch["chosen_input_ids"], batch["rejected_input_ids"]])
        labels = torch.cat([batch["chosen_labels"], batch["rejected_labels"]])
        mask = label_mask(labels)
        policy = masked_sum(policy_logprobs(model, input_ids, labels), mask)
        if "ref_chosen_logps" in batch:
            ref = torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]]).float()
        elif reference is not None:
            ref = masked_sum(reference(input_ids, labels), mask)
        else:
            raise ValueError("DPO needs a reference: pass reference= or precompute ref_*_logps")
        tokens = mask.sum(-1)
        # IPO's loss is defined on log-probs averaged over the response (its §5 experiments).
        scale = tokens.clamp(min=1).float() if loss_type == "ipo" else torch.ones_like(policy)
        pc, pr = (policy / scale).split(B)
        rc, rr = (ref / scale).split(B)
        loss = dpo_loss(pc, pr, rc, rr, beta, loss_type, label_smoothing).mean()
        reward_chosen, reward_rejected = beta * (pc - rc).detach(), beta * (pr - rr).detach()
        margin = reward_chosen - reward_rejected
        return loss, {"tokens": tokens.sum(),
                      "rewards_chosen": reward_chosen.mean(),
                      "rewards_rejected": reward_rejected.mean(),
                      "reward_margin": margin.mean(),
                      "preference_accuracy": win_rate(margin),  # implicit reward
                      "policy_accuracy": win_rate((pc - pr).detach()),  # no reference involved
                      "logps_chosen": pc.detach().mean(),
                      "logps_rejected": pr.detach().mean()}

    return objective
