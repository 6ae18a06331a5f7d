"""`lmforge kto` end to end on the tiny model: it learns what held-out prompts show, resumes
exactly, and turns bad data into a one-line error naming file, line and field."""

import json

import pytest
import torch

from lmforge.cli import main
from lmforge.config import ConfigError
from lmforge.model.hub import load_model
from lmforge.stages.policy import reference_kind
from lmforge.train.metrics import read_metrics
from tests.stages.test_dpo_grpo import PAIRS, TEST_PAIRS, tiny_model_dir  # noqa: F401 (fixture)


def _kto(tiny_model_dir, run, *extra):
    assert main(["kto", "configs/kto_tiny.yaml", "--model", str(tiny_model_dir), "--run_dir", str(run),
                 "--tensorboard", "false", "--loop.progress", "false", "--loop.log_every_steps", "1", *extra]) == 0
    return json.loads((run / "summary.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("peft", ["none", "lora"])
def test_kto_stage_separates_held_out_desirable_from_undesirable(tiny_model_dir, tmp_path, peft):
    pairs, held = tmp_path / "pairs.jsonl", tmp_path / "held.jsonl"
    pairs.write_text("".join(open(PAIRS).readlines()[:48]))
    held.write_text("".join(open(TEST_PAIRS).readlines()[:32]))
    summary = _kto(tiny_model_dir, tmp_path / "kto", "--pairs", str(pairs), "--eval_pairs", str(held),
                   "--peft", peft, "--loop.max_steps", "8", "--optim.lr", "3e-3" if peft == "none" else "2e-2")
    assert summary["step"] == 8
    assert summary["examples"] == {"train": {"desirable": 48, "undesirable": 48},
                                   "held_out": {"desirable": 32, "undesirable": 32}}
    before, after = summary["before"], summary["after"]
    # a measured baseline, not 0.5 by construction; afterwards the policy's own likelihood
    # separates the held-out desirable completions from the undesirable ones better
    assert before["eval/separation_auc"] != 0.5
    assert after["eval/separation_auc"] > before["eval/separation_auc"] + 0.05
    assert before["eval/log_ratio_desirable"] == before["eval/log_ratio_undesirable"] == 0  # policy = reference
    assert after["eval/log_ratio_desirable"] > after["eval/log_ratio_undesirable"]
    rows = [r for r in read_metrics(tmp_path / "kto" / "metrics.jsonl") if "train/loss" in r]
    assert rows[0]["train/loss"] == pytest.approx(0.5, abs=1e-4) and rows[-1]["train/loss"] < rows[0]["train/loss"]
    assert rows[-1]["train/kl"] >= 0
    assert "KTO report" in (tmp_path / "kto" / "report.md").read_text()
    load_model(tmp_path / "kto" / ("merged" if peft == "lora" else "model"))


@pytest.mark.slow
def test_kto_stage_resumes_exactly(tiny_model_dir, tmp_path):
    # A constant LR, so that a run told to stop at step 3 trains its first 3 steps like one of 6.
    common = ["--pairs", PAIRS, "--eval_pairs", TEST_PAIRS, "--optim.lr", "3e-3", "--optim.schedule", "constant",
              "--optim.warmup_steps", "0", "--batch_size", "8"]
    _kto(tiny_model_dir, tmp_path / "a", *common, "--loop.max_steps", "6")
    _kto(tiny_model_dir, tmp_path / "b", *common, "--loop.max_steps", "3")
    summary = _kto(tiny_model_dir, tmp_path / "b", *common, "--loop.max_steps", "6", "--resume")
    losses = [[r["train/loss"] for r in read_metrics(tmp_path / d / "metrics.jsonl") if "train/loss" in r]
              for d in "ab"]
    assert summary["step"] == 6 and losses[0] == losses[1]
    a, b = (load_model(tmp_path / d / "model") for d in "ab")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, atol=0, rtol=0, msg=name)


def test_bad_kto_record_names_file_line_and_field(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "2+2?", "completion": "4", "label": true}\n'
                   '{"prompt": "3+3?", "completion": "6", "label": "yes"}\n')
    assert main(["kto", "--model", str(tiny_model_dir), "--run_dir", str(tmp_path / "kto"), "--data", str(bad)]) == 2
    assert "bad.jsonl:2: field 'label' must be true or false" in capsys.readouterr().err
    assert main(["kto", "--model", str(tiny_model_dir), "--run_dir", str(tmp_path / "kto")]) == 2
    assert "needs --data" in capsys.readouterr().err


def test_reference_kind():
    assert reference_kind("auto", "none") == "precompute" and reference_kind("auto", "lora") == "adapter"
    assert reference_kind("auto", "lora", needed=False) == "none"
    with pytest.raises(ConfigError, match="uses no reference"):
        reference_kind("copy", "none", needed=False)
    with pytest.raises(ConfigError, match="compares the policy to a reference"):
        reference_kind("none", "none")
