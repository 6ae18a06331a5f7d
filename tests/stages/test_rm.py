"""`lmforge rm`: a reward model that learns held-out preferences, loads in transformers with
the same scores, resumes exactly, and turns bad data into a one-line error."""

import json

import pytest
import torch

from lmforge.cli import main
from lmforge.data.preference import RenderedPair, collate_shared_prompt, read_preferences, render_pairs
from lmforge.model.reward import RewardModel, last_token_index, load_reward_model, save_reward_model
from lmforge.model.transformer import Transformer
from lmforge.tokenizer import Tokenizer
from lmforge.train.objectives.reward import bootstrap_masks, bradley_terry_loss, pair_scores
from tests.conftest import tiny_config
from tests.stages.test_dpo_grpo import PAIRS, TEST_PAIRS, tiny_model_dir  # noqa: F401 (fixture)


def _rm(tiny_model_dir, run, *extra):
    assert main(["rm", "--model", str(tiny_model_dir), "--run_dir", str(run), "--data", PAIRS,
                 "--eval_data", TEST_PAIRS, "--batch_size", "16", "--max_len", "64",
                 "--optim.lr", "3e-3", "--optim.warmup_steps", "2", "--tensorboard", "false",
                 "--loop.progress", "false", "--loop.log_every_steps", "1", *extra]) == 0
    return json.loads((run / "summary.json").read_text())


def test_bradley_terry_and_bootstrap():
    loss = bradley_terry_loss(torch.tensor([2.0]), torch.tensor([0.5]), margin=0.5)
    assert loss.item() == pytest.approx(-torch.log(torch.sigmoid(torch.tensor(1.0))).item())
    masks = bootstrap_masks(1000, 4, seed=0)
    assert masks.sum(1).min() >= 1 and 0.45 < masks[:, 0].mean() < 0.65  # every pair used; ~half per head
    assert torch.equal(masks, bootstrap_masks(1000, 4, seed=0))


def test_scores_match_transformers_sequence_classifier(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    rm = RewardModel(Transformer(tiny_config(vocab_size=64)), heads=3, pad_id=5)
    save_reward_model(rm, tmp_path)
    ids = torch.randint(6, 64, (3, 9))
    ids[0, 6:] = 5  # right padding
    ids[1, 8:] = 5
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        ours, theirs = rm(ids), hf(ids).logits
        reloaded = load_reward_model(tmp_path)(ids)
    assert last_token_index(ids, 5).tolist() == [5, 7, 8]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(reloaded, ours, atol=0, rtol=0)


@pytest.mark.slow
def test_rm_stage_beats_the_likelihood_baseline_and_resumes(tiny_model_dir, tmp_path):
    summary = _rm(tiny_model_dir, tmp_path / "rm", "--loop.max_steps", "30", "--ensemble", "2")
    before, after = summary["before"], summary["after"]
    assert summary["pairs"]["held_out"] == 128
    # untrained: a coin flip and the tiny random trunk's likelihood; trained: clearly better
    assert after["eval/accuracy"] > 0.62 > max(before["eval/accuracy"], summary["likelihood_baseline"]["accuracy"])
    assert after["eval/margin"] > before["eval/margin"] and after["eval/spread"] > 0
    rm = load_reward_model(tmp_path / "rm" / "model")
    assert rm.heads == 2

    # killed after 12 steps and resumed == one uninterrupted run of 18 (same final weights)
    # (a constant schedule, so that stopping at 12 is a kill, not a shorter schedule)
    const = ["--optim.schedule", "constant"]
    _rm(tiny_model_dir, tmp_path / "a", "--loop.max_steps", "18", *const)
    _rm(tiny_model_dir, tmp_path / "b", "--loop.max_steps", "12", "--loop.save_every_steps", "6", *const)
    _rm(tiny_model_dir, tmp_path / "b", "--loop.max_steps", "18", "--resume", *const)
    a, b = (load_reward_model(tmp_path / r / "model") for r in "ab")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, atol=0, rtol=0, msg=name)


@pytest.mark.slow
def test_rm_with_lora_resumes_exactly(tiny_model_dir, tmp_path):
    lora = ["--peft", "lora", "--lora.r", "4", "--optim.schedule", "constant"]
    _rm(tiny_model_dir, tmp_path / "a", "--loop.max_steps", "8", *lora)
    _rm(tiny_model_dir, tmp_path / "b", "--loop.max_steps", "4", "--loop.save_every_steps", "4", *lora)
    _rm(tiny_model_dir, tmp_path / "b", "--loop.max_steps", "8", "--resume", *lora)
    a, b = (load_reward_model(tmp_path / r / "model") for r in "ab")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, atol=0, rtol=0, msg=name)


def test_bad_pair_names_file_and_line(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "2+2?", "chosen": "4", "rejected": "5"}\n{"prompt": "3+3?", "chosen": "6"}\n')
    assert main(["rm", "--model", str(tiny_model_dir), "--run_dir", str(tmp_path / "rm"),
                 "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2: missing field 'rejected'" in err


def test_shared_prompt_rows_score_as_separate_sequences(tiny_model_dir):
    """One row per pair (prompt once, each answer attending to it and itself) gives the scores
    of the two whole sequences scored apart, including a side that is a prefix of the other
    and a side that ends in pad tokens (read where transformers reads: the last non-pad)."""
    tok = Tokenizer.from_dir(tiny_model_dir)
    pairs, pad = render_pairs(tok, read_preferences(PAIRS)[:5], 64), tok.pad_id or 0
    p = pairs[0]
    pairs += [RenderedPair(p.chosen_ids, p.chosen_mask, p.chosen_ids + [7, 8], p.chosen_mask + [True, True]),
              RenderedPair(p.chosen_ids + [pad] * 2, p.chosen_mask + [True] * 2, p.rejected_ids, p.rejected_mask)]
    torch.manual_seed(0)
    rm = RewardModel(Transformer(tiny_config(vocab_size=tok.vocab_size)), heads=3, pad_id=pad).eval()
    batch = collate_shared_prompt(pairs, pad)
    assert batch["input_ids"].shape[1] < max(len(q.chosen_ids) + len(q.rejected_ids) for q in pairs)
    chosen, rejected = pair_scores(rm, batch)
    for i, q in enumerate(pairs):
        for side, scores in ((q.chosen_ids, chosen), (q.rejected_ids, rejected)):
            alone = rm(torch.tensor([side]))[0]
            torch.testing.assert_close(scores[i], alone, atol=1e-5, rtol=1e-5)
