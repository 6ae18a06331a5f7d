"""Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath §4.1).

    source = RolloutSource(policy, prompts, rewards, group_size=8, ...)   # train/rollout.py
    train(policy, grpo_objective(clip_eps=0.2, kl_coef=0.0), source, optimizer, ...)

The rollout source samples G completions per prompt from the current policy, scores them,
and turns rewards into group-normalised advantages (`group_advantages`). A batch holds
`input_ids`, `labels` (-100 outside the completion), `advantages` (B,), optionally
`old_logps` (B, T; when a rollout is reused for several updates), `ref_logps` (B, T; when
the KL term is on) and `metrics` (rollout statistics, passed through to the log).
"""

from __future__ import annotations

from typing import Literal

import torch

from lmforge.train.logprobs import label_mask, masked_mean, masked_sum, policy_logprobs

LossNorm = Literal["token", "sequence"]


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True,
                     eps: float = 1e-4) -> torch.Tensor:
    """(P·G,) rewards, grouped consecutively by prompt -> (P·G,) advantages r - mean(group),
    divided by the group's std when `scale` (GRPO); Dr. GRPO (Liu et al. 2025) drops the
    division, which otherwise up-weights nearly-solved and nearly-hopeless prompts."""
    grouped = rewards.float().view(-1, group_size)
    centred = grouped - grouped.mean(1, keepdim=True)
    if scale and group_size > 1:
        centred = centred / (grouped.std(1, keepdim=True) + eps)
    return centred.flatten()


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, clip_eps: float = 0.2, clip_eps_high: float | None = None,
              ref_logps: torch.Tensor | None = None, kl_coef: float = 0.0,
              loss_norm: LossNorm = "token") -> tuple[torch.Tensor, dict]:
    """The clipped surrogate (PPO) per token, plus β·KL.

    logps/old_logps/ref_logps/mask: (B, T); advantages: (B,) per completion, or (B, T) per
    token (PPO's GAE). "token" normalisation averages over all completion tokens in the
    batch (DAPO, Yu et al. 2025), so long answers are not down-weighted per token;
    "sequence" averages within each completion first, as in the original GRPO.
    """
    ratio = torch.exp(logps - old_logps)
    adv = advantages[:, None] if advantages.dim() == 1 else advantages
    high = clip_eps if clip_eps_high is None else clip_eps_high
    unclipped, clipped = ratio * adv, ratio.clamp(1 - clip_eps, 1 + high) * adv
    per_token = -torch.minimum(unclipped, clipped)
    stats = {"clip_fraction": masked_mean((clipped < unclipped).float(), mask, None).detach()}
    if ref_logps is not None:
        # k3 estimator of KL(π || π_ref) (Schulman 2020): unbiased, always >= 0.
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1
        stats["kl"] = masked_mean(kl, mask, None).detach()
        if kl_coef:
            per_token = per_token + kl_coef * kl
    if loss_norm == "token":
        loss = masked_mean(per_token, mask, None)
    elif loss_norm == "sequence":
        loss = masked_mean(per_token, mask, -1).mean()
    else:
        raise ValueError(f"unknown loss_norm {loss_norm!r} (token | sequence)")
    return loss, stats


def grpo_objective(clip_eps: float = 0.2, clip_eps_high: float | None = None,
                   kl_coef: float = 0.0, loss_norm: LossNorm = "token"):
    def objective(model, batch: dict) -> tuple[torch.Tensor, dict]:
        labels = batch["labels"]
        mask = label_mask(labels)
        logps = policy_logprobs(model, batch["input_ids"], labels)
        # One update per rollout: the sampling policy is the current one, so old = detached
        # current (ratio 1, clipping inactive); a reused rollout carries its own old_logps.
        old = batch.get("old_logps")
        old = logps.detach() if old is None else old
        loss, stats = grpo_loss(logps, old, batch["advantages"], mask, clip_eps, clip_eps_high,
                                batch.get("ref_logps"), kl_coef, loss_norm)
        rollout = batch.get("metrics", {})
        return loss, {"tokens": mask.sum(), **stats, **rollout,
                      "seq_logp": (masked_sum(logps, mask) / mask.sum(-1).clamp(min=1)).mean().detach()}

    return objective
