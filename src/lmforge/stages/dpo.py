"""`lmforge dpo`: preference pairs -> a policy that prefers the chosen responses.

    lmforge dpo configs/dpo_tiny.yaml --model runs/demo/sft/model
    lmforge dpo --model M --data prefs.jsonl --peft lora --beta 0.1 --loss_type ipo

config -> policy (+ reference) -> PreferenceBatches -> dpo_objective -> train(). The run
directory receives config.yaml, run.json, metrics.jsonl, model/ (HF checkpoint, or a PEFT
adapter plus merged/ with LoRA), summary.json and report.md with held-out preference
accuracy before and after: how often the policy itself gives the chosen response more
probability than the rejected one (ties 0.5), on pairs whose prompts it never trained on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch

from lmforge.data.preference import (PreferenceBatches, collate_pairs, hold_out_pairs, read_preferences,
                                     render_pairs)
from lmforge.model.peft import LoRAConfig
from lmforge.model.quantize import Scheme
from lmforge.report import plot_series, record_run, write_report
from lmforge.runtime import Runtime
from lmforge.stages.common import RunOptions, task_evaluators
from lmforge.stages.policy import Peft, export_merged, load_policy, make_reference, policy_checkpointing
from lmforge.train.loop import LoopConfig, Periodic, train
from lmforge.train.metrics import MetricsLog, read_metrics
from lmforge.train.objectives.dpo import dpo_objective
from lmforge.train.optim import OptimConfig, build_optimizer
from lmforge.train.parallel import wrap_model


@dataclass
class DPOConfig(RunOptions):
    run_dir: str = "runs/dpo"  # where the model, metrics and report go
    model: str = ""  # the starting policy: a model directory (usually an SFT model)
    tokenizer: str = ""  # tokenizer dir (default: the model dir)
    data: list[str] = field(default_factory=lambda: ["data/preference/arithmetic_pairs.jsonl"])  # JSONL files
    on_error: Literal["raise", "skip"] = "raise"  # malformed records: fail, or count and skip
    max_len: int = 256  # tokens per rendered side (longer ones are cut)
    eval_data: list[str] = field(default_factory=list)  # held-out pair files (a dev file while tuning)
    eval_percent: int = 10  # without eval_data: share of prompts held out (by a hash of the prompt)
    batch_size: int = 8  # pairs per micro-batch
    beta: float = 0.1  # strength of the implicit KL to the reference
    loss_type: Literal["sigmoid", "ipo"] = "sigmoid"  # DPO (sigmoid) or IPO (squared)
    label_smoothing: float = 0.0  # conservative DPO: assumed share of flipped labels
    reference: Literal["auto", "precompute", "copy", "adapter"] = "auto"  # auto: adapter with LoRA, else precompute
    peft: Peft = "none"  # none = full fine-tuning | lora
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    quantize: Scheme = "none"  # QLoRA: int8 | int4 frozen base under the PEFT method (needs peft != none)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-6, warmup_steps=10, weight_decay=0.0))
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=100, eval_every_steps=50))


def dpo(cfg: DPOConfig):
    rt = Runtime.setup(cfg.device, cfg.dtype, cfg.seed)
    run_dir = Path(cfg.run_dir)
    model, tok = load_policy(cfg.model, cfg.tokenizer, cfg.peft, cfg.lora, rt, cfg.quantize)
    read = lambda paths: [p for path in paths for p in read_preferences(path, cfg.on_error)]  # noqa: E731
    train_pairs, held_out = hold_out_pairs(read(cfg.data), read(cfg.eval_data) if cfg.eval_data else None,
                                           cfg.eval_percent)
    train_pairs, held_out = render_pairs(tok, train_pairs, cfg.max_len), render_pairs(tok, held_out, cfg.max_len)
    record_run(run_dir, cfg, rt, data_files=[Path(p) for p in cfg.data + cfg.eval_data])
    pad_id = tok.pad_id or 0
    batches = PreferenceBatches(train_pairs, cfg.batch_size, pad_id, cfg.seed, rt.rank, rt.world_size)
    kind = cfg.reference if cfg.reference != "auto" else ("adapter" if cfg.peft == "lora" else "precompute")
    if kind == "precompute":
        batches.precompute_reference(model)
    reference = make_reference(model, kind)
    objective = dpo_objective(cfg.beta, cfg.loss_type, reference, cfg.label_smoothing)
    rt.print(f"dpo: {len(train_pairs)} train / {len(held_out)} held-out pairs, beta {cfg.beta}, "
             f"{cfg.loss_type} loss, reference: {kind}, peft: {cfg.peft}")

    held = PreferenceBatches(held_out, cfg.batch_size, pad_id) if held_out else None
    if held is not None and kind == "precompute":
        held.precompute_reference(model)
    evaluate = lambda step: _evaluate_pairs(model, objective, held, cfg.batch_size, rt)  # noqa: E731
    before = evaluate(0)
    rt.print(f"held-out preference accuracy of the policy before: {_accuracy(before)}")
    log = MetricsLog(run_dir, cfg.tensorboard, cfg.wandb_project or None, rt.is_main)
    optimizer = build_optimizer(model, cfg.optim, rt.device, model.config.hidden_size)
    result = train(wrap_model(model, rt, cfg.compile), objective, batches, optimizer,
                   loop=cfg.loop, optim=cfg.optim, runtime=rt, log=log,
                   checkpoint=policy_checkpointing(model, tok, run_dir / "model", cfg.peft, cfg.model),
                   evaluators=([Periodic(cfg.loop.eval_every_steps, evaluate)]
                               if held_out and cfg.loop.eval_every_steps < cfg.loop.max_steps else [])
                   + task_evaluators(cfg.eval_tasks, model, tok, cfg.loop.eval_every_steps, chat=True),
                   resume=cfg.resume)
    log.close()
    after = evaluate(result.step)
    rt.print(f"held-out preference accuracy of the policy after: {_accuracy(after)} (before {_accuracy(before)})")
    if rt.is_main:
        if cfg.peft == "lora":
            export_merged(model, tok, run_dir / "merged", cfg.model)
        _write_dpo_report(run_dir, cfg, result, before, after,
                          {"train": len(train_pairs), "held_out": len(held_out)})
    return result


def _accuracy(metrics: dict) -> str:
    """The policy's own preference accuracy ± its standard error over held-out pairs."""
    if "eval/policy_accuracy" not in metrics:
        return "n/a (no held-out pairs)"
    p, n = metrics["eval/policy_accuracy"], metrics["eval/pairs"]
    return f"{p:.3f} ± {(p * (1 - p) / max(1, n - 1)) ** 0.5:.3f} ({n} pairs)"


@torch.no_grad()
def _evaluate_pairs(model, objective, held: PreferenceBatches | None, batch_size: int, rt) -> dict:
    """Held-out loss, reward margin and preference accuracy (reference as in training)."""
    if held is None:
        return {}
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    pairs = held.pairs
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        batch = collate_pairs(chunk, held.pad_id)
        if held.ref_logps is not None:
            batch["ref_chosen_logps"] = held.ref_logps[start:start + batch_size, 0]
            batch["ref_rejected_logps"] = held.ref_logps[start:start + batch_size, 1]
        batch = {k: v.to(rt.device) for k, v in batch.items()}
        with rt.autocast():
            loss, metrics = objective(model, batch)
        for k, v in {"loss": loss, **metrics}.items():
            if k != "tokens":
                sums[k] = sums.get(k, 0.0) + float(v) * len(chunk)
    model.train(was_training)
    return {**{f"eval/{k}": v / len(pairs) for k, v in sums.items()}, "eval/pairs": len(pairs)}


def _write_dpo_report(run_dir: Path, cfg: DPOConfig, result, before: dict, after: dict,
                      pairs: dict) -> None:
    rows = read_metrics(run_dir / "metrics.jsonl")
    train_rows = [r for r in rows if "train/loss" in r]
    steps = [r["step"] for r in train_rows]
    acc = lambda d: d.get("eval/preference_accuracy", float("nan"))  # noqa: E731
    lines = [f"- policy: {cfg.model} ({cfg.peft}), beta {cfg.beta}, {cfg.loss_type} loss",
             f"- steps: {result.step} ({result.skipped_steps} skipped)",
             f"- **held-out pairs where the policy gives the chosen response more probability "
             f"(ties 0.5): {_accuracy(before)} -> {_accuracy(after)}**",
             f"- held-out implicit-reward accuracy (β·log π/π_ref; 0.5 at the start by construction, "
             f"since policy = reference): {acc(before):.3f} -> {acc(after):.3f}",
             f"- held-out reward margin: {before.get('eval/reward_margin', float('nan')):.3f} -> "
             f"{after.get('eval/reward_margin', float('nan')):.3f}",
             f"- final train loss: {result.losses[-1]:.4f}" if result.losses else "- no steps run",
             f"- model directory: {run_dir / 'model'}" + (" (PEFT adapter; merged model in merged/)"
                                                          if cfg.peft == "lora" else " (Hugging Face format)")]
    plots = {"loss.png": plot_series({"train": (steps, [r["train/loss"] for r in train_rows])}, "step", "DPO loss"),
             "margin.png": plot_series({"reward margin": (steps, [r["train/reward_margin"] for r in train_rows])},
                                       "step", "chosen - rejected reward")}
    write_report(run_dir, "DPO report", lines, plots)
    (run_dir / "summary.json").write_text(json.dumps(
        {"step": result.step, "final_loss": result.losses[-1] if result.losses else None, "pairs": pairs,
         "before": before, "after": after, "lora": asdict(cfg.lora) if cfg.peft == "lora" else None},
        indent=2) + "\n")
