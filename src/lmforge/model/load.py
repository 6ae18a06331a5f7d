"""Open any model a user names: the one loader every stage uses.

    model, tok = load_pretrained("runs/demo/sft/model")                 # our dir or an HF dir
    model, tok = load_pretrained("SmolLM2-135M-Instruct.Q4_1.gguf")     # llama.cpp file
    model, tok = load_pretrained("runs/sft-lora/model")                 # PEFT adapter + its base
    model, tok = load_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")  # hub (needs network)

A directory is ours or a Llama/Qwen2/Qwen3 HF checkpoint; a directory holding one `.gguf`
loads that file; a PEFT adapter directory loads its base from `base_model_name_or_path`,
then attaches the adapter; a hub name is fetched with huggingface_hub's
`snapshot_download` (imported only then). `quantize="int8" | "int4"` stores the loaded
weights packed for inference (model/quantize.py), or as a frozen base for QLoRA.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import torch

from lmforge.errors import InputError
from lmforge.model.hub import load_model
from lmforge.model.peft import CONFIG_FILE, load_adapter, lora_modules, merge_and_unload
from lmforge.model.quantize import Scheme, quantize as quantize_weights
from lmforge.tokenizer import Tokenizer

HUB_FILES = ["*.json", "*.safetensors", "*.jinja", "tokenizer.model", "*.txt"]


def load_pretrained(source: str | os.PathLike, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32,
                    download: Callable[[str], str] | None = None, quantize: Scheme = "none"):
    """-> (model, Tokenizer) from a directory, .gguf file, adapter directory or hub name."""
    path = Path(source)
    if path.is_dir() and not (path / "config.json").exists() and not (path / CONFIG_FILE).exists():
        ggufs = sorted(path.glob("*.gguf"))
        path = ggufs[0] if len(ggufs) == 1 else path
    if path.is_file() and path.suffix == ".gguf":
        from lmforge.model.gguf import load_gguf

        return load_gguf(path, device, dtype, quantize)
    if quantize != "none":
        model, tok = load_pretrained(source, device, dtype, download)
        if lora_modules(model):  # an adapter: fold it in first, then round the sum once
            model = merge_and_unload(model)
        return quantize_weights(model, quantize), tok
    if path.is_dir():
        if (path / CONFIG_FILE).exists() and not (path / "config.json").exists():
            return _load_with_adapter(path, device, dtype, download)
        return matched(load_model(path, device, dtype), Tokenizer.from_dir(path), path)
    if path.exists() or str(source).startswith((".", "/")) or str(source).count("/") != 1:
        raise InputError("not a model directory, .gguf file or hub name (owner/name)", source)
    return load_pretrained((download or hub_download)(str(source)), device, dtype)


def matched(model, tok, where: object):
    """(model, tok), once every token id the tokenizer can produce has a row in the embedding."""
    if tok.vocab_size > model.config.vocab_size:
        raise InputError(f"the tokenizer has {tok.vocab_size} tokens but the model's vocab_size is "
                         f"{model.config.vocab_size}: a tokenizer from another model?", where)
    return model, tok


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
