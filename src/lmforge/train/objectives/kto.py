"""Kahneman-Tversky Optimization (Ethayarajh et al. 2024): alignment from unpaired
desirable / undesirable completions.

    objective = kto_objective(beta=0.1, reference=adapter_reference(model))   # or precomputed
    train(model, objective, KTOBatches(...), optimizer, ...)

A batch (data/kto.py) holds each completion after its prompt (`input_ids`, `labels`), the
same prompt followed by another example's completion (`kl_input_ids`, `kl_labels`), and
`desirable` (B,) bool. Reference log-probs, summed over the completion, come precomputed
(`ref_logps`, `ref_kl_logps`) or from `reference(input_ids, labels)`.

With r = log π(y|x) - log π_ref(y|x) and z0 the policy's KL to the reference, estimated on
the mismatched sequences (their mean r, clamped at 0, with no gradient, as in the paper),
an example's loss is

    desirable:   w_D (1 - σ(β (r - z0)))
    undesirable: w_U (1 - σ(β (z0 - r)))

averaged over the batch; this is TRL's KTOTrainer (loss_type="kto") as well. We estimate z0
per micro-batch on each rank; TRL also averages it across ranks.
"""

from __future__ import annotations

import torch

from lmforge.train.logprobs import ReferenceFn, label_mask, masked_mean, masked_sum, policy_logprobs


def kto_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, desirable: torch.Tensor, kl: torch.Tensor,
             beta: float, desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> torch.Tensor:
    """Per-example losses (B,) from completion log-probs (B,), labels (B,) bool and z0 (scalar)."""
    r = policy_logps - ref_logps
    return torch.where(desirable, desirable_weight * (1 - torch.sigmoid(beta * (r - kl))),
                       undesirable_weight * (1 - torch.sigmoid(beta * (kl - r))))


def kto_objective(beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
                  reference: ReferenceFn | None = None):
    """(model, batch) -> (loss, metrics). Without `reference`, the batch must carry
    precomputed `ref_logps` / `ref_kl_logps`."""

    def reference_logps(batch: dict, key: str, prefix: str) -> torch.Tensor:
        if key in batch:
            return batch[key].float()
        if reference is None:
            raise ValueError("KTO needs a reference: pass reference= or precompute ref_logps / ref_kl_logps")
        labels = batch[f"{prefix}labels"]
        return masked_sum(reference(batch[f"{prefix}input_ids"], labels), label_mask(labels))

    def objective(model, batch: dict) -> tuple[torch.Tensor, dict]:
        mask = label_mask(batch["labels"])
        policy = masked_sum(policy_logprobs(model, batch["input_ids"], batch["labels"]), mask)
        with torch.no_grad():  # z0 is a constant of the step: no gradient, so no graph either
            policy_kl = masked_sum(policy_logprobs(model, batch["kl_input_ids"], batch["kl_labels"]),
                                   label_mask(batch["kl_labels"]))
            kl = (policy_kl - reference_logps(batch, "ref_kl_logps", "kl_")).mean().clamp(min=0)
        ref = reference_logps(batch, "ref_logps", "")
        desirable = batch["desirable"].bool()
        loss = kto_loss(policy, ref, desirable, kl, beta, desirable_weight, undesirable_weight).mean()
        rewards = beta * (policy - ref).detach()
        # Means over each class in the batch; 0 for a class the batch lacks.
        reward_desirable, reward_undesirable = masked_mean(rewards, desirable), masked_mean(rewards, ~desirable)
        return loss, {"tokens": mask.sum(),
                      "kl": kl,
                      "rewards_desirable": reward_desirable,
                      "rewards_undesirable": reward_undesirable,
                      "reward_margin": reward_desirable - reward_undesirable,
                      "logps_desirable": masked_mean(policy.detach(), desirable),
                      "logps_undesirable": masked_mean(policy.detach(), ~desirable)}

    return objective
