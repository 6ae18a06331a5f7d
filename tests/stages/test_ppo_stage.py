"""`lmforge ppo` end to end on a tiny model: it raises a reward on held-out prompts, resumes
exactly (policy and critic), runs with LoRA and a value head, and a bad config is a one-line error."""

import json

import pytest
import torch
from safetensors.torch import load_file

from lmforge.cli import main
from lmforge.model.hub import load_model, read_safetensors
from lmforge.model.reward import RewardModel, save_reward_model
from lmforge.model.transformer import Transformer
from lmforge.tokenizer import Tokenizer
from tests.stages.test_dpo_grpo import PAIRS, TEST_PAIRS, tiny_model_dir  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def reward_model_dir(tiny_model_dir, tmp_path_factory):
    """A random reward model on the policy's tokenizer (a stand-in for an `lmforge rm` output)."""
    tok = Tokenizer.from_dir(tiny_model_dir)
    torch.manual_seed(1)
    rm = RewardModel(Transformer(load_model(tiny_model_dir).config), heads=1, pad_id=tok.pad_id or 0)
    out = tmp_path_factory.mktemp("rm") / "model"
    save_reward_model(rm, out, tok)
    return out


def _ppo(tiny_model_dir, run, *extra) -> dict:
    assert main(["ppo", "--model", str(tiny_model_dir), "--run_dir", str(run), "--data", PAIRS,
                 "--eval_data", TEST_PAIRS, "--eval_prompts", "24", "--rollout.max_new_tokens", "6",
                 "--rollout.group_size", "2", "--rollout.prompts_per_batch", "8", "--minibatch_size", "8",
                 "--ppo_epochs", "2", "--optim.lr", "1e-2", "--optim.warmup_steps", "0",
                 "--optim.schedule", "constant", "--tensorboard", "false", "--loop.progress", "false",
                 "--loop.log_every_steps", "1", *extra]) == 0
    return json.loads((run / "summary.json").read_text())


def test_ppo_raises_a_verifiable_reward_on_held_out_prompts(tiny_model_dir, tmp_path):
    # 10 rollouts of 16 answers, 2 epochs of 2 minibatches each (seeds 0, 1, 2 all reach 0.5+)
    summary = _ppo(tiny_model_dir, tmp_path / "ppo", "--rewards", "tests.stages.test_dpo_grpo:digit_share",
                   "--value_model", "policy", "--kl_coef", "0.01", "--target_kl", "1", "--loop.max_steps", "40")
    before, after = summary["before"], summary["after"]
    assert summary["step"] == 40 and summary["prompts"]["held_out"] == 24
    assert before["kl"] == pytest.approx(0.0, abs=1e-5)  # the policy is its reference
    # answers to unseen prompts turn to digits (sampled: 0.04 -> 0.5), with a bounded KL
    assert after["accuracy_sampled"] > before["accuracy_sampled"] + 0.25
    assert after["accuracy"] > before["accuracy"]
    assert 0 < after["kl"] < 20
    assert summary["final_kl_coef"] != 0.01  # adapted towards the target KL
    report = (tmp_path / "ppo" / "report.md").read_text()
    assert "# PPO report" in report and "held-out (24 prompts) before -> after" in report


def test_ppo_with_a_reward_model_resumes_exactly(tiny_model_dir, reward_model_dir, tmp_path):
    rm = ["--reward_model", str(reward_model_dir), "--value_model", "reward"]
    a = _ppo(tiny_model_dir, tmp_path / "a", *rm, "--loop.max_steps", "6")
    # killed mid-rollout (each rollout serves 2 epochs × 2 minibatches = 4 steps), then resumed
    _ppo(tiny_model_dir, tmp_path / "b", *rm, "--loop.max_steps", "3", "--loop.save_every_steps", "3")
    b = _ppo(tiny_model_dir, tmp_path / "b", *rm, "--loop.max_steps", "6", "--resume")
    for name in ("model.safetensors", "critic.safetensors"):
        x, y = (load_file(str(tmp_path / r / "model" / name)) for r in "ab")
        assert x.keys() == y.keys()
        for k in x:
            torch.testing.assert_close(x[k], y[k], atol=0, rtol=0, msg=f"{name}: {k}")
    assert "score.weight" in load_file(str(tmp_path / "a" / "model" / "critic.safetensors"))
    assert a["after"] == b["after"]  # the same held-out scores, KL and samples
    assert {"rm_score_greedy", "rm_score_sampled", "kl"} <= set(a["after"]) and a["after"]["kl"] > 0
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == list(range(1, 7))


def test_ppo_with_lora_and_a_value_head(tiny_model_dir, reward_model_dir, tmp_path):
    run = tmp_path / "lora"
    summary = _ppo(tiny_model_dir, run, "--reward_model", str(reward_model_dir), "--value_model", "head",
                   "--peft", "lora", "--lora.r", "4", "--loop.max_steps", "4")
    assert summary["step"] == 4 and summary["after"]["kl"] != 0
    assert (run / "model" / "adapter_model.safetensors").exists()
    assert list(load_file(str(run / "model" / "critic.safetensors"))) == ["score.weight"]  # the head only
    read_safetensors(run / "merged")  # a plain model directory with the adapter merged


def test_ppo_without_a_reward_is_a_one_line_error(tiny_model_dir, tmp_path, capsys):
    assert main(["ppo", "--model", str(tiny_model_dir), "--run_dir", str(tmp_path / "x"),
                 "--data", PAIRS]) == 2
    assert "ppo needs a reward: --reward_model DIR" in capsys.readouterr().err
    assert main(["ppo", "--model", str(tiny_model_dir), "--run_dir", str(tmp_path / "x"),
                 "--data", PAIRS, "--rewards", "math"]) == 2  # the default critic comes from a reward model
    assert "value_model=reward initialises the critic from the reward model" in capsys.readouterr().err
    assert main(["ppo", "--model", str(tiny_model_dir), "--run_dir", str(tmp_path / "x"), "--data", PAIRS,
                 "--rewards", "math", "--value_model", "head", "--rollout.updates_per_rollout", "4"]) == 2
    assert "set ppo_epochs and minibatch_size" in capsys.readouterr().err
