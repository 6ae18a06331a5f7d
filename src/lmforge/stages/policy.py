"""A policy to fine-tune (full or LoRA), its reference, and how it is checkpointed.

    model, tok = load_policy("runs/sft/model", "", "lora", LoRAConfig(r=8), rt)
    ckpt = policy_checkpointing(model, tok, run_dir / "model", peft="lora")
    reference = make_reference(model, "adapter")        # or "copy"

Shared by the post-training stages (sft, dpo, grpo): with LoRA the checkpoint is a PEFT adapter
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
from lmforge.stages.common import export_model, model_checkpointing
from lmforge.model.load import load_pretrained
from lmforge.tokenizer import Tokenizer
from lmforge.train.logprobs import ReferenceFn, adapter_reference, frozen_reference
from lmforge.train.loop import Checkpointing

Peft = Literal["none", "lora"]


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
