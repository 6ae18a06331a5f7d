"""PPO with a critic, as InstructGPT ran it (Ouyang et al. 2022; Ziegler et al. 2019).

    ac = ActorCritic(policy, critic)                 # critic: a RewardModel (value head or own trunk)
    targets = PPOTargets(AdaptiveKL(0.05, target=6.0), gamma=1.0, lam=0.95)
    source = RolloutSource(policy, ..., reference=ref, critic=lambda x, y: ac.values(x),
                           score_sequences=reward_model_scores, targets=targets)   # train/rollout.py
    train(ac, ppo_objective(clip_eps=0.2, value_clip=0.2, vf_coef=0.1), source, optimizer, ...)

At rollout time `PPOTargets` turns each completion into per-token rewards — the sequence
reward (reward-model score and/or verifiable rewards) on its last token, minus β·(log π_old −
log π_ref) on every token — then GAE (γ, λ) against the critic's values gives advantages
(whitened over the rollout) and returns. The rollout source serves the rollout for several
epochs of shuffled minibatches; the objective is the clipped surrogate (shared with GRPO)
plus the clipped value loss. β is fixed, or adapted after each rollout towards a target KL.
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.train.logprobs import label_mask, masked_mean, policy_logprobs
from lmforge.train.objectives.grpo import grpo_loss


class ActorCritic(nn.Module):
    """The policy and its critic as one module, so the loop, optimizer, clipping and DDP see
    both. The critic is a `RewardModel`: a value head on the policy's own trunk (shared), or
    a trunk of its own; its heads' mean is the value."""

    def __init__(self, policy: nn.Module, critic: nn.Module):
        super().__init__()
        self.policy, self.critic = policy, critic

    @property
    def config(self):
        return self.policy.config

    def values(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T): V of the prefix ending at each position, aligned with the labels (the value
        of the state in which `labels[:, t]` is chosen)."""
        return self.critic.token_scores(input_ids).mean(-1)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return policy_logprobs(self.policy, input_ids, labels), self.values(input_ids)


class AdaptiveKL:
    """β, the weight of the per-token KL penalty. With target > 0 it follows Ziegler et al.
    (2019, §2.2): β ← β·(1 + clip(KL/target − 1, ±0.2)·n/horizon) after each rollout of n
    completions; target 0 keeps β fixed."""

    def __init__(self, value: float, target: float = 0.0, horizon: int = 10_000):
        self.value, self.target, self.horizon = value, target, horizon

    def update(self, kl: float, n_samples: int) -> None:
        if self.target > 0:
            error = min(max(kl / self.target - 1, -0.2), 0.2)
            self.value *= 1 + error * n_samples / self.horizon

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


def token_rewards(scores: torch.Tensor, log_ratio: torch.Tensor, mask: torch.Tensor,
                  kl_coef: float) -> torch.Tensor:
    """(B, T): −β·log(π_old/π_ref) on every completion token, plus the sequence's score (B,)
    on its last one."""
    rewards = -kl_coef * log_ratio * mask
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = (positions * mask).argmax(-1)
    rewards[torch.arange(len(scores)), last] += scores.to(rewards.dtype)
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over each row's completion:
    δ_t = r_t + γ·V_{t+1} − V_t, A_t = δ_t + γλ·A_{t+1}; the value after the last token is 0
    (the episode ends). Returns (advantages, returns = A + V), 0 outside the mask."""
    mask = mask.to(values.dtype)
    values, rewards = values * mask, rewards * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero mean, unit variance over the masked-in entries (0 elsewhere)."""
    mean = masked_mean(x, mask, None)
    var = masked_mean((x - mean) ** 2, mask, None)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor, clip: float = 0.2) -> tuple[torch.Tensor, dict]:
    """½·max((V − R)², (V_clipped − R)²), V_clipped = V_old + clip(V − V_old, ±clip): the
    critic moves at most `clip` from its rollout-time values per update (PPO2, as in
    InstructGPT and TRL)."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    unclipped_err, clipped_err = (values - returns) ** 2, (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_err, clipped_err), mask, None)
    return loss, {"value_clip_fraction": masked_mean((clipped_err > unclipped_err).float(), mask, None).detach()}


class PPOTargets:
    """A scored rollout (rewards, old_logps, ref_logps, values, labels) -> per-token
    `advantages` and `returns` for `ppo_objective`, and the rollout's KL statistics. Holds β,
    so its state is part of the rollout source's checkpoint."""

    def __init__(self, kl: AdaptiveKL, gamma: float = 1.0, lam: float = 0.95, whiten_advantages: bool = True):
        self.kl, self.gamma, self.lam, self.whiten_advantages = kl, gamma, lam, whiten_advantages

    def __call__(self, batch: dict) -> dict:
        mask = label_mask(batch["labels"])
        log_ratio = (batch["old_logps"] - batch["ref_logps"]) * mask
        beta = self.kl.value
        rewards = token_rewards(batch["rewards"], log_ratio, mask, beta)
        advantages, returns = gae(rewards, batch["values"], mask, self.gamma, self.lam)
        if self.whiten_advantages:
            advantages = whiten(advantages, mask)
        # KL(π || π_ref) per completion, estimated on the samples (Σ_t log π/π_ref)
        kl = float(log_ratio.sum(-1).mean())
        self.kl.update(kl, len(rewards))
        return {"advantages": advantages, "returns": returns,
                "metrics": {"kl": kl, "kl_coef": beta, "kl_penalty": -beta * kl,
                            "value_mean": float(masked_mean(batch["values"], mask, None)),
                            "return_mean": float(masked_mean(returns, mask, None))}}

    def state_dict(self) -> dict:
        return {"kl": self.kl.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.kl.load_state_dict(state["kl"])


def ppo_objective(clip_eps: float = 0.2, value_clip: float = 0.2, vf_coef: float = 0.1):
    def objective(model, batch: dict) -> tuple[torch.Tensor, dict]:
        labels = batch["labels"]
        mask = label_mask(labels)
        logps, values = model(batch["input_ids"], labels)
        policy_loss, stats = grpo_loss(logps, batch["old_logps"], batch["advantages"], mask, clip_eps)
        value_loss, value_stats = clipped_value_loss(values, batch["values"], batch["returns"], mask, value_clip)
        # how far this update has moved the policy from the one that sampled (k3, ≥ 0)
        delta = batch["old_logps"] - logps.detach()
        approx_kl = masked_mean(torch.exp(delta) - delta - 1, mask, None)
        return policy_loss + vf_coef * value_loss, {
            "tokens": mask.sum(), "policy_loss": policy_loss.detach(), "value_loss": value_loss.detach(),
            "approx_kl": approx_kl, **stats, **value_stats, **batch.get("metrics", {})}

    return objective
