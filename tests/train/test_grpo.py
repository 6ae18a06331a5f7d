import math

import pytest
import torch

from lmforge.model.transformer import Transformer
from lmforge.runtime import Runtime
from lmforge.stages.common import model_checkpointing
from lmforge.train.logprobs import frozen_reference
from lmforge.train.loop import LoopConfig, train
from lmforge.train.metrics import MetricsLog, read_metrics
from lmforge.train.objectives.grpo import group_advantages, grpo_loss, grpo_objective
from lmforge.train.optim import OptimConfig, build_optimizer
from lmforge.train.rollout import RolloutConfig, RolloutSource
from tests.conftest import tiny_config
from tests.train.test_loop import NoTokenizer


def test_group_advantages_on_fixed_rewards():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0])
    adv = group_advantages(rewards, group_size=3, eps=0.0)
    # group 1: mean 1/3, unbiased std sqrt(1/3); group 2: mean 4/3, std sqrt(4/3)
    s1, s2 = math.sqrt(1 / 3), math.sqrt(4 / 3)
    expected = [2 / 3 / s1, -1 / 3 / s1, -1 / 3 / s1, -4 / 3 / s2, 2 / 3 / s2, 2 / 3 / s2]
    assert adv.tolist() == pytest.approx(expected)
    assert group_advantages(rewards, 3, scale=False).tolist() == pytest.approx(
        [2 / 3, -1 / 3, -1 / 3, -4 / 3, 2 / 3, 2 / 3])
    assert group_advantages(torch.ones(4), 2).tolist() == [0.0] * 4  # flat groups: no signal


def test_grpo_loss_on_fixed_values():
    mask = torch.tensor([[True, True, False], [True, False, False]])
    adv = torch.tensor([1.0, -2.0])
    logps = torch.zeros(2, 3)
    # ratio 1: loss = -mean over the 3 completion tokens of A = -(1 + 1 - 2) / 3
    loss, stats = grpo_loss(logps, logps, adv, mask)
    assert loss.item() == pytest.approx(0.0)
    assert stats["clip_fraction"].item() == 0.0
    seq, _ = grpo_loss(logps, logps, adv, mask, loss_norm="sequence")
    assert seq.item() == pytest.approx(-(1.0 + -2.0) / 2)
    # ratios 1.5 (A>0: clipped to 1.2) and 0.5 (A<0: clipped to 0.8, the pessimistic side)
    old = torch.log(torch.tensor([[1 / 1.5, 1.0, 1.0], [2.0, 1.0, 1.0]]))
    loss, stats = grpo_loss(logps, old, adv, mask, clip_eps=0.2)
    assert loss.item() == pytest.approx((-1.2 * 1 - 1.0 * 1 + 0.8 * 2) / 3, rel=1e-5)
    assert stats["clip_fraction"].item() == pytest.approx(2 / 3)
    # KL (k3) to a reference that puts log-prob -1 where the policy has 0: e^-1 + 1 - 1
    ref = torch.full((2, 3), -1.0)
    loss_kl, stats = grpo_loss(logps, logps, adv, mask, ref_logps=ref, kl_coef=0.5)
    assert stats["kl"].item() == pytest.approx(math.exp(-1))
    assert loss_kl.item() == pytest.approx(0.5 * math.exp(-1))


def test_clipped_gradient_vanishes_outside_the_trust_region():
    logps = torch.zeros(1, 2, requires_grad=True)
    old = torch.log(torch.tensor([[0.5, 1.0]]))  # ratio 2 on token 0, 1 on token 1
    loss, _ = grpo_loss(logps, old, torch.tensor([1.0]), torch.ones(1, 2, dtype=torch.bool))
    loss.backward()
    assert logps.grad.tolist() == [[0.0, -0.5]]


def _decode(ids):
    return " ".join(map(str, ids))


def low_token_share(text, problem):
    """Toy verifiable reward: share of completion tokens below the problem's threshold."""
    ids = [int(t) for t in text.split()]
    return sum(t < problem["threshold"] for t in ids) / max(1, len(ids))


def _source(model, seed=0, **cfg):
    prompts = [[1, 10 + i, 20 + i] for i in range(6)]
    problems = [{"threshold": 32} for _ in prompts]
    rc = RolloutConfig(group_size=4, prompts_per_batch=3, max_new_tokens=6, **cfg)
    return RolloutSource(model, prompts, problems, [low_token_share], rc, decode=_decode,
                         stop_ids={0}, pad_id=0, seed=seed)


def test_rollout_batch_shapes_masks_and_resume(tiny_model):
    source = _source(tiny_model, updates_per_rollout=2)
    batch = next(source)
    B, T = batch["input_ids"].shape
    assert B == 12 and batch["labels"].shape == (B, T) and batch["old_logps"].shape == (B, T)
    n_scored = (batch["labels"] != -100).sum(1)
    assert ((n_scored >= 1) & (n_scored <= 6)).all()
    # labels are the completion: the prompt is never scored
    assert (batch["labels"][:, :2] == -100).all()
    grouped = batch["advantages"].view(3, 4)
    assert grouped.sum(1).abs().max() < 1e-5
    m = batch["metrics"]
    assert 0 <= m["accuracy"] <= 1 and m["generate_seconds"] > 0 and 1 <= m["completion_tokens"] <= 6
    assert next(source) is batch  # reused for the second update
    saved = source.state_dict()
    want = [next(source)["input_ids"] for _ in range(4)]
    resumed = _source(tiny_model, updates_per_rollout=2)
    resumed.load_state_dict(saved)
    assert all(torch.equal(next(resumed)["input_ids"], w) for w in want)


def test_rollout_micro_batches_split_one_rollout_and_resume_mid_rollout(tiny_model):
    whole = next(_source(tiny_model, updates_per_rollout=2))
    source = _source(tiny_model, updates_per_rollout=2, micro_batch_size=5)
    assert source.micro_batches_per_rollout == 3  # 12 completions: 5 + 5 + 2
    parts = [next(source) for _ in range(3)]
    assert [p["input_ids"].shape[0] for p in parts] == [5, 5, 2]
    for part, rows in zip(parts, (slice(0, 5), slice(5, 10), slice(10, 12))):
        width = part["labels"].shape[1]  # cut after the part's last scored column
        assert (whole["labels"][rows, width:] == -100).all()
        torch.testing.assert_close(part["advantages"], whole["advantages"][rows])
        for key in ("input_ids", "labels", "old_logps"):
            torch.testing.assert_close(part[key], whole[key][rows, :width])
    assert parts[0]["metrics"] == parts[2]["metrics"]  # one rollout's statistics
    next(source)  # the second update's first micro-batch
    saved = source.state_dict()
    want = [next(source)["input_ids"] for _ in range(5)]  # crosses into the next rollout
    resumed = _source(tiny_model, updates_per_rollout=2, micro_batch_size=5)
    resumed.load_state_dict(saved)
    assert all(torch.equal(next(resumed)["input_ids"], w) for w in want)


def _grpo_parts(tmp_path, steps, kl=False, seed=0, save_every=0):
    rt = Runtime.setup("cpu", "float32", seed)
    model = Transformer(tiny_config())
    ref = frozen_reference(model) if kl else None
    source = _source(model, seed=seed, temperature=1.0)
    source.reference = ref
    optim = OptimConfig(lr=3e-2, warmup_steps=0, schedule="constant")
    opt = build_optimizer(model, optim, rt.device)
    loop = LoopConfig(max_steps=steps, log_every_steps=1, progress=False, save_every_steps=save_every)
    parts = dict(loop=loop, optim=optim, runtime=rt, log=MetricsLog(tmp_path, tensorboard=False),
                 checkpoint=model_checkpointing(model, NoTokenizer(), tmp_path / "model"))
    return model, grpo_objective(kl_coef=0.05 if kl else 0.0), source, opt, parts


def test_grpo_steps_raise_a_toy_reward(tmp_path):
    model, objective, source, opt, parts = _grpo_parts(tmp_path, 16, kl=True)
    train(model, objective, source, opt, **parts)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    rewards = [r["train/reward_mean"] for r in rows]
    assert sum(rewards[-4:]) / 4 > sum(rewards[:4]) / 4 + 0.15
    assert all(r["train/kl"] >= 0 for r in rows) and rows[-1]["train/kl"] > 0
    assert {"train/generate_seconds", "train/completion_tokens", "train/accuracy"} <= set(rows[0])


def test_grpo_resume_is_bit_identical(tmp_path):
    full = _grpo_parts(tmp_path / "full", 6)
    expected = train(*full[:4], **full[4]).losses
    first = _grpo_parts(tmp_path / "run", 3)
    train(*first[:4], **first[4])
    second = _grpo_parts(tmp_path / "run", 6, seed=0)
    resumed = train(*second[:4], **second[4], resume=True)
    assert resumed.losses == expected[3:]


def test_truncated_completions_can_be_given_zero_reward(tiny_model):
    def source(**cfg):  # 8 of 128 tokens stop: some completions end, some are cut
        rc = RolloutConfig(group_size=4, prompts_per_batch=3, max_new_tokens=6, **cfg)
        return RolloutSource(tiny_model, [[1, 10 + i, 20 + i] for i in range(3)], [{"threshold": 64}] * 3,
                             [low_token_share], rc, decode=_decode, stop_ids=set(range(1, 9)), pad_id=0)
    scored, strict = next(source()), next(source(score_truncated=False))
    labels = scored["labels"]
    stopped = ((labels >= 1) & (labels < 9)).any(1).float()  # padding is -100 in labels
    assert 0 < stopped.sum() < len(stopped)
    torch.testing.assert_close(strict["rewards"], scored["rewards"] * stopped)
