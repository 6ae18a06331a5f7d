"""Import a llama.cpp GGUF file (weights, config, tokenizer) into our Transformer.

    model, tok = load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
    export_model(model, tok, "runs/smollm2")     # lmforge.stages.common: an HF directory

Reads with the `gguf` package (no transformers). Quantised tensors (Q4_1, Q8_0, ...) are
dequantised to fp32 by `gguf.quants.dequantize`, so the result is the quantised model's
weights exactly, not the original fp16 ones. With `quantize="int4"`, Q4_0 and Q4_1 matrices
skip that detour: their 4-bit blocks become our int4 layers as they are (model/quantize.py). llama.cpp's converter permutes the rows of
Llama q/k projections into its interleaved RoPE layout; we undo that permutation (Qwen2
and Qwen3 files are not permuted: llama.cpp runs those with HF's rotate-half RoPE). The
tokenizer is rebuilt as an HF `tokenizers` byte-level BPE from the stored vocabulary and
merges, with the file's special tokens and chat template. The way back, our model to a
GGUF file, is gguf_export.py, which shares the names and layouts defined here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from lmforge.errors import InputError
from lmforge.model.hub import model_from_state
from lmforge.model.quantize import QuantizedLinear, Scheme, quantize as quantize_weights
from lmforge.model.transformer import ModelConfig

# llama.cpp tensor names -> ours (= HF's); "{i}" is the layer number.
TENSOR_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_q.bias": "model.layers.{i}.self_attn.q_proj.bias",
    "blk.{i}.attn_k.bias": "model.layers.{i}.self_attn.k_proj.bias",
    "blk.{i}.attn_v.bias": "model.layers.{i}.self_attn.v_proj.bias",
    "blk.{i}.attn_q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
    "blk.{i}.attn_k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}
SUPPORTED = ("llama", "qwen2", "qwen3")
# llama.cpp's token types (gguf.TokenType) of special tokens, and of added tokens that are
# matched in text but are not special.
TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED = 3, 4


def _open_gguf(path: Path):
    """A GGUFReader over a file whose every tensor lies inside it (a cut file otherwise fails
    deep in a reshape)."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # noqa: BLE001 (gguf raises ValueError, struct.error, IndexError...)
        raise InputError(f"unreadable GGUF header (truncated or corrupt?): {type(e).__name__}: {e}", path) from None
    size = path.stat().st_size
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size or t.data.size * t.data.itemsize < t.n_bytes:
            raise InputError(f"truncated GGUF: tensor {t.name!r} ends past the end of the file", path)
    return reader


def load_gguf(path: str | os.PathLike, device: str | torch.device = "cpu",
              dtype: torch.dtype = torch.float32, quantize: Scheme = "none"):
    """-> (Transformer, lmforge Tokenizer) from a GGUF file, its weights quantized (int8 |
    int4) when asked; Q4_0/Q4_1 matrices are then taken over exactly as int4."""
    import gguf

    path = Path(path)
    if not path.exists():
        raise InputError("no such GGUF file", path)
    reader = _open_gguf(path)
    meta = {name: _field_value(f) for name, f in reader.fields.items()
            if not name.startswith("tokenizer.ggml.") or name.endswith("_id")}
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED:
        raise InputError(f"architecture {arch!r} is not supported ({', '.join(SUPPORTED)})", path)
    names = {t.name for t in reader.tensors}
    cfg = gguf_model_config(meta, arch, vocab_size=len(reader.fields["tokenizer.ggml.tokens"].data),
                            tied="output.weight" not in names, bias="blk.0.attn_q.bias" in names)
    state, prebuilt = {}, {}
    q4 = (gguf.GGMLQuantizationType.Q4_0, gguf.GGMLQuantizationType.Q4_1)
    for tensor in reader.tensors:
        name = _our_name(tensor.name)
        if name is None:
            raise InputError(f"unexpected tensor {tensor.name!r}", path)
        if quantize == "int4" and tensor.tensor_type in q4 and name.endswith("proj.weight"):
            q, d, m = q4_blocks(tensor.data, tensor.tensor_type == q4[1], int(tensor.shape[0]))
            if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
                heads = cfg.num_attention_heads if "q_proj" in name else cfg.num_key_value_heads
                q, d, m = (unpermute_rope_rows(x, heads) if x is not None else None for x in (q, d, m))
            prebuilt[name.removesuffix(".weight")] = QuantizedLinear.from_gguf_q4(q, d, m)
            state[name] = torch.zeros(()).expand(q.shape)  # a placeholder: the layer is replaced
            continue
        weights = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        weights = torch.from_numpy(np.ascontiguousarray(
            weights.reshape(tuple(reversed([int(d) for d in tensor.shape])))).astype(np.float32))
        if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = cfg.num_attention_heads if "q_proj" in name else cfg.num_key_value_heads
            weights = unpermute_rope_rows(weights, heads)
        state[name] = weights
    model = model_from_state(cfg, state, path)
    model = quantize_weights(model, quantize, prebuilt=prebuilt) if quantize != "none" else model
    return model.to(device=device, dtype=dtype), gguf_tokenizer(reader)


def q4_blocks(data: np.ndarray, has_min: bool, cols: int):
    """Raw Q4_0 / Q4_1 rows -> (q (rows, cols) uint8 in 0..15, d (rows, cols/32), m or None).

    A block covers 32 weights: fp16 d, (Q4_1: fp16 m,) then 16 bytes whose low nibbles are
    weights 0..15 and high nibbles weights 16..31 (ggml's dequantize_row_q4_0/_1)."""
    header = 4 if has_min else 2
    blocks = np.asarray(data, dtype=np.uint8).reshape(-1, cols // 32, header + 16)
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    m = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32) if has_min else None
    nibbles = blocks[..., header:]
    q = np.concatenate([nibbles & 15, nibbles >> 4], axis=-1).reshape(blocks.shape[0], cols)
    return (torch.from_numpy(q), torch.from_numpy(d),
            None if m is None else torch.from_numpy(m))


def gguf_model_config(meta: dict, arch: str, vocab_size: int, tied: bool, bias: bool) -> ModelConfig:
    """Our config from a GGUF's `{arch}.*` hyperparameters (defaults as llama.cpp's)."""
    get = lambda key, default=None: meta.get(f"{arch}.{key}", default)  # noqa: E731
    heads = int(get("attention.head_count"))
    hidden = int(get("embedding_length"))
    return ModelConfig(
        vocab_size=int(get("vocab_size", vocab_size)),
        hidden_size=hidden,
        intermediate_size=int(get("feed_forward_length")),
        num_hidden_layers=int(get("block_count")),
        num_attention_heads=heads,
        num_key_value_heads=int(get("attention.head_count_kv", heads)),
        head_dim=int(get("rope.dimension_count", hidden // heads)),
        max_position_embeddings=int(get("context_length", 2048)),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
        tie_word_embeddings=tied,
        attention_bias=bias,
        qk_norm=arch == "qwen3",
    )


def permute_rope_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """llama.cpp's `permute` (LlamaModel in convert_hf_to_gguf.py): per head, HF's rotate-half
    rows (all first halves, then all second halves) -> interleaved pairs, as its RoPE rotates."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, 2, half, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def unpermute_rope_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Invert `permute_rope_rows`: per head, rows (pairs interleaved) -> HF's halves."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def gguf_tokenizer(reader):
    """An lmforge Tokenizer rebuilt from the GGUF's gpt2-style BPE vocabulary and merges."""
    from tokenizers import AddedToken, decoders, models
    from tokenizers import Tokenizer as Backend

    from lmforge.tokenizer import Tokenizer

    fields = reader.fields
    kind = _field_value(fields["tokenizer.ggml.model"])
    if kind != "gpt2":
        raise InputError(f"tokenizer model {kind!r} is not supported (only byte-level BPE 'gpt2')")
    tokens = _field_value(fields["tokenizer.ggml.tokens"])
    types = _field_value(fields["tokenizer.ggml.token_type"])
    merges = [tuple(m.split(" ", 1)) for m in _field_value(fields["tokenizer.ggml.merges"])]
    backend = Backend(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    pre = _field_value(fields["tokenizer.ggml.pre"]) if "tokenizer.ggml.pre" in fields else ""
    backend.pre_tokenizer = gguf_pre_tokenizer(pre)
    backend.decoder = decoders.ByteLevel()
    specials = [tokens[i] for i, t in enumerate(types) if t == TOKEN_TYPE_CONTROL]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    backend.add_tokens([AddedToken(tokens[i], special=False, normalized=False)
                        for i, t in enumerate(types) if t == TOKEN_TYPE_USER_DEFINED])
    token_of = lambda key: (tokens[int(_field_value(fields[key]))]  # noqa: E731
                            if key in fields else None)
    config = {"tokenizer_class": "PreTrainedTokenizerFast",
              "bos_token": token_of("tokenizer.ggml.bos_token_id"),
              "eos_token": token_of("tokenizer.ggml.eos_token_id"),
              "pad_token": token_of("tokenizer.ggml.padding_token_id"),
              "unk_token": token_of("tokenizer.ggml.unknown_token_id"),
              "add_bos_token": False, "add_eos_token": False,
              "clean_up_tokenization_spaces": False, "model_max_length": 1_000_000_000,
              "additional_special_tokens": specials}
    if "tokenizer.chat_template" in fields:
        config["chat_template"] = _field_value(fields["tokenizer.chat_template"])
    return Tokenizer(backend, config)


def gguf_pre_tokenizer(pre: str):
    """An HF pre-tokenizer that splits text as llama.cpp's `tokenizer.ggml.pre` named `pre`
    does (GPT-2's regex for "gpt-2" and for names we don't know)."""
    from tokenizers import Regex, pre_tokenizers

    steps = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    if pre == "smollm":  # llama.cpp's smollm pre-tokeniser: single digits, then GPT-2's regex
        steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
    elif pre in ("qwen2", "llama3", "llama-bpe"):
        steps = [pre_tokenizers.Split(Regex(
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}" +
            ("" if pre == "qwen2" else "{1,3}") +
            r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    return pre_tokenizers.Sequence(steps)


def _field_value(field):
    """A GGUF metadata field as a Python value (str, number, or list of them)."""
    import gguf

    kind = field.types[0] if field.types else None
    if kind == gguf.GGUFValueType.ARRAY:
        sub = field.types[-1]
        parts = [field.parts[i] for i in field.data]
        if sub == gguf.GGUFValueType.STRING:
            return [bytes(p).decode("utf-8", errors="replace") for p in parts]
        return [p.tolist()[0] for p in parts]
    value = field.parts[field.data[0]]
    if kind == gguf.GGUFValueType.STRING:
        return bytes(value).decode("utf-8", errors="replace")
    return value.tolist()[0]


def _our_name(gguf_name: str) -> str | None:
    parts = gguf_name.split(".")
    if parts[0] == "blk":
        layer, key = parts[1], ".".join(["blk", "{i}"] + parts[2:])
        return TENSOR_NAMES[key].format(i=layer) if key in TENSOR_NAMES else None
    return TENSOR_NAMES.get(gguf_name)
