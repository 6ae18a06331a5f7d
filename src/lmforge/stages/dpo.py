"""`lmforge dpo`: preference pairs -> a policy that prefers the chosen responses.

    lmforge dpo configs/dpo_tiny.yaml --model runs/demo/sft/model
    lmforge dpo --model M --data prefs.jsonl --peft lora --beta 0.1 --loss_type ipo
    lmforge dpo configs/dpo_tiny.yaml --model M --loss_type simpo --beta 2 --simpo_gamma 1   # or orpo

config -> policy (+ reference) -> PreferenceBatches -> dpo_objective -> train(). SimPO and
ORPO use no reference: nothing is precomputed and no copy is made. The run
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

from lmforge.data.preference import PreferenceBatches, hold_out_pairs, read_pair_files, render_pairs
from lmforge.model.peft import LoRAConfig
from lmforge.model.quantize import Scheme
from lmforge.report import plot_series, record_run, write_report
from lmforge.runtime import Runtime
from lmforge.stages.common import RunOptions
from lmforge.stages.policy import (Peft, Reference, export_merged, load_policy, make_reference, reference_kind,
                                   train_policy)
from lmforge.train.loop import LoopConfig
from lmforge.train.metrics import read_metrics
from lmforge.train.objectives.dpo import LENGTH_AVERAGED, REFERENCE_FREE, LossType, dpo_objective
from lmforge.train.optim import OptimConfig
from lmforge.train.parallel import Parallel, check_parallel


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
    beta: float = 0.1  # strength of the implicit KL to the reference (SimPO: reward scale, ~2 in its paper)
    loss_type: LossType = "sigmoid"  # DPO (sigmoid) | IPO (squared) | SimPO, ORPO (no reference)
    label_smoothing: float = 0.0  # conservative DPO (and SimPO): assumed share of flipped labels
    simpo_gamma: float = 0.5  # SimPO's target reward margin γ (TRL's simpo_gamma; not the paper code's γ/β)
    orpo_lambda: float = 0.1  # ORPO's weight λ of the odds-ratio term next to the NLL (TRL's beta)
    reference: Reference = "auto"  # auto: none for SimPO/ORPO, adapter with LoRA, else precompute
    peft: Peft = "none"  # none = full fine-tuning | lora
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    quantize: Scheme = "none"  # QLoRA: int8 | int4 frozen base under the PEFT method (needs peft != none)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-6, warmup_steps=10, weight_decay=0.0))
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=100, eval_every_steps=50))
    parallel: Parallel = "ddp"  # with several processes (torchrun): ddp (whole replicas) | fsdp (FSDP2 shards)

    def __post_init__(self):
        check_parallel(self)


def dpo(cfg: DPOConfig):
    rt = Runtime.setup(cfg.device, cfg.dtype, cfg.seed)
    run_dir = Path(cfg.run_dir)
    model, tok = load_policy(cfg.model, cfg.tokenizer, cfg.peft, cfg.lora, rt, cfg.quantize)
    train_pairs, held_out = hold_out_pairs(read_pair_files(cfg.data, cfg.on_error),
                                           read_pair_files(cfg.eval_data, cfg.on_error) if cfg.eval_data else None,
                                           cfg.eval_percent)
    train_pairs, held_out = render_pairs(tok, train_pairs, cfg.max_len), render_pairs(tok, held_out, cfg.max_len)
    record_run(run_dir, cfg, rt, data_files=[Path(p) for p in cfg.data + cfg.eval_data])
    pad_id = tok.pad_id or 0
    batches = PreferenceBatches(train_pairs, cfg.batch_size, pad_id, cfg.seed, rt.rank, rt.world_size)
    held = PreferenceBatches(held_out, cfg.batch_size, pad_id) if held_out else None
    kind = reference_kind(cfg.reference, cfg.peft, needed=cfg.loss_type not in REFERENCE_FREE)
    if kind == "precompute":
        for source in filter(None, (batches, held)):
            source.precompute_reference(model, rt.autocast)
    objective = dpo_objective(cfg.beta, cfg.loss_type, make_reference(model, kind), cfg.label_smoothing,
                              cfg.simpo_gamma, cfg.orpo_lambda)
    rt.print(f"dpo: {len(train_pairs)} train / {len(held_out)} held-out pairs, beta {cfg.beta}, "
             f"{cfg.loss_type} loss, reference: {kind}, peft: {cfg.peft}")

    def evaluate(step: int) -> dict:
        if held is None:
            return {}
        return {**evaluate_objective(model, objective, held.in_order(cfg.batch_size), rt), "eval/pairs": len(held_out)}

    before = evaluate(0)
    rt.print(f"held-out preference accuracy of the policy before: {_accuracy(before)}")
    result = train_policy(model, tok, objective, batches, cfg, rt, run_dir, evaluate if held else None)
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
def evaluate_objective(model, objective, batches, rt) -> dict:
    """The objective's loss and metrics over held-out batches (reference as in training),
    each batch weighted by its rows: {"eval/loss", "eval/<metric>", ...}."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    rows = 0
    for batch in batches:
        batch = {k: v.to(rt.device) for k, v in batch.items()}
        n = len(next(iter(batch.values())))  # every tensor of a batch leads with its rows
        with rt.autocast():
            loss, metrics = objective(model, batch)
        for k, v in {"loss": loss, **metrics}.items():
            if k != "tokens":
                sums[k] = sums.get(k, 0.0) + float(v) * n
        rows += n
    model.train(was_training)
    return {f"eval/{k}": v / rows for k, v in sums.items()}


def _write_dpo_report(run_dir: Path, cfg: DPOConfig, result, before: dict, after: dict,
                      pairs: dict) -> None:
    rows = read_metrics(run_dir / "metrics.jsonl")
    train_rows = [r for r in rows if "train/loss" in r]
    steps = [r["step"] for r in train_rows]
    acc = lambda d: d.get("eval/preference_accuracy", float("nan"))  # noqa: E731
    per_token = " per token" if cfg.loss_type in LENGTH_AVERAGED else ""
    lines = [f"- policy: {cfg.model} ({cfg.peft}), beta {cfg.beta}, {cfg.loss_type} loss" + _loss_options(cfg),
             f"- steps: {result.step} ({result.skipped_steps} skipped)",
             f"- **held-out pairs where the policy gives the chosen response more probability{per_token} "
             f"(ties 0.5): {_accuracy(before)} -> {_accuracy(after)}**",
             *([] if cfg.loss_type in REFERENCE_FREE else [
                 f"- held-out implicit-reward accuracy (β·log π/π_ref; 0.5 at the start by construction, "
                 f"since policy = reference): {acc(before):.3f} -> {acc(after):.3f}"]),
             f"- held-out reward margin: {before.get('eval/reward_margin', float('nan')):.3f} -> "
             f"{after.get('eval/reward_margin', float('nan')):.3f}",
             f"- final train loss: {result.losses[-1]:.4f}" if result.losses else "- no steps run",
             f"- model directory: {run_dir / 'model'}" + (" (PEFT adapter; merged model in merged/)"
                                                          if cfg.peft == "lora" else " (Hugging Face format)")]
    plots = {"loss.png": plot_series({"train": (steps, [r["train/loss"] for r in train_rows])}, "step",
                                     f"{_TITLES[cfg.loss_type]} loss"),
             "margin.png": plot_series({"reward margin": (steps, [r["train/reward_margin"] for r in train_rows])},
                                       "step", "chosen - rejected reward")}
    write_report(run_dir, f"{_TITLES[cfg.loss_type]} report", lines, plots)
    (run_dir / "summary.json").write_text(json.dumps(
        {"step": result.step, "final_loss": result.losses[-1] if result.losses else None, "pairs": pairs,
         "before": before, "after": after, "lora": asdict(cfg.lora) if cfg.peft == "lora" else None},
        indent=2) + "\n")


_TITLES = {"sigmoid": "DPO", "ipo": "IPO", "simpo": "SimPO", "orpo": "ORPO"}


def _loss_options(cfg: DPOConfig) -> str:
    return {"simpo": f", γ {cfg.simpo_gamma}", "orpo": f", λ {cfg.orpo_lambda}"}.get(cfg.loss_type, "")
