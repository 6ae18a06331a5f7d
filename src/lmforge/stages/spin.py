"""`lmforge spin`: self-play fine-tuning (SPIN, Chen et al. 2024) of an SFT model on its own SFT data.

    lmforge spin --model runs/demo/sft/model --data data/chat/train.jsonl --iterations 2

Iteration t: the current model answers every SFT prompt (the conversation before its last
assistant turn); each answer is the rejected side of a pair whose chosen side is the human
answer, and the pairs train with DPO's logistic loss against the model as it was at the
start of the iteration (its log-probs precomputed once: no second model). Answers equal to
the human one carry no signal and are dropped (counted). SPIN is DPO on self-generated
pairs, so it runs through the same objective and the one `train()`.

run_dir/iter_t/ holds one sub-run per iteration (pairs.jsonl, metrics.jsonl, model/, and
done.json once it finished); run_dir/model the final model (HF format; LoRA merged), and
summary.json and report.md a row per iteration: on held-out prompts, how often the model's
own per-token log-likelihood prefers the human answer over its fresh generation (ties,
identical answers, 0.5), and its loss on the human answers. `--resume` skips finished
iterations and resumes the interrupted one from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lmforge.config import ConfigError
from lmforge.data.chat import read_conversations
from lmforge.data.preference import (PreferenceBatches, PreferencePair, hold_out_pairs, read_preferences,
                                     render_pairs)
from lmforge.data.sft import iter_chat_eval_batches, tokenize_conversations
from lmforge.eval.accuracy import complete
from lmforge.eval.loss import evaluate_loss, token_byte_lengths
from lmforge.eval.preference import likelihood_preference
from lmforge.infer.engine import Sampling
from lmforge.model.peft import LoRAConfig
from lmforge.model.quantize import Scheme
from lmforge.report import plot_series, record_run, write_report
from lmforge.runtime import Runtime, seed_everything
from lmforge.stages.common import RunOptions, export_model, stop_ids, task_evaluators
from lmforge.stages.policy import Peft, export_merged, load_policy, policy_checkpointing
from lmforge.tokenizer.chat import render_prompt
from lmforge.train.loop import LoopConfig, train
from lmforge.train.metrics import MetricsLog, read_metrics
from lmforge.train.objectives.dpo import dpo_objective
from lmforge.train.optim import OptimConfig, build_optimizer
from lmforge.train.parallel import Parallel, check_parallel, is_sharded, wrap_model


@dataclass
class SPINConfig(RunOptions):
    run_dir: str = "runs/spin"  # iterations, final model, metrics and report go here
    model: str = ""  # the starting policy: a model directory (an SFT model)
    tokenizer: str = ""  # tokenizer dir (default: the model dir)
    data: list[str] = field(default_factory=lambda: ["data/chat/train.jsonl"])  # SFT chat files
    on_error: Literal["raise", "skip"] = "raise"  # malformed records: fail, or count and skip
    max_prompts: int = 256  # training prompts per iteration (a seeded sample; 0 = all)
    eval_percent: int = 10  # share of prompts held out (by a hash of the prompt)
    eval_prompts: int = 64  # held-out prompts scored before and after each iteration (0 = all)
    iterations: int = 2  # self-play rounds; each starts from the last one's model
    beta: float = 0.1  # strength of the implicit KL to the previous iterate (the paper's λ)
    max_len: int = 256  # tokens per rendered side (longer ones are cut)
    max_new_tokens: int = 64  # length of the model's own answers
    temperature: float = 0.0  # of the model's own answers; 0 = greedy
    top_p: float = 1.0
    generate_batch_size: int = 64  # prompts per generation batch
    batch_size: int = 8  # pairs per micro-batch
    peft: Peft = "none"  # none = full fine-tuning | lora (one adapter trained across iterations)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    quantize: Scheme = "none"  # QLoRA: int8 | int4 frozen base (needs peft != none)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-6, warmup_steps=10, weight_decay=0.0))
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=100, eval_every_steps=1000))  # per iteration
    parallel: Parallel = "ddp"  # with several processes (torchrun): ddp (whole replicas) | fsdp (FSDP2 shards)

    def __post_init__(self):
        check_parallel(self)


def spin(cfg: SPINConfig) -> list[dict]:
    examples = _read_examples(cfg)  # bad data fails before a model is loaded
    rt = Runtime.setup(cfg.device, cfg.dtype, cfg.seed)
    run_dir = Path(cfg.run_dir)
    model, tok = load_policy(cfg.model, cfg.tokenizer, cfg.peft, cfg.lora, rt, cfg.quantize)
    train_examples, held_out = _sample(hold_out_pairs(examples, None, cfg.eval_percent), cfg)
    if not held_out:
        raise ConfigError(f"no held-out prompts to measure SPIN on: raise eval_percent ({cfg.eval_percent})")
    record_run(run_dir, cfg, rt, data_files=[Path(p) for p in cfg.data if Path(p).is_file()])
    rt.print(f"spin: {len(train_examples)} train / {len(held_out)} held-out prompts, {cfg.iterations} "
             f"iterations of {cfg.loop.max_steps} steps, beta {cfg.beta}, peft: {cfg.peft}")
    # Wrapped once for every iteration (FSDP2 shards in place, before any optimizer); a sharded
    # model generates and scores in lockstep, every rank the same prompts.
    train_model = wrap_model(model, rt, cfg.compile, cfg.parallel)
    rows = [{"iteration": 0, **_evaluate(model, tok, held_out, cfg, rt)}]
    for t in range(1, cfg.iterations + 1):
        it_dir = run_dir / f"iter_{t}"
        checkpoint = policy_checkpointing(model, tok, it_dir / "model", cfg.peft, cfg.model)
        if cfg.resume and (it_dir / "done.json").exists():
            checkpoint.load_model(it_dir / "model")
            rows.append(json.loads((it_dir / "done.json").read_text()))
            continue
        # Each iteration draws from its own seed, so skipping finished ones changes nothing.
        seed_everything(cfg.seed + 1000 * t + rt.rank)
        pairs, identical = _self_play_pairs(model, tok, train_examples, cfg, it_dir, seed=cfg.seed + t, rt=rt)
        if not pairs:
            rt.print(f"iteration {t}: the model reproduces every human answer; nothing left to learn")
            break
        steps = _train_iteration(model, train_model, tok, pairs, cfg, rt, it_dir, checkpoint)
        rows.append({"iteration": t, "pairs": len(pairs), "identical_dropped": identical, "steps": steps,
                     **_last_train_metrics(it_dir), **_evaluate(model, tok, held_out, cfg, rt)})
        rt.print(f"iteration {t}: {_describe(rows[-1])} (before: {_describe(rows[0])})")
        if rt.is_main:
            partial = it_dir / "done.json.tmp"  # a crash mid-write must not leave half a done.json
            partial.write_text(json.dumps(rows[-1], indent=2) + "\n")
            os.replace(partial, it_dir / "done.json")
            shutil.rmtree(it_dir / "model" / "trainer_state", ignore_errors=True)  # done: never resumed
    if cfg.peft != "lora" and (rt.is_main or is_sharded(model)):  # a sharded model is gathered by every rank
        export_model(model, tok, run_dir / "model")
    if rt.is_main:
        if cfg.peft == "lora":
            export_merged(model, tok, run_dir / "model", cfg.model)
        _write_spin_report(run_dir, cfg, rows, {"train": len(train_examples), "held_out": len(held_out)})
    return rows


def _read_examples(cfg: SPINConfig) -> list[PreferencePair]:
    """SFT conversations as pairs still to be played: prompt and human answer (as both sides,
    until the model's own answer replaces the rejected one)."""
    examples = []
    for messages in read_conversations(cfg.data, cfg.on_error):
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        human = {"role": "assistant", "content": messages[last]["content"]}
        examples.append(PreferencePair(messages[:last], human, human))
    return examples


def _sample(split: tuple[list, list], cfg: SPINConfig) -> tuple[list, list]:
    rng = random.Random(cfg.seed)
    cut = lambda xs, n: rng.sample(xs, n) if 0 < n < len(xs) else xs  # noqa: E731
    return cut(split[0], cfg.max_prompts), cut(split[1], cfg.eval_prompts)


def _play(model, tok, examples: list[PreferencePair], cfg: SPINConfig, seed: int) -> list[PreferencePair]:
    """Each example with the model's own answer as the rejected side."""
    answers = complete(model, [render_prompt(tok, p.prompt) for p in examples],
                       lambda ids: tok.decode(ids, skip_special=True), cfg.max_new_tokens,
                       cfg.generate_batch_size, Sampling(cfg.temperature, top_p=cfg.top_p),
                       set(stop_ids(tok)), tok.pad_id or 0, cfg.compile, seed)
    return [dataclasses.replace(p, rejected={"role": "assistant", "content": a.strip()})
            for p, a in zip(examples, answers)]


def _self_play_pairs(model, tok, examples, cfg: SPINConfig, it_dir: Path, seed: int, rt):
    """(training pairs, how many answers equalled the human one). Every answer is kept in
    pairs.jsonl, which a resumed iteration reads rather than generating again."""
    path = it_dir / "pairs.jsonl"
    if cfg.resume and path.exists():
        played = read_preferences(path, allow_identical=True)  # reproduced answers: counted below
    else:
        played = _play(model, tok, examples, cfg, seed)
        if rt.is_main:
            it_dir.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")  # a kill mid-write leaves no half file to resume from
            partial.write_text("".join(json.dumps({"messages": p.prompt, "chosen": p.chosen, "rejected": p.rejected},
                                                  ensure_ascii=False) + "\n" for p in played))
            os.replace(partial, path)
    pairs = [p for p in played if not _reproduced(p)]
    return pairs, len(played) - len(pairs)


def _reproduced(pair: PreferencePair) -> bool:
    return pair.rejected["content"] == pair.chosen["content"].strip()


def _train_iteration(model, train_model, tok, pairs, cfg: SPINConfig, rt, it_dir: Path, checkpoint) -> int:
    batches = PreferenceBatches(render_pairs(tok, pairs, cfg.max_len), cfg.batch_size, tok.pad_id or 0,
                                cfg.seed, rt.rank, rt.world_size)
    batches.precompute_reference(model, rt.autocast)  # the previous iterate, scored once
    log = MetricsLog(it_dir, cfg.tensorboard, cfg.wandb_project or None, rt.is_main)
    optimizer = build_optimizer(model, cfg.optim, rt.device, model.config.hidden_size)
    result = train(train_model, dpo_objective(cfg.beta), batches, optimizer,
                   loop=cfg.loop, optim=cfg.optim, runtime=rt, log=log, checkpoint=checkpoint,
                   evaluators=task_evaluators(cfg.eval_tasks, model, tok, cfg.loop.eval_every_steps, chat=True),
                   resume=cfg.resume)
    log.close()
    return result.step


def _evaluate(model, tok, held_out: list[PreferencePair], cfg: SPINConfig, rt) -> dict:
    """Held-out: the share where the model's per-token likelihood prefers the human answer to
    its own fresh one (what SPIN drives up), the share it reproduces, its loss on the human answers."""
    played = _play(model, tok, held_out, cfg, seed=cfg.seed)
    pad_id = tok.pad_id or 0
    differ = [p for p in played if not _reproduced(p)]
    preference = likelihood_preference(model, render_pairs(tok, differ, cfg.max_len), pad_id, cfg.batch_size)
    scored, same = preference.get("pairs", 0), len(played) - len(differ)  # a reproduced answer is a tie
    examples, _ = tokenize_conversations(tok, [p.prompt + [p.chosen] for p in held_out], cfg.max_len, "last")
    loss = evaluate_loss(model, iter_chat_eval_batches(examples, cfg.batch_size, pad_id),
                         token_byte_lengths(tok, model.config.vocab_size), rt)
    preferred = (preference.get("accuracy", 0.0) * scored + 0.5 * same) / max(1, scored + same)
    return {"held_out/human_preferred": preferred,
            "held_out/reproduced": same / len(played),
            "held_out/human_loss": loss["val/loss"], "held_out/prompts": len(played)}


def _last_train_metrics(it_dir: Path) -> dict:
    rows = [r for r in read_metrics(it_dir / "metrics.jsonl") if "train/loss" in r]
    keys = ("train/loss", "train/preference_accuracy", "train/reward_margin")
    return {k: rows[-1][k] for k in keys} if rows else {}


def _describe(row: dict) -> str:
    return (f"held-out human answer preferred {row['held_out/human_preferred']:.3f}, reproduced "
            f"{row['held_out/reproduced']:.3f}, loss on human answers {row['held_out/human_loss']:.4f}")


def _write_spin_report(run_dir: Path, cfg: SPINConfig, rows: list[dict], prompts: dict) -> None:
    lines = [f"- policy: {cfg.model} ({cfg.peft}), beta {cfg.beta}, {cfg.loop.max_steps} steps per iteration, "
             f"answers {'greedy' if cfg.temperature <= 0 else f'sampled at temperature {cfg.temperature}'}",
             f"- prompts: {prompts['train']} train, {prompts['held_out']} held out (by prompt hash)",
             "- **human preferred**: held-out prompts where the model's own per-token log-likelihood is "
             "higher for the human answer than for its fresh answer (identical answers 0.5)", "",
             "| iteration | pairs | identical dropped | final train loss | human preferred | reproduced "
             "| loss on human answers |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        loss = f"{r['train/loss']:.4f}" if "train/loss" in r else "-"
        lines.append(f"| {r['iteration']} | {r.get('pairs', '-')} | {r.get('identical_dropped', '-')} | {loss} | "
                     f"{r['held_out/human_preferred']:.3f} | {r['held_out/reproduced']:.3f} | "
                     f"{r['held_out/human_loss']:.4f} |")
    its = [r["iteration"] for r in rows]
    plots = {"held_out.png": plot_series({"human preferred": (its, [r["held_out/human_preferred"] for r in rows]),
                                          "reproduced": (its, [r["held_out/reproduced"] for r in rows])},
                                         "iteration", "share of held-out prompts")}
    write_report(run_dir, "SPIN report", lines, plots)
    (run_dir / "summary.json").write_text(json.dumps({"prompts": prompts, "iterations": rows}, indent=2) + "\n")
