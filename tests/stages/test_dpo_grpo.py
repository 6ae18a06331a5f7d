"""Tiny end-to-end runs of `lmforge dpo` and `lmforge grpo` (seconds on CPU)."""

import json

import pytest
import torch

from lmforge.cli import main
from lmforge.model.hub import load_model
from lmforge.model.transformer import ModelConfig, Transformer
from lmforge.rewards.tasks import arithmetic_problems
from lmforge.stages.common import export_model
from lmforge.tokenizer import Tokenizer, train_bpe

PAIRS = "data/preference/arithmetic_pairs.jsonl"


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
def test_dpo_stage_end_to_end(tiny_model_dir, tmp_path, peft):
    run, data = tmp_path / "dpo", tmp_path / "pairs.jsonl"
    data.write_text("".join(open(PAIRS).readlines()[:48]))  # a slice keeps the test fast
    _run(["dpo", "configs/dpo_tiny.yaml", "--model", str(tiny_model_dir), "--run_dir", str(run),
          "--data", str(data),
          "--peft", peft, "--loop.max_steps", "6", "--eval_pairs", "16", "--tensorboard", "false",
          "--optim.lr", "3e-3", "--loop.progress", "false"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 6
    assert summary["after"]["eval/reward_margin"] > summary["before"]["eval/reward_margin"]
    assert (run / "report.md").exists()
    if peft == "lora":
        assert (run / "model" / "adapter_model.safetensors").exists()
        load_model(run / "merged")
    else:
        load_model(run / "model")


@pytest.mark.slow
def test_grpo_stage_end_to_end_and_resume(tiny_model_dir, tmp_path):
    run = tmp_path / "grpo"
    common = ["grpo", "configs/grpo_tiny.yaml", "--model", str(tiny_model_dir), "--run_dir", str(run),
              "--tensorboard", "false", "--task.eval_problems", "8", "--task.train_problems", "16", "--rollout.prompts_per_batch", "2",
              "--rollout.group_size", "4", "--rollout.max_new_tokens", "6", "--kl_coef", "0.05",
              "--loop.progress", "false", "--loop.eval_every_steps", "100"]
    _run(common + ["--loop.max_steps", "2", "--loop.save_every_steps", "1"])
    _run(common + ["--loop.max_steps", "4", "--resume"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 4 and 0 <= summary["accuracy_after"] <= 1
    assert 0 < summary["generate_share"] < 1
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    assert all("train/kl" in r and "train/reward_mean" in r for r in train_rows)
    assert "held-out accuracy" in (run / "report.md").read_text()
