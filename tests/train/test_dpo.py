import json
import math

import pytest
import torch

from lmforge.data.preference import (PreferenceBatches, RenderedPair, collate_pairs,
                                     read_preferences)
from lmforge.errors import InputError
from lmforge.model.transformer import Transformer
from lmforge.runtime import Runtime
from lmforge.train.logprobs import frozen_reference, masked_mean, token_logprobs
from lmforge.train.loop import LoopConfig, train
from lmforge.train.metrics import MetricsLog
from lmforge.train.objectives.dpo import REFERENCE_FREE, dpo_loss, dpo_objective, orpo_loss, simpo_loss
from lmforge.train.optim import OptimConfig, build_optimizer
from tests.conftest import tiny_config


def test_dpo_loss_matches_hand_computation():
    pc, pr = torch.tensor([-5.0, -3.0]), torch.tensor([-7.0, -2.0])
    rc, rr = torch.tensor([-6.0, -3.0]), torch.tensor([-6.0, -3.0])
    # h = (pc - rc) - (pr - rr) = [1 - (-1), 0 - 1] = [2, -1]
    sigmoid = dpo_loss(pc, pr, rc, rr, beta=0.1)
    assert sigmoid.tolist() == pytest.approx([math.log1p(math.exp(-0.2)), math.log1p(math.exp(0.1))])
    smoothed = dpo_loss(pc, pr, rc, rr, beta=0.1, label_smoothing=0.2)
    assert smoothed[0].item() == pytest.approx(0.8 * math.log1p(math.exp(-0.2)) + 0.2 * math.log1p(math.exp(0.2)))
    ipo = dpo_loss(pc, pr, rc, rr, beta=0.1, loss_type="ipo")
    assert ipo.tolist() == pytest.approx([(2 - 5) ** 2, (-1 - 5) ** 2])


def test_simpo_and_orpo_losses_match_hand_computation():
    # length-averaged log-probs; SimPO: -log σ(β (c - r) - γ)
    simpo = simpo_loss(torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0]), beta=2.0, gamma=0.5)
    assert simpo.tolist() == pytest.approx([math.log1p(math.exp(-0.5)), math.log1p(math.exp(2.5))])
    smoothed = simpo_loss(torch.tensor([-1.0]), torch.tensor([-1.5]), beta=2.0, gamma=0.5, label_smoothing=0.1)
    assert smoothed.item() == pytest.approx(0.9 * math.log1p(math.exp(-0.5)) + 0.1 * math.log1p(math.exp(0.5)))
    # ORPO: per-token P(c) = 1/2 (odds 1), P(r) = 1/5 (odds 1/4): log odds ratio log 4
    orpo = orpo_loss(torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.2)]), lam=0.25)
    assert orpo.item() == pytest.approx(math.log(2) + 0.25 * -math.log(4 / 5))
    # accurate where log(1 - e^x) cancels: x near 0 (a response the model is sure of) and very negative
    tiny = orpo_loss(torch.tensor([-1e-6]), torch.tensor([-30.0]), lam=1.0)
    assert tiny.item() == pytest.approx(1e-6 - math.log(1 / (1 + math.exp(-((-1e-6 + 30) - math.log(1e-6))))),
                                        rel=1e-5)


def test_token_logprobs_and_masked_mean():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]]))
    labels = torch.tensor([[0, -100]])
    assert token_logprobs(logits, labels)[0].tolist() == pytest.approx([math.log(0.5), 0.0])
    x, mask = torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[True, True, False]])
    assert masked_mean(x, mask).tolist() == [2.0]
    assert masked_mean(x, torch.zeros_like(mask), None).item() == 0.0


def toy_pairs(n=16, seed=0):
    """Prompt of 4 random tokens; chosen response repeats token 5, rejected token 9."""
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for _ in range(n):
        prompt = torch.randint(10, 100, (4,), generator=g).tolist()
        mask = [False] * 4 + [True] * 3
        pairs.append(RenderedPair(prompt + [5, 5, 5], mask, prompt + [9, 9, 9], mask))
    return pairs


def _dpo_setup(tmp_path, steps, loss_type="sigmoid", precompute=False, seed=0):
    rt = Runtime.setup("cpu", "float32", seed)
    model = Transformer(tiny_config())
    batches = PreferenceBatches(toy_pairs(), batch_size=4, seed=seed)
    reference = None
    if precompute:
        batches.precompute_reference(model)
    elif loss_type not in REFERENCE_FREE:
        reference = frozen_reference(model)
    optim = OptimConfig(lr=1e-2, warmup_steps=0, schedule="constant")
    opt = build_optimizer(model, optim, rt.device)
    loop = LoopConfig(max_steps=steps, log_every_steps=1, progress=False)
    parts = dict(loop=loop, optim=optim, runtime=rt, log=MetricsLog(tmp_path, tensorboard=False))
    return model, dpo_objective(beta=0.5, loss_type=loss_type, reference=reference), batches, opt, parts


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_dpo_steps_raise_the_margin(tmp_path, loss_type):
    model, objective, batches, opt, parts = _dpo_setup(tmp_path, 8, loss_type)
    _, first = objective(model, collate_pairs(toy_pairs(), 0))
    assert first["reward_margin"].item() == pytest.approx(0.0, abs=1e-6)  # policy == reference
    train(model, objective, batches, opt, **parts)
    _, after = objective(model, collate_pairs(toy_pairs(), 0))
    # IPO regresses the per-token margin onto 1/(2β), i.e. a reward margin of 0.5 here.
    assert after["reward_margin"].item() > (0.5 if loss_type == "sigmoid" else 0.2)
    assert after["preference_accuracy"].item() == 1.0
    assert after["logps_chosen"].item() > first["logps_chosen"].item()


@pytest.mark.parametrize("loss_type", REFERENCE_FREE)
def test_reference_free_losses_train_without_a_reference(tmp_path, loss_type):
    model, objective, batches, opt, parts = _dpo_setup(tmp_path, 8, loss_type)
    _, first = objective(model, collate_pairs(toy_pairs(), 0))
    result = train(model, objective, batches, opt, **parts)
    _, after = objective(model, collate_pairs(toy_pairs(), 0))
    assert result.losses[-1] < result.losses[0]
    assert after["reward_margin"].item() > first["reward_margin"].item() + 0.2
    assert after["policy_accuracy"].item() == 1.0
    assert after["logps_chosen"].item() > first["logps_chosen"].item()


def test_precomputed_reference_equals_frozen_copy(tmp_path):
    torch.manual_seed(0)
    a = _dpo_setup(tmp_path / "a", 4, precompute=False)
    b = _dpo_setup(tmp_path / "b", 4, precompute=True)
    ra = train(*a[:4], **a[4])
    rb = train(*b[:4], **b[4])
    assert ra.losses[0] == pytest.approx(math.log(2), abs=1e-6)
    assert ra.losses == pytest.approx(rb.losses, abs=1e-5)


def test_preference_batches_resume_exactly():
    full = PreferenceBatches(toy_pairs(10), batch_size=4, seed=3)
    expected = [next(full)["chosen_input_ids"] for _ in range(6)]
    part = PreferenceBatches(toy_pairs(10), batch_size=4, seed=3)
    [next(part) for _ in range(2)]
    resumed = PreferenceBatches(toy_pairs(10), batch_size=4, seed=3)
    resumed.load_state_dict(part.state_dict())
    for want in expected[2:]:
        assert torch.equal(next(resumed)["chosen_input_ids"], want)


def test_collate_masks_prompt_and_padding():
    pair = RenderedPair([1, 2, 3, 4], [False, False, True, True], [1, 2, 3], [False, False, True])
    batch = collate_pairs([pair], pad_id=0)
    assert batch["chosen_input_ids"].tolist() == [[1, 2, 3]]
    assert batch["chosen_labels"].tolist() == [[-100, 3, 4]]
    assert batch["rejected_input_ids"].tolist() == [[1, 2, 0]]
    assert batch["rejected_labels"].tolist() == [[-100, 3, -100]]


def test_read_preferences_formats_and_errors(tmp_path):
    path = tmp_path / "prefs.jsonl"
    conv = lambda answer: [{"role": "user", "content": "Q"}, {"role": "assistant", "content": answer}]  # noqa: E731
    records = [{"prompt": "Q", "chosen": "good", "rejected": "bad"},
               {"messages": [{"role": "user", "content": "Q"}], "chosen": {"role": "assistant", "content": "good"},
                "rejected": "bad"},
               {"chosen": conv("good"), "rejected": conv("bad")}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    pairs = read_preferences(path)
    assert len(pairs) == 3 and all(p.prompt == pairs[0].prompt for p in pairs)
    assert all(p.chosen["content"] == "good" and p.rejected["content"] == "bad" for p in pairs)
    path.write_text(json.dumps(records[0]) + "\n" + json.dumps({"prompt": "Q", "chosen": "x"}) + "\n{oops\n")
    with pytest.raises(InputError, match=r"prefs.jsonl:2: missing field 'rejected'"):
        read_preferences(path)
    assert len(read_preferences(path, on_error="skip")) == 1


def test_dpo_resume_is_bit_identical(tmp_path):
    from lmforge.stages.common import model_checkpointing
    from tests.train.test_loop import NoTokenizer

    def run(path, steps, resume=False):
        model, objective, batches, opt, parts = _dpo_setup(path, steps, precompute=True)
        ckpt = model_checkpointing(model, NoTokenizer(), path / "model")
        return train(model, objective, batches, opt, **parts, checkpoint=ckpt, resume=resume).losses

    expected = run(tmp_path / "full", 6)
    run(tmp_path / "run", 3)
    assert run(tmp_path / "run", 6, resume=True) == expected[3:]
