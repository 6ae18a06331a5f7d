"""Hugging Face checkpoint directories <-> our Transformer.

    save_model(model, "runs/x/model", eos_token_ids=[2], bos_token_id=1)
    model = load_model("runs/x/model")          # also loads Llama/Qwen2/Qwen3 HF checkpoints

Because parameter names are identical to transformers', loading and saving is a file
operation: `config.json` holds LlamaConfig fields and `model.safetensors` the weights
(without `lm_head.weight` when embeddings are tied, as transformers writes it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lmforge.errors import InputError
from lmforge.model.transformer import ModelConfig, Transformer

# HF architectures we read, and what each implies about our optional features.
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}


def model_config_to_hf(cfg: ModelConfig) -> dict:
    """LlamaConfig (or Qwen2/Qwen3 when those features are on) fields for config.json."""
    model_type = "qwen3" if cfg.qk_norm else "qwen2" if cfg.attention_bias else "llama"
    if cfg.qk_norm and cfg.attention_bias:
        raise ValueError("qk_norm with q/k/v bias has no transformers architecture to export to")
    hf = {
        "architectures": [ARCHITECTURES[model_type]],
        "model_type": model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.rms_norm_eps,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "hidden_act": "silu",
        "initializer_range": cfg.initializer_range,
        "torch_dtype": "float32",
    }
    if model_type == "llama":
        hf.update(attention_bias=False, mlp_bias=False)
    return hf


def model_config_from_hf(hf: dict, where: object = "config.json") -> ModelConfig:
    model_type = hf.get("model_type", "llama")
    if model_type not in ARCHITECTURES:
        raise InputError(f"model_type {model_type!r} is not a supported architecture "
                         f"(supported: {', '.join(ARCHITECTURES)})", where)
    # transformers 5 writes rope_theta and any scaling into `rope_parameters`; 4.x wrote them
    # at the top level (`rope_theta`, `rope_scaling`).
    rope = {"rope_theta": hf.get("rope_theta", 10000.0), **(hf.get("rope_parameters") or {})}
    if hf.get("rope_scaling") not in (None, {}) and hf["rope_scaling"].get("rope_type") != "default":
        raise InputError(f"rope_scaling {hf['rope_scaling']} is not supported", where)
    if rope.get("rope_type", "default") != "default":
        raise InputError(f"rope_parameters {hf['rope_parameters']} (scaled RoPE) is not supported", where)
    try:
        heads = hf["num_attention_heads"]
        return ModelConfig(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_hidden_layers=hf["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
            max_position_embeddings=hf.get("max_position_embeddings", 2048),
            rope_theta=float(rope["rope_theta"]),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            attention_bias=model_type == "qwen2" or bool(hf.get("attention_bias", False)),
            qk_norm=model_type == "qwen3",
            initializer_range=float(hf.get("initializer_range", 0.02)),
        )
    except KeyError as e:
        raise InputError(f"missing field {e.args[0]!r}", where) from None


def save_model(model: Transformer, out_dir: str | os.PathLike, *, bos_token_id: int | None = None,
               eos_token_ids: list[int] | None = None, pad_token_id: int | None = None,
               state: dict[str, torch.Tensor] | None = None) -> None:
    """Write config.json, model.safetensors and generation_config.json into out_dir; the
    weights are `state` when given (a sharded model's gathered tensors), else the model's."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf = model_config_to_hf(model.config)
    eos = list(eos_token_ids or [])
    hf.update(bos_token_id=bos_token_id, eos_token_id=eos[0] if len(eos) == 1 else eos or None,
              pad_token_id=pad_token_id)
    (out / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in (model.state_dict() if state is None else state).items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    generation = {"bos_token_id": bos_token_id, "eos_token_id": eos or None,
                  "pad_token_id": pad_token_id, "do_sample": True, "temperature": 0.8, "top_p": 0.95}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> Transformer:
    """Load an HF checkpoint directory (ours or a Llama/Qwen2/Qwen3 one) into a Transformer."""
    path = Path(path)
    config_path = path / "config.json"
    if not config_path.exists():
        raise InputError("no config.json: not a model directory", path)
    try:
        hf = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON: {e}", config_path) from None
    cfg = model_config_from_hf(hf, config_path)
    return model_from_state(cfg, read_safetensors(path), path, device).to(dtype)


def model_from_state(cfg: ModelConfig, state: dict[str, torch.Tensor], where: object,
                     device: str | torch.device = "cpu") -> Transformer:
    """A Transformer holding `state` (HF names; the tied head may be absent), checked
    against `cfg` so that a missing or extra tensor names the file it came from."""
    with torch.device("meta"):  # no time spent on a random init that is overwritten
        model = Transformer(cfg)
    model = model.to_empty(device=device)
    if cfg.tie_word_embeddings:
        state["lm_head.weight"] = state.get("model.embed_tokens.weight")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wrong = [f"{k} {tuple(v.shape)} (config says {expected[k]})" for k, v in state.items()
             if v is not None and k in expected and tuple(v.shape) != expected[k]]
    if wrong:  # e.g. a config.json vocab_size that is not the embedding's
        raise InputError(f"weights do not match config.json (vocab_size, hidden_size, ...): {wrong[0]}", where)
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in state.items() if v is not None}, strict=False)
    if missing or unexpected:
        raise InputError(f"weights do not match the config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}", where)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.reset_rope()
    return model


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """model.safetensors, or the shards listed in model.safetensors.index.json."""
    single = path / "model.safetensors"
    if single.exists():
        return _load_safetensors(single)
    index = path / "model.safetensors.index.json"
    if not index.exists():
        raise InputError("no model.safetensors or model.safetensors.index.json", path)
    files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(_load_safetensors(path / f))
    return state


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 (safetensors raises its own error type, not OSError)
        raise InputError(f"unreadable safetensors file (truncated or corrupt?): {e}", path) from None
