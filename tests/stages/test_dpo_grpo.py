"""Tiny end-to-end runs of `lmforge dpo` and `lmforge grpo` (seconds on CPU)."""

import json
import math

import pytest
import torch

from lmforge.cli import main
from lmforge.model.hub import load_model
from lmforge.model.transformer import ModelConfig, Transformer
from lmforge.rewards.tasks import arithmetic_problems
from lmforge.stages.common import export_model
from lmforge.train.metrics import read_metrics
from lmforge.tokenizer import Tokenizer, train_bpe

PAIRS = "data/preference/arithmetic_pairs.jsonl"
TEST_PAIRS = "data/preference/arithmetic_pairs_test.jsonl"


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A byte-level BPE tokenizer (with our chat template) and a random 2-layer model."""
    texts = [p["messages"][0]["content"] + " " + p["solution"]
             for p in arithmetic_problems(500, seed=0, split="all")]
    tok = Tokenizer.from_trained(train_bpe(texts * 4, vocab_size=400, show_progress=False))
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=448, hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=2, num_attention_heads=2,
                                    num_key_value_heads=2, head_dim=16, max_position_embeddings=256))
    out = tmp_path_factory.mktemp("tiny") / "model"
    export_model(model, tok, out)
    return out


def _run(argv):
    assert main(argv) == 0


@pytest.mark.slow
@pytest.mark.parametrize("peft", ["none", "lora"])
def test_dpo_stage_learns_and_never_trains_on_held_out_prompts(tiny_model_dir, tmp_path, peft):
    run, data, held = tmp_path / "dpo", tmp_path / "pairs.jsonl", tmp_path / "held.jsonl"
    train_lines, held_lines = open(PAIRS).readlines()[:48], open(TEST_PAIRS).readlines()[:32]
    # 8 exact repeats and 4 pairs whose prompt is held out (reworded in case and spacing):
    # both are dropped from training, so 48 pairs remain.
    leaked = [json.dumps({**json.loads(line), "prompt": json.loads(line)["prompt"].upper() + "  "}) + "\n"
              for line in held_lines[:4]]
    data.write_text("".join(train_lines + train_lines[:8] + leaked))
    held.write_text("".join(held_lines))
    _run(["dpo", "configs/dpo_tiny.yaml", "--model", str(tiny_model_dir), "--run_dir", str(run),
          "--data", str(data), "--eval_data", str(held), "--peft", peft, "--loop.max_steps", "8",
          "--tensorboard", "false", "--optim.lr", "3e-3" if peft == "none" else "2e-2", "--loop.progress", "false",
          "--loop.log_every_steps", "1"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 8 and summary["pairs"] == {"train": 48, "held_out": 32}
    before, after = summary["before"], summary["after"]
    assert before["eval/preference_accuracy"] == 0.5  # policy = reference: every margin is 0, a tie
    losses = [r["train/loss"] for r in read_metrics(run / "metrics.jsonl") if "train/loss" in r]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4) and losses[-1] < 0.65  # it learns
    # on unseen prompts the policy's own preference moves towards the chosen answers
    assert after["eval/policy_accuracy"] > before["eval/policy_accuracy"]
    assert after["eval/reward_margin"] > 0.02
    assert (run / "report.md").exists()
    if peft == "lora":
        assert (run / "model" / "adapter_model.safetensors").exists()
        load_model(run / "merged")
    else:
        load_model(run / "model")


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", ["simpo", "orpo"])
def test_reference_free_dpo_stage_learns_without_a_reference(tiny_model_dir, tmp_path, loss_type):
    run, data, held = tmp_path / loss_type, tmp_path / "pairs.jsonl", tmp_path / "held.jsonl"
    data.write_text("".join(open(PAIRS).readlines()[:48]))
    held.write_text("".join(open(TEST_PAIRS).readlines()[:32]))
    _run(["dpo", "configs/dpo_tiny.yaml", "--model", str(tiny_model_dir), "--run_dir", str(run),
          "--data", str(data), "--eval_data", str(held), "--loss_type", loss_type, "--beta", "2",
          "--loop.max_steps", "8", "--tensorboard", "false", "--optim.lr", "3e-3", "--loop.progress", "false"])
    summary = json.loads((run / "summary.json").read_text())
    before, after = summary["before"], summary["after"]
    # no reference: the rewards are β · length-averaged log-probs, so the margin starts where
    # the model is (not at 0) and grows; the held-out loss falls
    assert before["eval/reward_margin"] != 0
    assert after["eval/reward_margin"] > before["eval/reward_margin"] + 0.1
    assert after["eval/loss"] < before["eval/loss"]
    if loss_type == "simpo":
        assert after["eval/policy_accuracy"] > before["eval/policy_accuracy"]
    title = {"simpo": "SimPO", "orpo": "ORPO"}[loss_type]
    assert f"# {title} report" in (run / "report.md").read_text()


@pytest.mark.slow
def test_grpo_stage_raises_its_reward_and_resumes(tiny_model_dir, tmp_path):
    run = tmp_path / "grpo"
    common = ["grpo", "configs/grpo_tiny.yaml", "--model", str(tiny_model_dir), "--run_dir", str(run),
              "--tensorboard", "false", "--task.eval_problems", "8", "--task.train_problems", "16",
              "--rewards", "tests.stages.test_dpo_grpo:digit_share", "--rollout.prompts_per_batch", "4",
              "--rollout.group_size", "4", "--rollout.max_new_tokens", "6", "--kl_coef", "0.05",
              "--rollout.score_truncated", "true", "--optim.lr", "1e-2",
              "--loop.progress", "false", "--loop.eval_every_steps", "100"]
    _run(common + ["--loop.max_steps", "4", "--loop.save_every_steps", "2"])
    _run(common + ["--loop.max_steps", "10", "--resume"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 10 and summary["eval_split"] == "test"
    assert 0 < summary["generate_share"] < 1
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 11))
    # The first reward doubles as held-out "accuracy": greedy answers went from no digits to
    # mostly digits, so the policy learned, across the resume.
    assert summary["accuracy_before"] < 0.2 and summary["accuracy_after"] > 0.7
    assert summary["completion_tokens_before"] >= 0 and summary["completion_tokens_after"] > 0  # held-out lengths (the untrained policy may stop at once)
    assert all("train/kl" in r for r in train_rows) and train_rows[-1]["train/kl"] > 0
    report = (run / "report.md").read_text()
    assert "held-out accuracy (test split" in report and "blind baselines" in report


def digit_share(completion: str, example: dict) -> float:
    """A dense toy reward a random policy can learn in a few steps: the share of digits."""
    return sum(c.isdigit() for c in completion) / max(1, len(completion))
