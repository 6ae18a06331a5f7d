"""A policy to fine-tune (full or LoRA), its reference, and how it is checkpointed.

    model, tok = load_policy("runs/sft/model", "", "lora", LoRAConfig(r=8), rt)
    ckpt = policy_checkpointing(model, tok, run_dir / "model", peft="lora")
    reference = make_reference(model, "adapter")        # or "copy"
    result = train_policy(model, tok, objective, batches, cfg, rt, run_dir, evaluate)   # dpo, kto

Shared by the post-training stages (sft, dpo, kto, grpo): with LoRA the checkpoint is a PEFT adapter
directory and the reference is the same model with the adapter switched off; with full
fine-tuning the checkpoint is an HF model directory and the reference a frozen copy (or
log-probs precomputed once, when the data is fixed).
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Literal

from lmforge.config import ConfigError
from lmforge.model.peft import (LoRAConfig, apply_peft, load_adapter_weights, merge_and_unload,
                                save_adapter, unwrap)
from lmforge.model.quantize import Scheme, quantize as quantize_weights
from lmforge.stages.common import export_model, model_checkpointing, task_evaluators
from lmforge.model.load import load_pretrained
from lmforge.tokenizer import Tokenizer
from lmforge.train.logprobs import ReferenceFn, adapter_reference, frozen_reference
from lmforge.train.loop import Checkpointing, Periodic, TrainResult, train
from lmforge.train.metrics import MetricsLog
from lmforge.train.optim import build_optimizer
from lmforge.train.parallel import wrap_model

Peft = Literal["none", "lora"]
Reference = Literal["auto", "precompute", "copy", "adapter", "none"]  # see reference_kind


def load_policy(source: str, tokenizer_dir: str, peft: Peft, lora: LoRAConfig, rt,
                quantize: Scheme = "none"):
    """(model, tokenizer) from a model directory, .gguf file or hub name, PEFT attached
    (on an int8/int4 base when quantize is set: QLoRA)."""
    if not source:
        raise ValueError("--model is required: a model directory, .gguf file or hub name")
    model, tok = load_pretrained(source, rt.device)
    model = quantize_base(model, quantize, peft)
    if tokenizer_dir:
        tok = Tokenizer.from_dir(tokenizer_dir)
    return apply_peft(model, peft, lora=lora), tok


def quantize_base(model, quantize: Scheme, peft: str):
    """The frozen base of a PEFT run stored int8/int4 (QLoRA). The layers only: the head stays
    float, as the fused head loss reads it and a tied head is the (float) embedding anyway."""
    if quantize != "none" and peft == "none":
        raise ConfigError(f"quantize={quantize} freezes the base weights: it needs a PEFT method "
                          "(QLoRA is --peft lora --quantize int4); full fine-tuning trains them")
    return quantize_weights(model, quantize, head="none")


def reference_kind(requested: str, peft: str, needed: bool = True) -> str:
    """The reference a stage uses: "auto" is the adapter-disabled base with LoRA, else
    log-probs precomputed once; "none" when the loss needs none (SimPO, ORPO)."""
    if not needed:
        if requested not in ("auto", "none"):
            raise ConfigError(f"reference={requested}: this loss uses no reference model (leave reference: auto)")
        return "none"
    if requested == "none":
        raise ConfigError("reference=none: this loss compares the policy to a reference "
                          "(auto | precompute | copy | adapter)")
    if requested == "auto":
        return "adapter" if peft == "lora" else "precompute"
    return requested


def make_reference(model, kind: str) -> ReferenceFn | None:
    """"adapter" (LoRA: base weights, no copy), "copy" (frozen copy), "none"."""
    if kind == "adapter":
        return adapter_reference(model)
    if kind == "copy":
        return frozen_reference(model)
    if kind in ("none", "precompute"):
        return None
    raise ValueError(f"unknown reference {kind!r} (adapter | copy | precompute | none)")


def policy_checkpointing(model, tok, path: Path, peft: str, base_model: str = "") -> Checkpointing:
    """Full fine-tuning: an HF checkpoint; any PEFT method: its adapter (PEFT format) + tokenizer."""
    if peft == "none":
        return model_checkpointing(model, tok, path)

    def save(d: Path) -> None:
        save_adapter(model, d, base_model)
        tok.save(d)

    return Checkpointing(path=Path(path), save_model=save,
                         load_model=lambda d: load_adapter_weights(model, d))


def export_merged(model, tok, out_dir: Path, base_model: str = "") -> None:
    """A plain HF model directory with the adapter folded in (for later stages and serving).
    A quantized base (QLoRA) is not what the update belongs on: the adapter goes onto the
    float base it was loaded from, so the merge is not rounded to int8/int4."""
    if getattr(unwrap(model), "quantization", None):
        with tempfile.TemporaryDirectory() as adapter_dir:
            save_adapter(model, adapter_dir, base_model)
            model, _ = load_pretrained(adapter_dir)
        export_model(merge_and_unload(model), tok, out_dir)
        return
    export_model(merge_and_unload(copy.deepcopy(model)), tok, out_dir)


def train_policy(model, tok, objective, batches, cfg, rt, run_dir: Path, evaluate=None) -> TrainResult:
    """The one loop for an offline preference stage (dpo, kto): `cfg` carries its optim, loop,
    peft and logging fields; `evaluate(step)` (held-out metrics) runs every
    loop.eval_every_steps when that is before the end, `--eval_tasks` likewise."""
    log = MetricsLog(run_dir, cfg.tensorboard, cfg.wandb_project or None, rt.is_main)
    train_model = wrap_model(model, rt, cfg.compile, cfg.parallel)  # before the optimizer: FSDP2 shards in place
    optimizer = build_optimizer(model, cfg.optim, rt.device, model.config.hidden_size)
    held_out = ([Periodic(cfg.loop.eval_every_steps, evaluate)]
                if evaluate is not None and cfg.loop.eval_every_steps < cfg.loop.max_steps else [])
    result = train(train_model, objective, batches, optimizer,
                   loop=cfg.loop, optim=cfg.optim, runtime=rt, log=log,
                   checkpoint=policy_checkpointing(model, tok, run_dir / "model", cfg.peft, cfg.model),
                   evaluators=held_out + task_evaluators(cfg.eval_tasks, model, tok, cfg.loop.eval_every_steps,
                                                         chat=True),
                   resume=cfg.resume)
    log.close()
    return result
