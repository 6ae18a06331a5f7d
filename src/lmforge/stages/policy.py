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
from pathlib import Path
from typing import Literal

from lmforge.model.peft import (LoRAConfig, apply_peft, load_adapter_weights, merge_and_unload,
                                save_adapter)
from lmforge.stages.common import export_model, model_checkpointing
from lmforge.model.load import load_pretrained
from lmforge.tokenizer import Tokenizer
from lmforge.train.logprobs import ReferenceFn, adapter_reference, frozen_reference
from lmforge.train.loop import Checkpointing

Peft = Literal["none", "lora"]


def load_policy(source: str, tokenizer_dir: str, peft: Peft, lora: LoRAConfig, rt):
    """(model, tokenizer) from a model directory, .gguf file or hub name, PEFT attached."""
    if not source:
        raise ValueError("--model is required: a model directory, .gguf file or hub name")
    model, tok = load_pretrained(source, rt.device)
    if tokenizer_dir:
        tok = Tokenizer.from_dir(tokenizer_dir)
    return apply_peft(model, peft, lora=lora), tok


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


def export_merged(model, tok, out_dir: Path) -> None:
    """A plain HF model directory with the adapter folded in (for later stages and serving)."""
    export_model(merge_and_unload(copy.deepcopy(model)), tok, out_dir)
