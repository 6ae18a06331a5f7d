"""`lmforge grpo`: online RL with verifiable rewards on the one training loop.

    lmforge grpo configs/grpo_tiny.yaml --model runs/demo/sft/model
    lmforge grpo --model M --task word --rewards math think_format --reward_weights 1 0.2
    lmforge grpo --model M --rewards mypkg.rewards:brevity --peft lora --kl_coef 0.02

config -> policy -> RolloutSource (sample G completions per prompt, score, group-normalise)
-> grpo_objective -> train(). Held-out accuracy (greedy, on the test split; `--task.eval_split
dev` while tuning settings) is measured before and after, beside the trivial baselines it
must beat, and lands in summary.json and report.md, next to per-step reward, accuracy,
completion length, KL and the share of step time spent generating.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from lmforge.model.peft import LoRAConfig
from lmforge.model.quantize import Scheme
from lmforge.report import plot_series, record_run, write_report
from lmforge.rewards import load_rewards
from lmforge.eval.accuracy import greedy_accuracy, mean, trivial_baselines
from lmforge.rewards.tasks import make_problems
from lmforge.runtime import Runtime
from lmforge.stages.common import RunOptions, stop_ids, task_evaluators
from lmforge.stages.policy import Peft, export_merged, load_policy, make_reference, policy_checkpointing
from lmforge.tokenizer.chat import render_prompt
from lmforge.train.loop import LoopConfig, Periodic, train
from lmforge.train.metrics import MetricsLog, read_metrics
from lmforge.train.objectives.grpo import grpo_objective
from lmforge.train.optim import OptimConfig, build_optimizer
from lmforge.train.parallel import Parallel, check_parallel, wrap_model
from lmforge.train.rollout import RolloutConfig, RolloutSource


@dataclass
class TaskConfig:
    name: str = "arithmetic"  # arithmetic | compare | word | reasoning_gym:<dataset> (needs reasoning-gym)
    train_problems: int = 2000  # prompts to draw for training
    eval_problems: int = 100  # held-out prompts for greedy accuracy
    eval_split: Literal["dev", "test"] = "test"  # tune settings on dev; report test
    eval_seed: int = 1  # draws the held-out prompts; apart from `seed`, so every seed meets the same ones
    max_operand: int = 20  # arithmetic / compare: numbers in 0..max_operand
    system_prompt: str = ""  # optional system message before each question
    eval_max_new_tokens: int = 32  # greedy answer length cap when evaluating


@dataclass
class GRPOConfig(RunOptions):
    run_dir: str = "runs/grpo"  # where the model, metrics and report go
    model: str = ""  # the starting policy: a model directory (usually an SFT model)
    tokenizer: str = ""  # tokenizer dir (default: the model dir)
    task: TaskConfig = field(default_factory=TaskConfig)
    rewards: list[str] = field(default_factory=lambda: ["math"])  # names or module:function; the first is "accuracy"
    reward_weights: list[float] = field(default_factory=list)  # one per reward (default: all 1)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    clip_eps: float = 0.2  # PPO clip range (lower side)
    clip_eps_high: float = 0.0  # upper clip (DAPO's clip-higher); 0 = same as clip_eps
    kl_coef: float = 0.0  # weight of KL(policy || reference) in the loss (0 = no reference)
    loss_norm: Literal["token", "sequence"] = "token"  # average over all tokens, or per completion first
    peft: Peft = "none"  # none = full fine-tuning | lora
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    quantize: Scheme = "none"  # QLoRA: int8 | int4 frozen base under the PEFT method (needs peft != none)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-6, warmup_steps=0, weight_decay=0.0,
                                                                   schedule="constant"))
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=100, log_every_steps=1,
                                                                eval_every_steps=50))
    parallel: Parallel = "ddp"  # with several processes (torchrun): ddp (whole replicas) | fsdp (FSDP2 shards)

    def __post_init__(self):
        check_parallel(self)


def grpo(cfg: GRPOConfig):
    rt = Runtime.setup(cfg.device, cfg.dtype, cfg.seed)
    run_dir = Path(cfg.run_dir)
    t = cfg.task  # problems first: a bad task name fails before a model is loaded
    train_problems = make_problems(t.name, t.train_problems, cfg.seed, "train", t.max_operand)
    test_problems = make_problems(t.name, t.eval_problems, t.eval_seed, t.eval_split, t.max_operand)
    baselines = trivial_baselines(train_problems, test_problems)
    model, tok = load_policy(cfg.model, cfg.tokenizer, cfg.peft, cfg.lora, rt, cfg.quantize)
    render = lambda ps: [render_prompt(tok, _messages(p, t.system_prompt)) for p in ps]  # noqa: E731
    decode = lambda ids: tok.decode(ids, skip_special=True)  # noqa: E731
    stops, pad_id = set(stop_ids(tok)), tok.pad_id or 0
    record_run(run_dir, cfg, rt)

    test_prompts = render(test_problems)
    rewards = load_rewards(cfg.rewards)
    held_out_accuracy = lambda: _with_length(greedy_accuracy(  # noqa: E731
        model, test_prompts, test_problems, decode, rewards[0], t.eval_max_new_tokens,
        stop_ids=stops, pad_id=pad_id, compile=cfg.rollout.compile), tok)
    evaluate = lambda step: {f"eval/{k}": v for k, v in held_out_accuracy().items()  # noqa: E731
                             if k in ("accuracy", "stderr", "n", "completion_tokens")}
    before = held_out_accuracy()
    rt.print(f"held-out ({t.eval_split}) accuracy before GRPO: {_pm(before)} ({before['n']} problems); "
             f"blind baselines: " + ", ".join(f"{k} {v:.3f}" for k, v in baselines.items()))
    _show_samples(rt, before["samples"])

    reference = make_reference(model, "adapter" if cfg.peft == "lora" else "copy") if cfg.kl_coef > 0 else None
    source = RolloutSource(model, render(train_problems), train_problems, rewards, cfg.rollout,
                           decode=decode, stop_ids=stops, pad_id=pad_id,
                           reward_weights=cfg.reward_weights or None, reference=reference,
                           seed=cfg.seed, rank=rt.rank, world_size=rt.world_size)
    objective = grpo_objective(cfg.clip_eps, cfg.clip_eps_high or None, cfg.kl_coef, cfg.loss_norm)
    log = MetricsLog(run_dir, cfg.tensorboard, cfg.wandb_project or None, rt.is_main)
    train_model = wrap_model(model, rt, cfg.compile, cfg.parallel)  # before the optimizer: FSDP2 shards in place
    optimizer = build_optimizer(model, cfg.optim, rt.device, model.config.hidden_size)
    # loop.grad_accum_steps counts rollouts per optimizer step; each is served in micro-batches.
    loop = replace(cfg.loop, grad_accum_steps=cfg.loop.grad_accum_steps * source.micro_batches_per_rollout)
    result = train(train_model, objective, source, optimizer,
                   loop=loop, optim=cfg.optim, runtime=rt, log=log,
                   checkpoint=policy_checkpointing(model, tok, run_dir / "model", cfg.peft, cfg.model),
                   evaluators=([Periodic(cfg.loop.eval_every_steps, evaluate)]
                               if cfg.loop.eval_every_steps < cfg.loop.max_steps else [])
                   + task_evaluators(cfg.eval_tasks, model, tok, cfg.loop.eval_every_steps, chat=True),
                   resume=cfg.resume)
    log.close()
    after = held_out_accuracy()
    rt.print(f"held-out ({t.eval_split}) accuracy after GRPO: {_pm(after)} (before {_pm(before)})")
    _show_samples(rt, after["samples"])
    summary = {}
    if rt.is_main:
        if cfg.peft == "lora":
            export_merged(model, tok, run_dir / "merged", cfg.model)
        summary = _write_grpo_report(run_dir, cfg, result, before, after, baselines)
    return summary


def _with_length(accuracy: dict, tok) -> dict:
    """Adds the mean length of the greedy held-out answers in tokens: DeepSeek-R1's
    response-length curve, on problems never trained on."""
    return {**accuracy, "completion_tokens": mean([len(tok.encode(c)) for c in accuracy["completions"]])}


def _pm(accuracy: dict) -> str:
    return f"{accuracy['accuracy']:.3f} ± {accuracy['stderr']:.3f}"


def _messages(problem: dict, system_prompt: str) -> list[dict]:
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return system + problem["messages"]


def _show_samples(rt, samples: list[dict]) -> None:
    for s in samples[:3]:
        rt.print(f"  {s['question']!r} -> {s['completion']!r} (answer {s['answer']}, reward {s['reward']:.0f})")


def step_time_breakdown(rows: list[dict], grad_accum_steps: int) -> dict:
    """Share of step time spent generating, from the per-step log (generate_seconds is a
    per-micro-batch mean, so it is scaled back up by the accumulation steps)."""
    rows = [r for r in rows if "train/generate_seconds" in r]
    gen = sum(r["train/generate_seconds"] * grad_accum_steps for r in rows)
    total = sum(r["train/step_seconds"] for r in rows)
    return {"generate_share": gen / total if total else None, "step_seconds_total": total,
            "generate_seconds_total": gen, "mean_step_seconds": total / max(1, len(rows))}


def _write_grpo_report(run_dir: Path, cfg: GRPOConfig, result, before: dict, after: dict,
                       baselines: dict) -> dict:
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "train/loss" in r]
    timing = step_time_breakdown(rows, cfg.loop.grad_accum_steps)
    last = rows[-1] if rows else {}
    summary = {"step": result.step, "seed": cfg.seed, "eval_split": cfg.task.eval_split,
               "accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"],
               "stderr_before": before["stderr"], "stderr_after": after["stderr"],
               "eval_problems": after["n"], "baselines": baselines,
               "completion_tokens_before": before["completion_tokens"],
               "completion_tokens_after": after["completion_tokens"],
               "final_reward_mean": last.get("train/reward_mean"),
               "final_kl": last.get("train/kl"), **timing,
               "samples_after": after["samples"][:3]}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    share = timing["generate_share"]
    lines = [f"- policy: {cfg.model} ({cfg.peft}); task {cfg.task.name}; rewards {', '.join(cfg.rewards)}",
             f"- {result.step} steps × {cfg.rollout.prompts_per_batch} prompts × {cfg.rollout.group_size} "
             f"completions (temperature {cfg.rollout.temperature}), kl_coef {cfg.kl_coef}",
             f"- **held-out accuracy ({cfg.task.eval_split} split, greedy, {after['n']} problems, "
             f"± standard error): {_pm(before)} -> {_pm(after)}**",
             "- blind baselines on the same problems: " + ", ".join(
                 f"{k.replace('_', ' ')} {v:.3f}" for k, v in baselines.items()),
             f"- time: {timing['step_seconds_total']:.1f} s training, "
             f"{100 * share:.0f}% of it generating" if share is not None else "- no steps run",
             "", "| question | completion after | reward |", "|---|---|---|",
             *[f"| {s['question']} | {s['completion']!r} | {s['reward']:.0f} |" for s in after["samples"][:5]]]
    steps = [r["step"] for r in rows]
    series = lambda key: (steps, [r.get(key, 0.0) for r in rows])  # noqa: E731
    plots = {"reward.png": plot_series({"reward mean": series("train/reward_mean"),
                                        "accuracy": series("train/accuracy")}, "step", "rollout reward"),
             "length.png": plot_series({"completion tokens": series("train/completion_tokens")},
                                       "step", "tokens")}
    write_report(run_dir, "GRPO report", lines, plots)
    return summary
