"""Direct Preference Optimization (Rafailov et al. 2023), IPO (Azar et al. 2023), and two
losses without a reference model: SimPO (Meng et al. 2024) and ORPO (Hong et al. 2024).

    objective = dpo_objective(beta=0.1, reference=frozen_reference(model))
    objective = dpo_objective(beta=2.0, loss_type="simpo", simpo_gamma=1.0)   # no reference
    train(model, objective, PreferenceBatches(...), optimizer, ...)

A batch holds chosen and rejected responses padded to one length (`chosen_input_ids`,
`chosen_labels`, `rejected_input_ids`, `rejected_labels`; labels -100 outside the
response). Reference log-probs come either precomputed in the batch (`ref_chosen_logps`,
`ref_rejected_logps`: summed over response tokens) or from `reference(input_ids, labels)`:
a frozen copy for full fine-tuning, the adapter-disabled base for LoRA. SimPO and ORPO need
neither.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from lmforge.train.logprobs import ReferenceFn, label_mask, masked_sum, policy_logprobs

LossType = Literal["sigmoid", "ipo", "simpo", "orpo"]
REFERENCE_FREE = ("simpo", "orpo")  # losses of the policy alone: no reference model at all
# IPO (its §5 experiments), SimPO and ORPO are defined on log-probs averaged over the response.
LENGTH_AVERAGED = ("ipo", "simpo", "orpo")


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
        return _logistic(beta * h, label_smoothing)
    raise ValueError(f"unknown DPO loss type {loss_type!r} (sigmoid | ipo)")


def simpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, beta: float, gamma: float,
               label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-pair SimPO losses (B,) from length-averaged log-probs: -log σ(β (c - r) - γ).

    γ is the target reward margin itself, as in the paper's objective and TRL's `simpo_gamma`
    (CPOTrainer, loss_type="simpo", computes β·(c - r - γ/β)); the authors' code takes the
    ratio γ/β instead (`gamma_beta_ratio`). Label smoothing as in conservative DPO (and TRL)."""
    return _logistic(beta * (policy_chosen - policy_rejected) - gamma, label_smoothing)


def orpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, lam: float) -> torch.Tensor:
    """Per-pair ORPO losses (B,) from length-averaged log-probs c, r (Hong et al. 2024):

        -c + λ · -log σ(log odds(c) - log odds(r)),   log odds(p) = p - log(1 - e^p)

    The odds use the per-token average log-prob, as the paper and TRL's ORPOTrainer do (λ is
    TRL's `beta`). The first term is the paper's SFT loss, the chosen response's NLL per token;
    TRL's trainer takes that NLL over prompt and response tokens, averaged over the batch's
    tokens rather than per response. We follow the paper; the odds-ratio term is TRL's exactly."""
    log_odds = (policy_chosen - policy_rejected) - (_log1mexp(policy_chosen) - _log1mexp(policy_rejected))
    return -policy_chosen - lam * F.logsigmoid(log_odds)


def _logistic(z: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """-log σ(z), with an assumed share ε of flipped labels: -(1-ε) log σ(z) - ε log σ(-z)."""
    return -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - e^x) for x < 0, switching formula at -ln 2 to stay accurate (Mächler 2012)."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def win_rate(margin: torch.Tensor) -> torch.Tensor:
    """Share of pairs with margin > 0, ties counted 0.5: a policy equal to its reference
    (margin 0 everywhere) scores 0.5, a coin flip, not 0."""
    return ((margin > 0).float() + 0.5 * (margin == 0).float()).mean()


def dpo_objective(beta: float = 0.1, loss_type: LossType = "sigmoid",
                  reference: ReferenceFn | None = None, label_smoothing: float = 0.0,
                  simpo_gamma: float = 0.5, orpo_lambda: float = 0.1):
    """(model, batch) -> (loss, metrics). Without `reference`, the batch must carry
    precomputed `ref_chosen_logps` / `ref_rejected_logps` (except for SimPO and ORPO, whose
    rewards are then β · the policy's length-averaged log-probs, SimPO's implicit reward)."""
    if loss_type not in get_args(LossType):
        raise ValueError(f"unknown preference loss {loss_type!r} ({' | '.join(get_args(LossType))})")

    def pair_losses(pc, pr, rc, rr):
        if loss_type == "simpo":
            return simpo_loss(pc, pr, beta, simpo_gamma, label_smoothing)
        if loss_type == "orpo":
            return orpo_loss(pc, pr, orpo_lambda)
        return dpo_loss(pc, pr, rc, rr, beta, loss_type, label_smoothing)

    def objective(model, batch: dict) -> tuple[torch.Tensor, dict]:
        B = batch["chosen_input_ids"].shape[0]
        # One forward over chosen and rejected together: half the kernel launches.
        input_ids = torch.cat([batch["chosen_input_ids"], batch["rejected_input_ids"]])
        labels = torch.cat([batch["chosen_labels"], batch["rejected_labels"]])
        mask = label_mask(labels)
        policy = masked_sum(policy_logprobs(model, input_ids, labels), mask)
        if loss_type in REFERENCE_FREE:
            ref = torch.zeros_like(policy)
        elif "ref_chosen_logps" in batch:
            ref = torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]]).float()
        elif reference is not None:
            ref = masked_sum(reference(input_ids, labels), mask)
        else:
            raise ValueError(f"{loss_type} needs a reference: pass reference= or precompute ref_*_logps")
        tokens = mask.sum(-1)
        scale = tokens.clamp(min=1).float() if loss_type in LENGTH_AVERAGED else torch.ones_like(policy)
        pc, pr = (policy / scale).split(B)
        rc, rr = (ref / scale).split(B)
        loss = pair_losses(pc, pr, rc, rr).mean()
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
