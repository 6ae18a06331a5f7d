"""`lmforge kto`: desirable / undesirable completions (unpaired) -> an aligned policy (KTO).

    lmforge kto configs/kto_tiny.yaml --model runs/demo/sft/model
    lmforge kto --model M --data feedback.jsonl --peft lora --beta 0.1 --undesirable_weight 1.2
    lmforge kto --model M --pairs prefs.jsonl          # preference pairs: 2 examples each

config -> policy (+ reference) -> KTOBatches -> kto_objective -> train(), the same path as
`lmforge dpo`: reference log-probs precomputed once for full fine-tuning, the
adapter-disabled base with LoRA. The run directory receives config.yaml, run.json,
metrics.jsonl, model/ (HF checkpoint, or a PEFT adapter plus merged/ with LoRA), summary.json
and report.md. Held-out examples (prompts never trained on) are measured before and after:
how often the policy's own per-token log-likelihood ranks a desirable completion above an
undesirable one (AUC, a real number before training too), and the mean log π/π_ref of each
kind (0 before training, by construction).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch

from lmforge.config import ConfigError
from lmforge.data.kto import KTOBatches, hold_out_examples, read_examples, render_examples
from lmforge.eval.preference import separation_auc
from lmforge.model.peft import LoRAConfig
from lmforge.model.quantize import Scheme
from lmforge.report import plot_series, record_run, write_report
from lmforge.runtime import Runtime
from lmforge.stages.common import RunOptions
from lmforge.stages.policy import (Peft, Reference, export_merged, load_policy, make_reference, reference_kind,
                                   train_policy)
from lmforge.train.logprobs import label_mask, masked_mean, masked_sum, policy_logprobs
from lmforge.train.loop import LoopConfig
from lmforge.train.metrics import read_metrics
from lmforge.train.objectives.kto import kto_objective
from lmforge.train.optim import OptimConfig
from lmforge.train.parallel import Parallel, check_parallel


@dataclass
class KTOConfig(RunOptions):
    run_dir: str = "runs/kto"  # where the model, metrics and report go
    model: str = ""  # the starting policy: a model directory (usually an SFT model)
    tokenizer: str = ""  # tokenizer dir (default: the model dir)
    data: list[str] = field(default_factory=list)  # KTO JSONL files: prompt|messages, completion, label
    pairs: list[str] = field(default_factory=list)  # preference-pair files: chosen desirable, rejected not
    on_error: Literal["raise", "skip"] = "raise"  # malformed records: fail, or count and skip
    max_len: int = 256  # tokens per rendered example (longer ones are cut)
    eval_data: list[str] = field(default_factory=list)  # held-out KTO files
    eval_pairs: list[str] = field(default_factory=list)  # held-out pair files
    eval_percent: int = 10  # without eval files: share of prompts held out (by a hash of the prompt)
    batch_size: int = 8  # examples per micro-batch (z0 is their mean: larger is less noisy)
    beta: float = 0.1  # strength of the implicit KL to the reference
    desirable_weight: float = 1.0  # λ_D; the paper keeps λ_D·n_D / (λ_U·n_U) within [1, 4/3]
    undesirable_weight: float = 1.0  # λ_U
    reference: Reference = "auto"  # auto: adapter with LoRA, else precompute
    peft: Peft = "none"  # none = full fine-tuning | lora
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    quantize: Scheme = "none"  # QLoRA: int8 | int4 frozen base under the PEFT method (needs peft != none)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-6, warmup_steps=10, weight_decay=0.0))
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=100, eval_every_steps=50))
    parallel: Parallel = "ddp"  # with several processes (torchrun): ddp (whole replicas) | fsdp (FSDP2 shards)

    def __post_init__(self):
        check_parallel(self)


def kto(cfg: KTOConfig):
    if not (cfg.data or cfg.pairs):
        raise ConfigError("lmforge kto needs --data (KTO records) or --pairs (preference pairs), or both")
    examples = read_examples(cfg.data, cfg.pairs, cfg.on_error)  # bad data fails before a model is loaded
    eval_files = cfg.eval_data or cfg.eval_pairs
    eval_examples = read_examples(cfg.eval_data, cfg.eval_pairs, cfg.on_error) if eval_files else None
    rt = Runtime.setup(cfg.device, cfg.dtype, cfg.seed)
    run_dir = Path(cfg.run_dir)
    model, tok = load_policy(cfg.model, cfg.tokenizer, cfg.peft, cfg.lora, rt, cfg.quantize)
    train_examples, held_out = hold_out_examples(examples, eval_examples, cfg.eval_percent)
    train_examples, held_out = (render_examples(tok, e, cfg.max_len, cfg.seed) for e in (train_examples, held_out))
    record_run(run_dir, cfg, rt, data_files=[Path(p) for p in cfg.data + cfg.pairs + cfg.eval_data + cfg.eval_pairs])
    pad_id = tok.pad_id or 0
    batches = KTOBatches(train_examples, cfg.batch_size, pad_id, cfg.seed, rt.rank, rt.world_size)
    held = KTOBatches(held_out, cfg.batch_size, pad_id) if held_out else None
    kind = reference_kind(cfg.reference, cfg.peft)
    if kind == "precompute":
        for source in filter(None, (batches, held)):
            source.precompute_reference(model, rt.autocast)
    reference = make_reference(model, kind)
    objective = kto_objective(cfg.beta, cfg.desirable_weight, cfg.undesirable_weight, reference)
    counts = {"train": _count(train_examples), "held_out": _count(held_out)}
    n = counts["train"]
    balance = cfg.desirable_weight * n["desirable"] / max(1e-9, cfg.undesirable_weight * n["undesirable"])
    rt.print(f"kto: {_describe(n)} train / {_describe(counts['held_out'])} held-out examples, beta {cfg.beta}, "
             f"reference: {kind}, peft: {cfg.peft}; λ_D·n_D / λ_U·n_U = {balance:.2f} (the paper: 1 to 4/3)")

    evaluate = lambda step: _evaluate_examples(model, held, reference, cfg.batch_size, rt)  # noqa: E731
    before = evaluate(0)
    rt.print(f"held-out separation of desirable from undesirable by the policy's likelihood before: {_auc(before)}")
    result = train_policy(model, tok, objective, batches, cfg, rt, run_dir, evaluate if held else None)
    after = evaluate(result.step)
    rt.print(f"held-out separation after: {_auc(after)} (before {_auc(before)})")
    if rt.is_main:
        if cfg.peft == "lora":
            export_merged(model, tok, run_dir / "merged", cfg.model)
        _write_kto_report(run_dir, cfg, result, before, after, counts)
    return result


def _count(examples) -> dict:
    desirable = sum(e.desirable for e in examples)
    return {"desirable": desirable, "undesirable": len(examples) - desirable}


def _describe(count: dict) -> str:
    return f"{count['desirable']} desirable + {count['undesirable']} undesirable"


@torch.no_grad()
def _evaluate_examples(model, held: KTOBatches | None, reference, batch_size: int, rt) -> dict:
    """Held-out: the AUC of the policy's per-token log-likelihood (desirable vs undesirable),
    and the mean log π/π_ref of each kind (reference as in training)."""
    if held is None:
        return {}
    was_training = model.training
    model.eval()
    log_ratios, per_token, desirable = [], [], []
    for batch in held.in_order(batch_size):
        x, y = batch["input_ids"].to(rt.device), batch["labels"].to(rt.device)
        mask = label_mask(y)
        with rt.autocast():
            logps = policy_logprobs(model, x, y).float()
            ref = batch["ref_logps"].to(rt.device) if "ref_logps" in batch else masked_sum(reference(x, y), mask)
        log_ratios.append((masked_sum(logps, mask) - ref.float()).cpu())
        per_token.append(masked_mean(logps, mask).cpu())
        desirable.append(batch["desirable"])
    model.train(was_training)
    log_ratio, score, good = torch.cat(log_ratios), torch.cat(per_token), torch.cat(desirable)
    return {"eval/separation_auc": separation_auc(score[good], score[~good]),
            "eval/log_ratio_desirable": float(log_ratio[good].mean()),
            "eval/log_ratio_undesirable": float(log_ratio[~good].mean()),
            "eval/logps_per_token_desirable": float(score[good].mean()),
            "eval/logps_per_token_undesirable": float(score[~good].mean()),
            "eval/examples": len(good)}


def _auc(metrics: dict) -> str:
    if "eval/separation_auc" not in metrics:
        return "n/a (no held-out examples)"
    return f"AUC {metrics['eval/separation_auc']:.3f} ({metrics['eval/examples']} examples)"


def _write_kto_report(run_dir: Path, cfg: KTOConfig, result, before: dict, after: dict, counts: dict) -> None:
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "train/loss" in r]
    steps = [r["step"] for r in rows]
    get = lambda d, k: d.get(f"eval/{k}", float("nan"))  # noqa: E731
    lines = [f"- policy: {cfg.model} ({cfg.peft}), beta {cfg.beta}, weights λ_D {cfg.desirable_weight} "
             f"λ_U {cfg.undesirable_weight}",
             f"- examples: {_describe(counts['train'])} train, {_describe(counts['held_out'])} held out "
             "(by prompt hash)",
             f"- steps: {result.step} ({result.skipped_steps} skipped)",
             f"- **held-out: how often the policy's per-token log-likelihood ranks a desirable completion "
             f"above an undesirable one (AUC, ties 0.5): {_auc(before)} -> {_auc(after)}**",
             f"- held-out mean log π/π_ref (0 at the start by construction): desirable "
             f"{get(after, 'log_ratio_desirable'):.3f}, undesirable {get(after, 'log_ratio_undesirable'):.3f}",
             f"- final train loss: {result.losses[-1]:.4f}" if result.losses else "- no steps run",
             f"- model directory: {run_dir / 'model'}" + (" (PEFT adapter; merged model in merged/)"
                                                          if cfg.peft == "lora" else " (Hugging Face format)")]
    plots = {"loss.png": plot_series({"train": (steps, [r["train/loss"] for r in rows])}, "step", "KTO loss"),
             "rewards.png": plot_series({"desirable": (steps, [r["train/rewards_desirable"] for r in rows]),
                                         "undesirable": (steps, [r["train/rewards_undesirable"] for r in rows])},
                                        "step", "β·log π/π_ref"),
             "kl.png": plot_series({"z0": (steps, [r["train/kl"] for r in rows])}, "step", "KL estimate z0")}
    write_report(run_dir, "KTO report", lines, plots)
    (run_dir / "summary.json").write_text(json.dumps(
        {"step": result.step, "final_loss": result.losses[-1] if result.losses else None, "examples": counts,
         "before": before, "after": after, "lora": asdict(cfg.lora) if cfg.peft == "lora" else None},
        indent=2) + "\n")
