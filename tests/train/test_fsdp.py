"""FSDP2 on 2 CPU processes (gloo): the same training as one process on the whole batch,
`lmforge pretrain --parallel fsdp` resumes exactly from its sharded checkpoint, and every
post-training stage trains under FSDP2 as under DDP."""

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from lmforge.cli import main
from lmforge.config import ConfigError, load_config
from lmforge.model.transformer import Transformer
from lmforge.runtime import Runtime
from lmforge.stages.ppo import PPOConfig
from lmforge.stages.rm import RMConfig
from lmforge.stages.spin import SPINConfig
from lmforge.train.loop import LoopConfig, train
from lmforge.train.metrics import MetricsLog, read_metrics
from lmforge.train.objectives.lm import lm_objective
from lmforge.train.optim import OptimConfig, build_optimizer
from lmforge.train.parallel import full_state_dict, is_sharded, wrap_model
from tests.conftest import ToyBatches, tiny_config
from tests.stages.test_dpo_grpo import PAIRS, TEST_PAIRS, tiny_model_dir  # noqa: F401 (fixture)
from tests.train.test_distributed import STEPS, _halves

pytestmark = pytest.mark.slow


def _join(port: int, rank: int, world: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)


def _train_sharded(rank: int, world: int, out_dir: str, port: int) -> None:
    _join(port, rank, world)
    rt = Runtime.setup("cpu", "float32", seed=0)
    torch.manual_seed(0)  # FSDP2 does not broadcast: every rank starts from the same init
    model = Transformer(tiny_config())
    wrapped = wrap_model(model, rt, parallel="fsdp")
    assert is_sharded(model) and wrapped is model
    optim = OptimConfig(lr=3e-3, warmup_steps=1)
    opt = build_optimizer(model, optim, rt.device)  # after sharding: the optimizer holds the shards
    local = sum(p.to_local().numel() for p in model.parameters())
    result = train(wrapped, lm_objective, _halves(rank, world), opt,
                   loop=LoopConfig(max_steps=STEPS, progress=False), optim=optim, runtime=rt,
                   log=MetricsLog(out_dir, enabled=False))
    state = full_state_dict(model)  # every rank gathers; rank 0 receives
    if rank == 0:
        torch.save({"state": state, "losses": result.losses, "local": local,
                    "total": sum(v.numel() for k, v in state.items() if k != "lm_head.weight")},
                   f"{out_dir}/fsdp.pt")
    dist.destroy_process_group()


def test_fsdp_two_processes_match_single_process(tmp_path):
    mp.spawn(_train_sharded, args=(2, str(tmp_path), 29521), nprocs=2, join=True)
    sharded = torch.load(tmp_path / "fsdp.pt")
    assert sharded["local"] <= sharded["total"] // 2 + 1024  # each rank holds about half

    torch.set_num_threads(1)
    rt = Runtime.setup("cpu", "float32", seed=0)
    torch.manual_seed(0)
    model = Transformer(tiny_config())
    optim = OptimConfig(lr=3e-3, warmup_steps=1)
    result = train(model, lm_objective, ToyBatches(batch_size=8), build_optimizer(model, optim, rt.device),
                   loop=LoopConfig(max_steps=STEPS, progress=False), optim=optim, runtime=rt,
                   log=MetricsLog(tmp_path, enabled=False))
    # Each rank's loss is over its half of the batch: their mean is the whole batch's loss
    # (equal token counts per half), so compare the update the loss produced: the weights.
    for k, v in model.state_dict().items():
        torch.testing.assert_close(sharded["state"][k], v, atol=2e-5, rtol=1e-4, msg=k)
    assert len(sharded["losses"]) == len(result.losses) == STEPS


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp_corpus")
    (root / "docs.jsonl").write_text("".join(json.dumps(
        {"id": str(i), "text": f"Document {i}. The whale swam {i % 7} miles north; call me Ishmael."}) + "\n"
        for i in range(300)))
    assert main(["tokenizer", "train", "--input", str(root / "docs.jsonl"), "--output", str(root / "tok"),
                 "--vocab_size", "300"]) == 0
    assert main(["tokenize", "--input", str(root / "docs.jsonl"), "--tokenizer", str(root / "tok"),
                 "--output", str(root / "shards"), "--val_fraction", "0.1"]) == 0
    return root / "shards"


def _lmforge(rank: int, world: int, argv: list[str], port: int) -> None:
    _join(port, rank, world)
    assert main(argv) == 0
    dist.destroy_process_group()


def _pretrain_args(shards: Path, run: Path, steps: int) -> list[str]:
    # A constant learning rate: a run stopped at step 2 and resumed to 4 follows the same
    # schedule as the straight 4-step run.
    return ["pretrain", "--data.shards", str(shards), "--run_dir", str(run), "--depth", "2",
            "--data.seq_len", "32", "--data.batch_size", "2", "--optim.schedule", "constant",
            "--optim.warmup_steps", "0", "--loop.max_steps", str(steps), "--loop.save_every_steps", "2",
            "--loop.log_every_steps", "1", "--eval.every_steps", "2", "--eval.sample_tokens", "4",
            "--parallel", "fsdp", "--device", "cpu", "--tensorboard", "false", "--loop.progress", "false"]


def test_pretrain_fsdp_resumes_exactly_from_its_sharded_checkpoint(shards, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    mp.spawn(_lmforge, args=(2, _pretrain_args(shards, straight, 4), 29522), nprocs=2, join=True)
    mp.spawn(_lmforge, args=(2, _pretrain_args(shards, resumed, 2), 29523), nprocs=2, join=True)
    optimizer_dir = resumed / "model" / "trainer_state" / "optimizer"
    assert sorted(p.name for p in optimizer_dir.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    mp.spawn(_lmforge, args=(2, _pretrain_args(shards, resumed, 4) + ["--resume", "true"], 29524),
             nprocs=2, join=True)

    losses = [[(r["step"], r["train/loss"]) for r in read_metrics(run / "metrics.jsonl") if "train/loss" in r]
              for run in (straight, resumed)]
    assert losses[0] == losses[1] and len(losses[0]) == 4
    ours, theirs = (load_file(str(run / "model" / "model.safetensors")) for run in (straight, resumed))
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert torch.equal(ours[k], theirs[k]), k

    # The checkpoint is a plain model dir: one process loads it, and refuses to resume it unsharded.
    assert main(["generate", str(straight / "model"), "--prompt", "Call me", "--max_new_tokens", "4"]) == 0
    unsharded = ["ddp" if a == "fsdp" else a for a in _pretrain_args(shards, resumed, 6)]
    assert main(unsharded + ["--resume", "true"]) == 2


def length(completion: str, example: dict) -> float:
    """A reward that varies within a group whatever the model says, so GRPO has gradients."""
    return min(len(completion), 12) / 12


def _stage_args(stage: str, inputs: dict, run: Path, steps: int = 3) -> list[str]:
    return {
        "sft": ["sft", "--model", str(inputs["chat_model"]), "--data.train", str(inputs["chat_file"]),
                "--data.batch_size", "4", "--data.seq_len", "64", "--optim.lr", "3e-3", "--eval.sample_tokens", "4"],
        "dpo": ["dpo", "configs/dpo_tiny.yaml", "--model", str(inputs["tiny"]), "--data", str(inputs["pairs"]),
                "--eval_data", str(inputs["held"]), "--batch_size", "4", "--max_len", "64", "--optim.lr", "3e-3"],
        "grpo": ["grpo", "configs/grpo_tiny.yaml", "--model", str(inputs["tiny"]), "--task.eval_problems", "4",
                 "--task.train_problems", "16", "--rewards", "tests.train.test_fsdp:length",
                 "--rollout.prompts_per_batch", "2", "--rollout.group_size", "4", "--rollout.max_new_tokens", "6",
                 "--loop.eval_every_steps", "100", "--optim.lr", "1e-3", "--kl_coef", "0"],
        # a value head on the policy's own trunk: the critic shares the policy's shards
        "ppo": ["ppo", "--model", str(inputs["tiny"]), "--data", str(inputs["pairs"]),
                "--eval_data", str(inputs["held"]), "--eval_prompts", "4", "--value_model", "head",
                "--rewards", "tests.train.test_fsdp:length", "--rollout.prompts_per_batch", "2",
                "--rollout.group_size", "2", "--rollout.max_new_tokens", "6", "--minibatch_size", "2",
                "--ppo_epochs", "1", "--optim.lr", "1e-3"],
        "rm": ["rm", "--model", str(inputs["tiny"]), "--data", str(inputs["pairs"]),
               "--eval_data", str(inputs["held"]), "--batch_size", "4", "--max_len", "64", "--ensemble", "2",
               "--optim.lr", "3e-3", "--optim.schedule", "constant", "--optim.warmup_steps", "0"],
        "spin": ["spin", "--model", str(inputs["chat_model"]), "--data", str(inputs["chat_file"]),
                 "--max_prompts", "8", "--eval_prompts", "4", "--max_new_tokens", "8", "--max_len", "64",
                 "--batch_size", "2", "--optim.lr", "1e-3", "--optim.warmup_steps", "0"],
    }[stage] + ["--run_dir", str(run), "--loop.max_steps", str(steps), "--device", "cpu", "--tensorboard", "false",
                "--loop.progress", "false"]


# Under FSDP2 these stop after step 1 and resume from that checkpoint (PPO mid-rollout).
RESUMED = {"ppo", "rm"}


@pytest.mark.parametrize("stage", ["sft", "sft+activation_checkpointing", "dpo", "grpo", "ppo", "rm", "spin"])
def test_fsdp_trains_as_ddp_does(stage, chat_model_dir, chat_file, tiny_model_dir, tmp_path):  # noqa: F811
    """The same two ranks, the same data split: sharded or replicated, the same model
    (with each layer recomputed in backward too: FSDP2 gathers its weights again for that;
    PPO's and the reward model's critic and heads too, through a resume)."""
    stage, _, extra = stage.partition("+")
    (tmp_path / "pairs.jsonl").write_text("".join(open(PAIRS).readlines()[:32]))
    (tmp_path / "held.jsonl").write_text("".join(open(TEST_PAIRS).readlines()[:8]))
    inputs = {"chat_model": chat_model_dir, "chat_file": chat_file, "tiny": tiny_model_dir,
              "pairs": tmp_path / "pairs.jsonl", "held": tmp_path / "held.jsonl"}
    runs = {}
    for port, parallel in ((29525, "ddp"), (29526, "fsdp")):
        runs[parallel] = tmp_path / parallel
        argv = lambda steps: (_stage_args(stage, inputs, runs[parallel], steps) + ["--parallel", parallel]  # noqa: E731
                              + ([f"--{extra}", "true"] if extra else []))
        if parallel == "fsdp" and stage in RESUMED:
            mp.spawn(_lmforge, args=(2, argv(1), 29527), nprocs=2, join=True)
        resume = ["--resume", "true"] if parallel == "fsdp" and stage in RESUMED else []
        mp.spawn(_lmforge, args=(2, argv(3) + resume, port), nprocs=2, join=True)
    files = ["model.safetensors"] + (["critic.safetensors"] if stage == "ppo" else [])
    ddp, fsdp = ({k: v for f in files for k, v in load_file(str(runs[p] / "model" / f)).items()}
                 for p in ("ddp", "fsdp"))
    start = load_file(str(Path(inputs["chat_model" if stage in ("sft", "spin") else "tiny"]) / "model.safetensors"))
    if stage in ("grpo", "ppo"):  # rollouts sampled under FSDP2 (ranks decoding in lockstep) are DDP's
        logged = [[(r["step"], r["train/reward_mean"]) for r in read_metrics(runs[p] / "metrics.jsonl")
                   if "train/reward_mean" in r] for p in ("ddp", "fsdp")]
        assert logged[0] == logged[1] and len(logged[0]) == 3
    if stage == "spin":  # so are the answers each iteration generated with the model it started from
        for t in (1, 2):
            played = [(runs[p] / f"iter_{t}" / "pairs.jsonl").read_text() for p in ("ddp", "fsdp")]
            assert played[0] == played[1] and played[0].count("\n") == 8
    assert ddp.keys() == fsdp.keys()
    for k in ddp:
        torch.testing.assert_close(fsdp[k], ddp[k], atol=2e-5, rtol=1e-4, msg=k)
    assert any(not torch.equal(ddp[k], start[k]) for k in ddp.keys() & start.keys())  # it trained


@pytest.mark.parametrize("config", [PPOConfig, RMConfig, SPINConfig])
def test_fsdp_with_lora_is_a_config_error(config):
    with pytest.raises(ConfigError, match="peft"):
        load_config(config, ["--parallel", "fsdp", "--peft", "lora"])
