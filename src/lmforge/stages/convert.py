"""`lmforge convert SRC DST`: any model we can read -> a Hugging Face directory or a GGUF file.

    lmforge convert runs/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf runs/smollm2
    lmforge convert HuggingFaceTB/SmolLM2-135M-Instruct runs/smollm2   # hub (needs network)
    lmforge convert runs/sft-lora/model runs/sft-lora/merged          # PEFT LoRA -> merged
    lmforge convert runs/demo/grpo/model model.gguf --gguf_type q8_0  # -> llama.cpp

SRC is anything `lmforge.model.load.load_pretrained` opens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lmforge.errors import InputError
from lmforge.model.gguf_export import GGUF_TYPES, export_gguf
from lmforge.model.load import load_pretrained
from lmforge.model.peft import merge_and_unload
from lmforge.stages.common import export_model

UNMERGEABLE = {"PROMPT_TUNING": "prompt-tuning", "LMFORGE_BOTTLENECK": "bottleneck (Houlsby)"}


@dataclass
class ConvertConfig:
    src: str = ""  # model directory, .gguf file, PEFT adapter directory or hub name
    dst: str = ""  # output: a directory (Hugging Face format) or a .gguf file (llama.cpp)
    dtype: str = "float32"  # float32 | bfloat16 weights in the output
    gguf_type: str = "f16"  # f32 | f16 | q8_0 weights in a .gguf output (norms stay f32)


def convert(cfg: ConvertConfig) -> Path:
    if not cfg.src or not cfg.dst:
        raise InputError("usage: lmforge convert SRC DST")
    to_gguf = Path(cfg.dst).suffix == ".gguf"
    if to_gguf and cfg.gguf_type not in GGUF_TYPES:  # before minutes of loading, not after
        raise InputError(f"gguf_type {cfg.gguf_type!r} is not one of {', '.join(GGUF_TYPES)}")
    model, tok = load_pretrained(cfg.src, dtype=getattr(torch, cfg.dtype))
    kind = getattr(model, "peft_config", {}).get("peft_type")
    if kind in UNMERGEABLE:
        # Virtual tokens are inputs and Houlsby adapters are extra non-linear layers: neither
        # is a weight update that a plain Llama checkpoint could hold.
        raise InputError(f"a {UNMERGEABLE[kind]} adapter cannot be merged into weights; use the "
                         "adapter directory itself (chat, generate and sft load its base)", cfg.src)
    model = merge_and_unload(model)
    if to_gguf:
        export_gguf(model, tok, cfg.dst, cfg.gguf_type)
    else:
        export_model(model, tok, Path(cfg.dst))
    print(f"{cfg.src} -> {cfg.dst}: {model.num_params() / 1e6:.1f}M parameters, "
          f"{model.config.num_hidden_layers} layers, vocab {tok.vocab_size}")
    return Path(cfg.dst)
