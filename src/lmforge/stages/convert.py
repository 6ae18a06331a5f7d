"""`lmforge convert SRC DST`: any model we can read -> a Hugging Face model directory.

    lmforge convert runs/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf runs/smollm2
    lmforge convert HuggingFaceTB/SmolLM2-135M-Instruct runs/smollm2   # hub (needs network)
    lmforge convert runs/sft-lora/model runs/sft-lora/merged          # PEFT LoRA -> merged

`load_pretrained` is what every stage uses to open a model: a directory (ours or a
Llama/Qwen2/Qwen3 HF checkpoint), a `.gguf` file, a PEFT adapter directory (its base is
loaded from `base_model_name_or_path`, then the adapter attached), or a hub name, fetched
with huggingface_hub's `snapshot_download` (imported only then).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from lmforge.errors import InputError
from lmforge.model.hub import load_model
from lmforge.model.peft import CONFIG_FILE, load_adapter, merge_and_unload
from lmforge.stages.common import export_model
from lmforge.tokenizer import Tokenizer

UNMERGEABLE = {"PROMPT_TUNING": "prompt-tuning", "LMFORGE_BOTTLENECK": "bottleneck (Houlsby)"}
HUB_FILES = ["*.json", "*.safetensors", "*.jinja", "tokenizer.model", "*.txt"]


@dataclass
class ConvertConfig:
    src: str = ""  # model directory, .gguf file, PEFT adapter directory or hub name
    dst: str = ""  # output directory (Hugging Face format)
    dtype: str = "float32"  # float32 | bfloat16 weights in the output


def convert(cfg: ConvertConfig) -> Path:
    if not cfg.src or not cfg.dst:
        raise InputError("usage: lmforge convert SRC DST")
    model, tok = load_pretrained(cfg.src, dtype=getattr(torch, cfg.dtype))
    kind = getattr(model, "peft_config", {}).get("peft_type")
    if kind in UNMERGEABLE:
        # Virtual tokens are inputs and Houlsby adapters are extra non-linear layers: neither
        # is a weight update that a plain Llama checkpoint could hold.
        raise InputError(f"a {UNMERGEABLE[kind]} adapter cannot be merged into weights; use the "
                         "adapter directory itself (chat, generate and sft load its base)", cfg.src)
    model = merge_and_unload(model)
    export_model(model, tok, Path(cfg.dst))
    print(f"{cfg.src} -> {cfg.dst}: {model.num_params() / 1e6:.1f}M parameters, "
          f"{model.config.num_hidden_layers} layers, vocab {tok.vocab_size}")
    return Path(cfg.dst)


def load_pretrained(source: str | os.PathLike, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32,
                    download: Callable[[str], str] | None = None):
    """-> (model, Tokenizer) from a directory, .gguf file, adapter directory or hub name."""
    path = Path(source)
    if path.is_file() and path.suffix == ".gguf":
        from lmforge.model.gguf import load_gguf

        return load_gguf(path, device, dtype)
    if path.is_dir():
        if (path / CONFIG_FILE).exists() and not (path / "config.json").exists():
            return _load_with_adapter(path, device, dtype, download)
        if not (path / "config.json").exists():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return load_pretrained(ggufs[0], device, dtype)
        return load_model(path, device, dtype), Tokenizer.from_dir(path)
    if path.exists() or str(source).startswith((".", "/")) or str(source).count("/") != 1:
        raise InputError("not a model directory, .gguf file or hub name (owner/name)", source)
    return load_pretrained((download or hub_download)(str(source)), device, dtype)


def hub_download(repo_id: str) -> str:
    """The local snapshot of a hub model (weights, config, tokenizer files only)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise InputError("loading by hub name needs `pip install huggingface_hub`", repo_id) from e
    return snapshot_download(repo_id, allow_patterns=HUB_FILES)


def _load_with_adapter(path: Path, device, dtype, download):
    config = json.loads((path / CONFIG_FILE).read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise InputError(f"{CONFIG_FILE} names no base_model_name_or_path", path)
    model, tok = load_pretrained(base, device, dtype, download)
    if (path / "tokenizer.json").exists():
        tok = Tokenizer.from_dir(path)
    return load_adapter(model, path).to(device), tok
