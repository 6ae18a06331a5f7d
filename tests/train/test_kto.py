import math

import pytest
import torch

from lmforge.data.kto import KTOBatches, RenderedExample, collate_examples, with_mismatched
from lmforge.model.transformer import Transformer
from lmforge.runtime import Runtime
from lmforge.train.logprobs import frozen_reference, label_mask, masked_sum, policy_logprobs
from lmforge.train.loop import LoopConfig, train
from lmforge.train.metrics import MetricsLog
from lmforge.train.objectives.kto import kto_loss, kto_objective
from lmforge.train.optim import OptimConfig, build_optimizer
from tests.conftest import tiny_config

sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731


def test_kto_loss_matches_hand_computation():
    policy, ref = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -4.0])  # r = [1, -1]
    desirable = torch.tensor([True, False])
    losses = kto_loss(policy, ref, desirable, torch.tensor(0.5), beta=0.5, undesirable_weight=2.0)
    assert losses.tolist() == pytest.approx([1 - sigmoid(0.5 * (1 - 0.5)), 2 * (1 - sigmoid(0.5 * (0.5 + 1)))])


def toy_examples(n=16, seed=0):
    """Prompt of 4 random tokens; desirable completions repeat token 5, undesirable ones token 9."""
    g = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(n):
        prompt = torch.randint(10, 100, (4,), generator=g).tolist()
        token = 5 if i % 2 == 0 else 9
        examples.append(RenderedExample(prompt + [token] * 3, [False] * 4 + [True] * 3, i % 2 == 0))
    return with_mismatched(examples, max_len=64, seed=seed)


def test_reference_point_is_the_clamped_mean_log_ratio_of_mismatched_sequences(tiny_model):
    batch = collate_examples(toy_examples(4), pad_id=0)
    objective = kto_objective(beta=0.1)
    with torch.no_grad():
        policy_kl = masked_sum(policy_logprobs(tiny_model, batch["kl_input_ids"], batch["kl_labels"]),
                               label_mask(batch["kl_labels"]))
        policy = masked_sum(policy_logprobs(tiny_model, batch["input_ids"], batch["labels"]),
                            label_mask(batch["labels"]))
    # the reference below the policy on the mismatched sequences by 0.3 on average: z0 = 0.3
    shifts = torch.tensor([0.1, 0.2, 0.4, 0.5])
    _, metrics = objective(tiny_model, {**batch, "ref_logps": policy, "ref_kl_logps": policy_kl - shifts})
    assert metrics["kl"].item() == pytest.approx(0.3, abs=1e-5)
    # above it: a negative estimate is clamped to 0; policy = reference: every loss is 1 - σ(0)
    loss, metrics = objective(tiny_model, {**batch, "ref_logps": policy, "ref_kl_logps": policy_kl + shifts})
    assert metrics["kl"].item() == 0 and loss.item() == pytest.approx(0.5)
    assert metrics["reward_margin"].item() == pytest.approx(0.0, abs=1e-6)


def _kto_setup(tmp_path, steps, precompute=True, seed=0):
    rt = Runtime.setup("cpu", "float32", seed)
    model = Transformer(tiny_config())
    batches = KTOBatches(toy_examples(), batch_size=4, seed=seed)
    reference = None
    if precompute:
        batches.precompute_reference(model)
    else:
        reference = frozen_reference(model)
    optim = OptimConfig(lr=1e-2, warmup_steps=0, schedule="constant")
    opt = build_optimizer(model, optim, rt.device)
    loop = LoopConfig(max_steps=steps, log_every_steps=1, progress=False)
    parts = dict(loop=loop, optim=optim, runtime=rt, log=MetricsLog(tmp_path, tensorboard=False))
    return model, kto_objective(beta=0.5, reference=reference), batches, opt, parts


def test_kto_steps_separate_desirable_from_undesirable(tmp_path):
    model, objective, batches, opt, parts = _kto_setup(tmp_path, 8, precompute=False)
    batch = collate_examples(toy_examples(), 0)
    first, before = objective(model, batch)
    assert first.item() == pytest.approx(0.5) and before["reward_margin"].item() == pytest.approx(0, abs=1e-6)
    result = train(model, objective, batches, opt, **parts)
    last, after = objective(model, batch)
    assert last.item() < 0.4 and result.losses[-1] < result.losses[0]
    assert after["rewards_desirable"].item() > 0 > after["rewards_undesirable"].item()


def test_precomputed_reference_equals_frozen_copy(tmp_path):
    a = _kto_setup(tmp_path / "a", 4, precompute=False)
    b = _kto_setup(tmp_path / "b", 4, precompute=True)
    assert train(*a[:4], **a[4]).losses == pytest.approx(train(*b[:4], **b[4]).losses, abs=1e-5)


def test_kto_resume_is_bit_identical(tmp_path):
    from lmforge.stages.common import model_checkpointing
    from tests.train.test_loop import NoTokenizer

    def run(path, steps, resume=False):
        model, objective, batches, opt, parts = _kto_setup(path, steps)
        ckpt = model_checkpointing(model, NoTokenizer(), path / "model")
        return train(model, objective, batches, opt, **parts, checkpoint=ckpt, resume=resume).losses

    expected = run(tmp_path / "full", 6)
    run(tmp_path / "run", 3)
    assert run(tmp_path / "run", 6, resume=True) == expected[3:]
