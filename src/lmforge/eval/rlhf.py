"""A policy's answers to held-out prompts, scored by a reward model, and its KL to a reference.

    score = reward_model_scorer(rm, pad_id)              # rows of token ids -> (N,) scores
    answers = answer(policy, prompt_ids, 32, Sampling(1.0), stop_ids, pad_id, seed=0)
    scores = score([p + a for p, a in zip(prompt_ids, answers)])
    kl = sequence_kl(policy, reference, prompt_ids, answers, pad_id)   # (N,) Σ_t log π/π_ref

The KL of answers sampled at temperature 1 is an unbiased estimate of KL(π || π_ref) per
answer (InstructGPT's measure of how far RLHF moved the policy); of greedy answers it is not.
"""

from __future__ import annotations

import torch

from lmforge.infer.engine import Sampling, generate
from lmforge.train.logprobs import ReferenceFn, label_mask, policy_logprobs
from lmforge.train.rollout import pack_completions


def reward_model_scorer(rm, pad_id: int, batch_size: int = 64):
    """fn(rows: list[list[int]]) -> (N,) the reward model's score (its heads' mean) of each whole
    prompt+answer row, as `RolloutSource(score_sequences=...)` takes it."""
    device = next(rm.parameters()).device

    @torch.no_grad()
    def score(rows: list[list[int]]) -> torch.Tensor:
        out = []
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            ids = torch.full((len(chunk), max(map(len, chunk))), pad_id, dtype=torch.long)
            for i, row in enumerate(chunk):
                ids[i, :len(row)] = torch.tensor(row)
            out.append(rm(ids.to(device)).float().mean(-1).cpu())
        return torch.cat(out)

    return score


def answer(policy, prompt_ids: list[list[int]], max_new_tokens: int, sampling: Sampling,
           stop_ids=frozenset(), pad_id: int = 0, seed: int = 0, batch_size: int = 64,
           compile: bool = False) -> list[list[int]]:
    """Each prompt's answer (token ids), drawn from one generator seeded with `seed`."""
    was_training = policy.training
    policy.eval()
    generator = torch.Generator(device=next(policy.parameters()).device).manual_seed(seed)
    answers = []
    for start in range(0, len(prompt_ids), batch_size):
        answers += generate(policy, prompt_ids[start:start + batch_size], max_new_tokens, sampling,
                            stop_ids=stop_ids, pad_id=pad_id, generator=generator, compile=compile).tokens
    policy.train(was_training)
    return answers


@torch.no_grad()
def sequence_kl(policy, reference: ReferenceFn, prompt_ids: list[list[int]], answers: list[list[int]],
                pad_id: int = 0, batch_size: int = 64) -> torch.Tensor:
    """(N,) Σ over each answer's tokens of log π(token) − log π_ref(token)."""
    was_training = policy.training
    policy.eval()
    device = next(policy.parameters()).device
    kls = []
    for start in range(0, len(prompt_ids), batch_size):
        batch = pack_completions(prompt_ids[start:start + batch_size], answers[start:start + batch_size], pad_id)
        x, y = batch["input_ids"].to(device), batch["labels"].to(device)
        kls.append(((policy_logprobs(policy, x, y) - reference(x, y)) * label_mask(y)).sum(-1).float().cpu())
    policy.train(was_training)
    return torch.cat(kls)
