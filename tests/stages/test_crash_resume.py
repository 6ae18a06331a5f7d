"""Every training stage survives kill -9: a subprocess running the stage is killed at a
seeded random step (or in the middle of writing a checkpoint), `--resume` finishes it, and
the final weights and the logged loss sequence are bit-identical to an uninterrupted run.

The uninterrupted and resumed runs go in-process; only the killed one is its own process
(started by a fork server, with this process's thread count, so CPU reductions add up in the
same order).
`python tests/stages/crash_runner.py FAULT -- ARGS` kills a fresh interpreter the same way."""

import multiprocessing
import random
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmforge.cli import main
from lmforge.train.checkpoint import find_checkpoint
from lmforge.train.metrics import read_metrics
from tests.stages import crash_runner
from tests.stages.test_dpo_grpo import PAIRS, TEST_PAIRS, tiny_model_dir  # noqa: F401 (fixture)
from tests.stages.test_spin import chat_slice, spin_args  # noqa: F401 (fixture)

MAX_STEPS, SAVE_EVERY = 6, 2
COMMON = ["--tensorboard", "false", "--loop.progress", "false", "--loop.log_every_steps", "1",
          "--loop.save_every_steps", str(SAVE_EVERY), "--device", "cpu"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash_corpus")
    (root / "docs.jsonl").write_text("".join(
        f'{{"id": "{i}", "text": "Document {i}. The whale swam {i % 7} miles north; call me Ishmael."}}\n' for i in range(200)))
    assert main(["tokenizer", "train", "--input", str(root / "docs.jsonl"), "--output", str(root / "tok"),
                 "--vocab_size", "300"]) == 0
    assert main(["tokenize", "--input", str(root / "docs.jsonl"), "--tokenizer", str(root / "tok"),
                 "--output", str(root / "shards"), "--val_fraction", "0.1"]) == 0
    return root / "shards"


def stage_args(stage: str, run: Path, inputs: dict) -> list[str]:
    """A tiny run of each stage, MAX_STEPS optimizer steps (SPIN: per iteration)."""
    tiny, chat, steps = str(inputs["tiny"]), str(inputs["chat_model"]), ["--loop.max_steps", str(MAX_STEPS)]
    pairs, held = str(inputs["pairs"]), str(inputs["held"])
    pref = ["--model", tiny, "--data", pairs, "--eval_data", held, "--batch_size", "8", "--max_len", "64"]
    if stage == "spin":  # spin_args merges options by name: no repeats
        return ["spin", *spin_args(inputs["chat_model"], inputs["chat_slice"], run, "--loop.max_steps", "3",
                                   "--temperature", "0.7", "--max_new_tokens", "8", "--max_prompts", "24",
                                   "--eval_prompts", "4", *COMMON)]
    args = {
        "pretrain": ["pretrain", "--data.shards", str(inputs["shards"]), "--depth", "1", "--data.seq_len", "32",
                     "--data.batch_size", "4", "--eval.every_steps", "3", "--eval.sample_tokens", "4", *steps],
        "sft": ["sft", "--model", chat, "--data.train", str(inputs["chat_file"]), "--data.batch_size", "4",
                "--data.seq_len", "64", "--optim.lr", "3e-3", "--eval.every_steps", "3", "--eval.sample_tokens", "4",
                "--peft", "lora", "--lora.r", "4", "--lora.dropout", "0.1", *steps],
        "dpo": ["dpo", "configs/dpo_tiny.yaml", *pref, "--optim.lr", "3e-3", *steps],
        "kto": ["kto", "configs/kto_tiny.yaml", "--model", tiny, "--pairs", pairs, "--eval_pairs", held,
                "--batch_size", "8", "--optim.lr", "3e-3", *steps],
        "rm": ["rm", *pref, "--ensemble", "2", "--optim.lr", "3e-3", *steps],
        "grpo": ["grpo", "configs/grpo_tiny.yaml", "--model", tiny, "--task.eval_problems", "4",
                 "--task.train_problems", "16", "--rewards", "tests.stages.test_dpo_grpo:digit_share",
                 "--rollout.prompts_per_batch", "4", "--rollout.group_size", "4", "--rollout.max_new_tokens", "6",
                 "--rollout.updates_per_rollout", "2", "--loop.eval_every_steps", "100", *steps],
        "ppo": ["ppo", *pref[:6], "--eval_prompts", "8", "--rewards", "tests.stages.test_dpo_grpo:digit_share",
                "--value_model", "policy", "--rollout.max_new_tokens", "6", "--rollout.group_size", "2",
                "--rollout.prompts_per_batch", "4", "--minibatch_size", "4", "--ppo_epochs", "2",
                "--optim.lr", "1e-2", *steps],
    }[stage]
    return [*args, "--run_dir", str(run), *COMMON]


STAGES = ["pretrain", "sft", "dpo", "kto", "rm", "spin", "grpo", "ppo"]


@pytest.fixture(scope="module")
def inputs(shards, tiny_model_dir, chat_model_dir, chat_file, chat_slice, tmp_path_factory):  # noqa: F811
    data = tmp_path_factory.mktemp("crash_pairs")
    (data / "pairs.jsonl").write_text("".join(open(PAIRS).readlines()[:32]))
    (data / "held.jsonl").write_text("".join(open(TEST_PAIRS).readlines()[:8]))
    return {"shards": shards, "tiny": tiny_model_dir, "chat_model": chat_model_dir, "chat_file": chat_file,
            "chat_slice": chat_slice, "pairs": data / "pairs.jsonl", "held": data / "held.jsonl"}


@pytest.fixture(scope="module")
def straight(inputs, tmp_path_factory):
    """The uninterrupted run of a stage, made once per module: (weights, logged losses)."""
    done = {}

    def run(stage: str):
        if stage not in done:
            run_dir = tmp_path_factory.mktemp(f"straight_{stage}")
            assert main(stage_args(stage, run_dir, inputs)) == 0
            done[stage] = outcome(run_dir)
        return done[stage]
    return run


def outcome(run_dir: Path) -> tuple[dict, list]:
    """Every tensor of the final model (and critic) and each (metrics file, step, loss) logged."""
    weights = {f"{f.name}:{k}": v for f in sorted((run_dir / "model").glob("*.safetensors"))
               for k, v in load_file(str(f)).items()}
    losses = [(str(m.parent.relative_to(run_dir)), r["step"], r["train/loss"])
              for m in sorted(run_dir.rglob("metrics.jsonl")) for r in read_metrics(m) if "train/loss" in r]
    return weights, losses


def run_killed(fault: str, argv: list[str]) -> None:
    """kill -9 a child process running `lmforge ARGV` at `fault` (see crash_runner). Children
    fork from a server that imported torch and lmforge once and ran nothing (forking a process
    whose OpenMP pool is running can hang): a fresh process without seconds of start-up each."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "lmforge.cli", "tests.stages.crash_runner"])
    child = ctx.Process(target=crash_runner.run, args=(fault, argv, torch.get_num_threads()))
    child.start()
    child.join(timeout=300)
    if child.exitcode is None:
        child.kill()
    assert child.exitcode == -signal.SIGKILL, f"expected kill -9, got exit code {child.exitcode}"


def assert_same(resumed: tuple, straight: tuple) -> None:
    (w_resumed, l_resumed), (w_straight, l_straight) = resumed, straight
    assert l_resumed == l_straight  # the logged loss sequence, bit for bit
    assert w_resumed.keys() == w_straight.keys() and w_straight
    for k in w_straight:
        assert torch.equal(w_resumed[k], w_straight[k]), k


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_killed_at_a_random_step_resumes_bit_identically(stage, inputs, straight, tmp_path):
    total = 2 * 3 if stage == "spin" else MAX_STEPS  # SPIN: 2 iterations of 3 steps
    kill_after = random.Random(f"crash-{stage}").randrange(1, total)
    run = tmp_path / "run"
    run_killed(f"step={kill_after}", stage_args(stage, run, inputs))
    logged = outcome(run)[1]
    assert len(logged) >= kill_after - 1 and len(logged) < total  # it died mid-run
    assert main(stage_args(stage, run, inputs) + ["--resume", "true"]) == 0
    assert_same(outcome(run), straight(stage))


@pytest.mark.slow
@pytest.mark.parametrize("stage,where", [("pretrain", "weights"), ("sft", "rename"), ("ppo", "rename")])
def test_killed_while_writing_a_checkpoint_keeps_the_previous_one(stage, where, inputs, straight, tmp_path):
    run = tmp_path / "run"
    run_killed(f"save=2:{where}", stage_args(stage, run, inputs))  # the save at step 4
    ckpt_dir = run / "model"
    found = find_checkpoint(ckpt_dir)
    assert found == (ckpt_dir if where == "weights" else Path(str(ckpt_dir) + ".old"))
    assert '"step": 2' in (found / "trainer_state" / "state.json").read_text()
    assert main(stage_args(stage, run, inputs) + ["--resume", "true"]) == 0
    assert not Path(str(ckpt_dir) + ".tmp").exists() and not Path(str(ckpt_dir) + ".old").exists()
    assert_same(outcome(run), straight(stage))
