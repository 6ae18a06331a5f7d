"""Rollout source: sample from the current policy, score, and hand the loop a batch.

    source = RolloutSource(policy, prompt_ids, problems, [math_reward], RolloutConfig(),
                           decode=lambda ids: tok.decode(ids, skip_special=True),
                           stop_ids=stop_ids(tok), pad_id=tok.pad_id)
    train(policy, grpo_objective(), source, optimizer, ...)

Each `next()` takes the next `prompts_per_batch` prompts (reshuffled every epoch), samples
`group_size` completions for each with the KV-cache engine, scores every completion with
the reward functions (`fn(text, problem) -> float`, weighted sum), and returns a batch of
tensors: `input_ids`, `labels` (completion tokens; -100 elsewhere), `rewards`,
`advantages` (group-normalised), `old_logps` when a rollout serves several updates,
`ref_logps` when a reference is given, and `metrics` (floats the objective passes on to
the log). Any online objective (GRPO, PPO; RLOO, online DPO later) can consume it.
PPO adds three hooks: `score_sequences` scores whole token rows (a reward model), `critic`
gives per-token values (`values`, B×T), and `targets` replaces the group-normalised
advantages with its own (GAE: per-token `advantages` and `returns`, see objectives/ppo.py);
with `shuffle` each update pass serves the rollout's rows in a new random order, so the
micro-batches are PPO's minibatches, one optimizer step each.
A rollout is generated as one batch (the engine is fastest wide) but trained on in
micro-batches of `micro_batch_size` completions, one per `next()`, so long completions
fit in memory: the GRPO stage sets the loop's gradient accumulation to
`micro_batches_per_rollout`, making one optimizer step per rollout (μ with
`updates_per_rollout`). `state_dict()` holds the prompt position, the sampling generator
and the unserved micro-batches of the current rollout, so a resumed run samples exactly
what the uninterrupted one would have.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable

import torch

from lmforge.infer.engine import Sampling, generate
from lmforge.train.logprobs import ReferenceFn, policy_logprobs
from lmforge.train.objectives.grpo import group_advantages
from lmforge.train.objectives.lm import IGNORE_INDEX


@dataclass
class RolloutConfig:
    group_size: int = 8  # completions sampled per prompt (G)
    prompts_per_batch: int = 8  # prompts per rollout batch (per rank)
    max_new_tokens: int = 64  # completion length cap
    temperature: float = 1.0  # sampling temperature for rollouts
    top_p: float = 1.0  # nucleus sampling for rollouts (1 = off)
    top_k: int = 0  # top-k sampling for rollouts (0 = off)
    scale_advantages: bool = True  # divide by the group's reward std (GRPO); False = Dr. GRPO
    score_truncated: bool = True  # False: a completion cut at max_new_tokens (no stop token) gets reward 0
    updates_per_rollout: int = 1  # optimizer steps per rollout batch (μ in GRPO)
    micro_batch_size: int = 0  # completions per training forward/backward (0 = the whole rollout)
    shuffle: bool = False  # each update pass serves the rows in a new random order (PPO minibatches)
    compile: bool = False  # compiled decode step (one CUDA graph per token on a GPU)


class RolloutSource:
    def __init__(self, policy, prompt_ids: list[list[int]], problems: list[dict],
                 rewards: list[Callable[[str, dict], float]], cfg: RolloutConfig, *,
                 decode: Callable[[list[int]], str], stop_ids=(), pad_id: int = 0,
                 reward_weights: list[float] | None = None, reference: ReferenceFn | None = None,
                 score_sequences: Callable[[list[list[int]]], torch.Tensor] | None = None,
                 critic: ReferenceFn | None = None, targets: Callable[[dict], dict] | None = None,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        if len(prompt_ids) != len(problems) or not prompt_ids:
            raise ValueError("need one problem per prompt, and at least one prompt")
        if not rewards and score_sequences is None:
            raise ValueError("need a reward: reward functions and/or a sequence scorer")
        self.policy, self.cfg, self.decode = policy, cfg, decode
        self.prompt_ids, self.problems = prompt_ids, problems
        self.rewards, self.score_sequences = rewards, score_sequences
        self.weights = reward_weights or [1.0] * (len(rewards) + (score_sequences is not None))
        self.critic, self.targets = critic, targets
        self.reference, self.stop_ids, self.pad_id = reference, set(stop_ids), pad_id
        self.seed, self.rank, self.world_size = seed, rank, world_size
        device = next(policy.parameters()).device
        self.generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + rank)
        self.epoch, self.position = 0, 0
        self.queue: list[dict] = []  # micro-batches of the current rollout not yet served

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if not self.queue:
            self.queue = self._micro_batches(self._rollout())
        return self.queue.pop(0)

    @property
    def micro_batches_per_rollout(self) -> int:
        return len(self._slices())

    def state_dict(self) -> dict:
        state = {"epoch": self.epoch, "position": self.position,
                 "generator": self.generator.get_state(), "queue": list(self.queue)}
        if hasattr(self.targets, "state_dict"):  # e.g. PPO's adaptive KL coefficient
            state["targets"] = self.targets.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        self.generator.set_state(state["generator"])
        self.queue = list(state["queue"])
        if "targets" in state:
            self.targets.load_state_dict(state["targets"])

    def _slices(self) -> list[slice]:
        n = self.cfg.prompts_per_batch * self.cfg.group_size
        size = self.cfg.micro_batch_size or n
        return [slice(i, min(i + size, n)) for i in range(0, n, size)]

    def _micro_batches(self, rollout: dict) -> list[dict]:
        """The rollout's micro-batches, pass after pass. Shuffled passes draw from a seed
        fixed by the rollout's place in the prompt order, so they need no state of their own."""
        if not self.cfg.shuffle:
            return [self._select(rollout, s) for s in self._slices()] * self.cfg.updates_per_rollout
        served = []
        for update in range(self.cfg.updates_per_rollout):
            order = list(range(self.cfg.prompts_per_batch * self.cfg.group_size))
            random.Random(f"{self.seed}:{self.rank}:{self.epoch}:{self.position}:{update}").shuffle(order)
            served += [self._select(rollout, torch.tensor(order[s])) for s in self._slices()]
        return served

    @staticmethod
    def _select(batch: dict, rows: slice | torch.Tensor) -> dict:
        """Rows of a rollout, cut after their last scored column (the rollout is padded to
        its longest completion; a micro-batch need not be)."""
        part = {k: v[rows] if torch.is_tensor(v) else v for k, v in batch.items()}
        scored = (part["labels"] != IGNORE_INDEX).any(0).nonzero()
        width = int(scored[-1]) + 1 if len(scored) else 1
        return {k: v[:, :width] if torch.is_tensor(v) and v.dim() == 2 else v for k, v in part.items()}

    def _next_prompts(self) -> list[int]:
        """Indices of the next prompts: this rank's share of a per-epoch shuffle."""
        picked = []
        while len(picked) < self.cfg.prompts_per_batch:
            order = list(range(len(self.prompt_ids)))
            random.Random(self.seed * 7919 + self.epoch).shuffle(order)
            mine = order[self.rank::self.world_size]
            take = mine[self.position:self.position + self.cfg.prompts_per_batch - len(picked)]
            picked += take
            self.position += len(take)
            if self.position >= len(mine):
                self.epoch, self.position = self.epoch + 1, 0
        return picked

    def _rollout(self) -> dict:
        cfg, G = self.cfg, self.cfg.group_size
        indices = self._next_prompts()
        prompts = [self.prompt_ids[i] for i in indices for _ in range(G)]
        problems = [self.problems[i] for i in indices for _ in range(G)]
        was_training = self.policy.training
        self.policy.eval()
        t0 = time.perf_counter()
        out = generate(self.policy, prompts, cfg.max_new_tokens,
                       Sampling(cfg.temperature, cfg.top_k, cfg.top_p), stop_ids=self.stop_ids,
                       pad_id=self.pad_id, generator=self.generator, compile=cfg.compile)
        generate_seconds = time.perf_counter() - t0
        scores = self._score(prompts, out.tokens, problems)
        rewards = scores @ torch.tensor(self.weights, dtype=torch.float32)
        if not cfg.score_truncated:  # an answer that never ends is no answer (DAPO's overlong penalty)
            rewards = rewards * torch.tensor(out.stopped, dtype=torch.float32)
        batch = pack_completions(prompts, out.tokens, self.pad_id)
        batch.update(rewards=rewards)
        device = next(self.policy.parameters()).device
        # PPO's KL penalty is paid on the sampling policy's log-probs, so a critic needs them.
        reused = cfg.updates_per_rollout > 1 or cfg.shuffle or self.critic is not None
        scorers = {"old_logps": policy_logprobs if reused else None,
                   "ref_logps": (lambda _, x, y: self.reference(x, y)) if self.reference else None,
                   "values": (lambda _, x, y: self.critic(x, y)) if self.critic else None}
        for name, score in scorers.items():
            if score is not None:  # per micro-batch: the same memory bound as training
                with torch.no_grad():
                    batch[name] = torch.cat([
                        score(self.policy, batch["input_ids"][s].to(device), batch["labels"][s].to(device)).cpu()
                        for s in self._slices()])
        self.policy.train(was_training)
        targets = (self.targets(batch) if self.targets else
                   {"advantages": group_advantages(rewards, G, cfg.scale_advantages)})
        metrics = {**self._metrics(scores, rewards, out, generate_seconds), **targets.pop("metrics", {})}
        batch.update(targets, metrics=metrics)
        return batch

    def _score(self, prompts: list[list[int]], completions: list[list[int]], problems: list[dict]) -> torch.Tensor:
        """(N, k) scores: one column per reward function, then the sequence scorer's."""
        texts = [self.decode(t) for t in completions]
        scores = torch.tensor([[fn(text, p) for fn in self.rewards] for text, p in zip(texts, problems)],
                              dtype=torch.float32).view(len(texts), len(self.rewards))
        if self.score_sequences is not None:
            rows = [p + c for p, c in zip(prompts, completions)]
            scores = torch.cat([scores, self.score_sequences(rows).float().cpu().view(len(rows), 1)], 1)
        return scores

    def _metrics(self, scores, rewards, out, generate_seconds: float) -> dict:
        G = self.cfg.group_size
        lengths = torch.tensor([len(t) for t in out.tokens], dtype=torch.float32)
        grouped = rewards.view(-1, G)
        # The first reward is the correctness check by convention (0/1 for math); a sequence
        # scorer (reward model) comes last.
        named = ({"accuracy": float(scores[:, 0].mean())} if self.rewards else {}) | (
            {"sequence_score": float(scores[:, -1].mean())} if self.score_sequences else {})
        return {"reward_mean": float(rewards.mean()),
                "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
                **named,
                "completion_tokens": float(lengths.mean()),
                "truncated_fraction": 1.0 - sum(out.stopped) / len(out.stopped),
                "flat_group_fraction": float((grouped.max(1).values == grouped.min(1).values).float().mean()),
                "generate_seconds": generate_seconds}


def pack_completions(prompts: list[list[int]], completions: list[list[int]], pad_id: int) -> dict:
    """Right-padded prompt+completion rows; labels score the completion tokens only."""
    rows = [p + c for p, c in zip(prompts, completions)]
    T = max(len(r) for r in rows) - 1
    input_ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        row = p + c
        input_ids[i, :len(row) - 1] = torch.tensor(row[:-1])
        labels[i, len(p) - 1:len(row) - 1] = torch.tensor(c)
    return {"input_ids": input_ids, "labels": labels}
