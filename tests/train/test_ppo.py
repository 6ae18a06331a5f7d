"""PPO's pieces on hand-computed examples, and a few PPO steps on a tiny model through the one
loop and the shared rollout source."""

import math

import pytest
import torch

from lmforge.model.reward import RewardModel
from lmforge.model.transformer import Transformer
from lmforge.runtime import Runtime
from lmforge.train.logprobs import frozen_reference
from lmforge.train.loop import LoopConfig, train
from lmforge.train.metrics import MetricsLog, read_metrics
from lmforge.train.objectives.grpo import grpo_loss
from lmforge.train.objectives.ppo import (ActorCritic, AdaptiveKL, PPOTargets, clipped_value_loss, gae,
                                          ppo_objective, token_rewards, whiten)
from lmforge.train.optim import OptimConfig, build_optimizer
from lmforge.train.rollout import RolloutConfig, RolloutSource
from tests.conftest import tiny_config
from tests.train.test_grpo import _decode


def close(actual: torch.Tensor, expected) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), atol=1e-6, rtol=1e-5)


def test_gae_on_a_hand_computed_example():
    # row 0: three completion tokens; row 1: a prompt position, two completion tokens, padding
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0], [9.0, 0.0, 2.0, 5.0]])
    values = torch.tensor([[0.5, 0.4, 0.6, 3.0], [9.0, 1.0, 1.5, 7.0]])
    mask = torch.tensor([[True, True, True, False], [False, True, True, False]])
    adv, ret = gae(rewards[:1], values[:1], mask[:1], gamma=1.0, lam=0.5)
    # δ = [0 + 0.4 - 0.5, 0 + 0.6 - 0.4, 1 + 0 - 0.6] = [-0.1, 0.2, 0.4]; A_t = δ_t + 0.5·A_{t+1}
    assert adv[0].tolist() == pytest.approx([0.1, 0.4, 0.4, 0.0])
    assert ret[0].tolist() == pytest.approx([0.6, 0.8, 1.0, 0.0])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=1.0)
    # row 1: δ_2 = 2 - 1.5 = 0.5 (the episode ends: no value after it), δ_1 = 0.9·1.5 - 1 = 0.35,
    # A_1 = 0.35 + 0.9·0.5; the prompt and the padding get nothing
    assert adv[1].tolist() == pytest.approx([0.0, 0.8, 0.5, 0.0])
    assert ret[1].tolist() == pytest.approx([0.0, 1.8, 2.0, 0.0])


def test_token_rewards_put_the_score_on_the_last_token_and_kl_on_every_token():
    mask = torch.tensor([[False, True, True, False], [False, True, True, True]])
    log_ratio = torch.full((2, 4), 0.5) * mask
    r = token_rewards(torch.tensor([1.0, -2.0]), log_ratio, mask, kl_coef=0.1)
    close(r, [[0, -0.05, 0.95, 0], [0, -0.05, -0.05, -2.05]])


def test_whitening_uses_only_the_masked_in_tokens():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    w = whiten(x, torch.tensor([[True, True, True, False]]))
    s = math.sqrt(2 / 3)  # population std of 1, 2, 3
    close(w, [[-1 / s, 0.0, 1 / s, 0.0]])


def test_clipped_value_loss_on_a_hand_example():
    values = torch.tensor([[1.0, -0.1]], requires_grad=True)
    old, returns, mask = torch.zeros(1, 2), torch.tensor([[2.0, -1.0]]), torch.ones(1, 2, dtype=torch.bool)
    loss, stats = clipped_value_loss(values, old, returns, mask, clip=0.2)
    # token 0: V moved 1.0 from 0, clipped to 0.2: max((1-2)², (0.2-2)²) = 3.24; token 1 inside: 0.81
    assert loss.item() == pytest.approx(0.5 * (3.24 + 0.81) / 2)
    assert stats["value_clip_fraction"].item() == pytest.approx(0.5)
    loss.backward()  # the clipped token passes no gradient; the other ½·2·(V-R)/2
    close(values.grad, [[0.0, 0.45]])


def test_clipped_policy_loss_with_per_token_advantages():
    logps = torch.zeros(1, 2, requires_grad=True)
    old = torch.log(torch.tensor([[1 / 1.5, 2.0]]))  # ratios 1.5 and 0.5
    adv = torch.tensor([[1.0, -2.0]])
    loss, stats = grpo_loss(logps, old, adv, torch.ones(1, 2, dtype=torch.bool), clip_eps=0.2)
    # min(1.5·1, 1.2·1) = 1.2; min(0.5·-2, 0.8·-2) = -1.6 (the pessimistic side): -(1.2 - 1.6)/2
    assert loss.item() == pytest.approx(0.2)
    assert stats["clip_fraction"].item() == pytest.approx(1.0)
    loss.backward()
    close(logps.grad, [[0.0, 0.0]])  # both outside the trust region


def test_adaptive_kl_controller_moves_towards_its_target():
    kl = AdaptiveKL(0.1, target=6.0, horizon=100)
    kl.update(12.0, n_samples=10)  # twice the target: error clipped to +0.2 -> ×(1 + 0.2·10/100)
    assert kl.value == pytest.approx(0.102)
    kl.update(3.0, n_samples=10)  # half: error -0.5 clipped to -0.2
    assert kl.value == pytest.approx(0.102 * 0.98)
    kl.update(6.0, n_samples=10)
    assert kl.value == pytest.approx(0.102 * 0.98)
    restored = AdaptiveKL(0.1, target=6.0, horizon=100)
    restored.load_state_dict(kl.state_dict())
    assert restored.value == kl.value
    fixed = AdaptiveKL(0.1)
    fixed.update(100.0, 10_000)
    assert fixed.value == 0.1


def test_ppo_targets_whiten_and_adapt_beta():
    mask = torch.tensor([[False, True, True], [False, True, False]])
    batch = {"labels": torch.where(mask, 1, -100), "rewards": torch.tensor([1.0, 0.0]),
             "old_logps": torch.tensor([[0.0, -1.0, -1.0], [0.0, -1.0, 0.0]]),
             "ref_logps": torch.tensor([[0.0, -2.0, -2.0], [0.0, -1.5, 0.0]]),
             "values": torch.zeros(2, 3)}
    targets = PPOTargets(AdaptiveKL(0.1, target=1.0, horizon=10), gamma=1.0, lam=1.0)
    out = targets(batch)
    assert out["metrics"]["kl"] == pytest.approx((2.0 + 0.5) / 2)  # Σ_t log π/π_ref, averaged
    assert out["metrics"]["kl_coef"] == pytest.approx(0.1)
    assert targets.kl.value == pytest.approx(0.1 * (1 + 0.2 * 2 / 10))  # KL 1.25 > target 1
    # returns with V = 0, γ = λ = 1: the reward still to come, KL penalties included
    close(out["returns"], [[0, 0.8, 0.9], [0, -0.05, 0]])
    adv = out["advantages"][mask]
    assert adv.mean().item() == pytest.approx(0.0, abs=1e-6) and adv.std(unbiased=False).item() == pytest.approx(1.0)


def low_token_score(rows):
    """A stand-in reward model: the share of each row's last 6 tokens below 32."""
    return torch.tensor([sum(t < 32 for t in r[-6:]) / 6 for r in rows])


def _ppo_parts(tmp_path, steps: int, seed: int = 0):
    rt = Runtime.setup("cpu", "float32", seed)
    torch.manual_seed(seed)
    policy = Transformer(tiny_config())
    ac = ActorCritic(policy, RewardModel(policy, heads=1))  # a value head on the policy's trunk
    targets = PPOTargets(AdaptiveKL(0.05, target=2.0, horizon=100))
    rc = RolloutConfig(group_size=2, prompts_per_batch=4, max_new_tokens=6, micro_batch_size=4,
                       updates_per_rollout=2, shuffle=True)
    source = RolloutSource(policy, [[1, 10 + i, 20 + i] for i in range(8)], [{}] * 8, [], rc, decode=_decode,
                           stop_ids={0}, reference=frozen_reference(policy), score_sequences=low_token_score,
                           critic=lambda x, y: ac.values(x), targets=targets, seed=seed)
    optim = OptimConfig(lr=2e-2, warmup_steps=0, schedule="constant")
    loop = LoopConfig(max_steps=steps, log_every_steps=1, progress=False)
    parts = dict(loop=loop, optim=optim, runtime=rt, log=MetricsLog(tmp_path, tensorboard=False))
    return ac, source, build_optimizer(ac, optim, rt.device), parts


def test_shuffled_minibatches_cover_the_rollout_once_per_epoch_and_resume(tmp_path):
    ac, source, _, _ = _ppo_parts(tmp_path, 1)
    served = [next(source) for _ in range(4)]  # 8 completions, minibatches of 4, 2 epochs
    assert all(b["input_ids"].shape[0] == 4 and b["advantages"].dim() == 2 for b in served)
    def rows(batches):  # (prompt, completion) of every row served
        return sorted((int(x[1]), tuple(y[y != -100].tolist())) for b in batches
                      for x, y in zip(b["input_ids"], b["labels"]))
    first, second = served[:2], served[2:]
    assert rows(first) == rows(second)  # each epoch serves every completion once
    assert not torch.equal(first[0]["input_ids"], second[0]["input_ids"]) or \
        not torch.equal(first[1]["input_ids"], second[1]["input_ids"])  # in a new order
    assert {"kl", "kl_coef", "sequence_score"} <= set(served[0]["metrics"]) and "accuracy" not in served[0]["metrics"]
    next(source)  # the next rollout's first minibatch
    saved = source.state_dict()
    want = [next(source)["input_ids"] for _ in range(5)]  # crosses into a third rollout
    _, resumed, _, _ = _ppo_parts(tmp_path, 1)
    resumed.load_state_dict(saved)
    assert resumed.targets.kl.value == saved["targets"]["kl"]["value"] != 0.05  # β is part of the state
    assert all(torch.equal(next(resumed)["input_ids"], w) for w in want)


def test_ppo_steps_raise_a_toy_sequence_score(tmp_path):
    ac, source, opt, parts = _ppo_parts(tmp_path, 24)
    train(ac, ppo_objective(vf_coef=0.5), source, opt, **parts)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    scores = [r["train/sequence_score"] for r in rows]
    assert sum(scores[-4:]) / 4 > sum(scores[:4]) / 4 + 0.15
    assert rows[-1]["train/kl"] > 0 and rows[-1]["train/kl_coef"] != 0.05  # β adapted
    assert {"train/value_loss", "train/approx_kl", "train/value_clip_fraction"} <= set(rows[0])
