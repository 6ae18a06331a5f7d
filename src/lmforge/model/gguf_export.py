"""Export our Transformer and its tokenizer as a llama.cpp GGUF file.

    export_gguf(model, tok, "model.gguf", "q8_0")          # or "f32" | "f16"
    lmforge convert runs/demo/grpo/model model.gguf --gguf_type q8_0

Writes what llama.cpp's convert_hf_to_gguf.py writes for a Llama checkpoint, through the
same `gguf` package: `llama.*` hyperparameters, llama.cpp's tensor names (gguf.py's
TENSOR_NAMES), q/k rows permuted into llama.cpp's interleaved RoPE layout, 1-D tensors
(norms, biases) kept in F32, and the tokenizer as a "gpt2" byte-level BPE. Q/K/V bias
makes the file "qwen2" and QK-norm "qwen3": the llama.cpp architectures with those
features, whose RoPE is HF's, so their rows are not permuted.

load_gguf reads the file back, and so does transformers' GGUF loader, an independent
implementation of llama.cpp's conventions; the tests compare logits with both. (bench/
could also run the file in llama.cpp itself, through llama-cpp-python.)
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import torch

from lmforge.errors import InputError
from lmforge.model.gguf import TENSOR_NAMES, gguf_pre_tokenizer, permute_rope_rows
from lmforge.model.transformer import ModelConfig

GGUF_TYPES = ("f32", "f16", "q8_0")  # tensor types of 2-D weights
# llama.cpp `tokenizer.ggml.pre` names whose splitting gguf_pre_tokenizer reproduces.
PRE_TOKENIZERS = ("qwen2", "llama-bpe", "smollm", "gpt-2")
# Text on which any two of those split differently: digit runs, case-insensitive
# contractions, a symbol before a word, whitespace and newline runs, CJK, an emoji.
PRE_TOKENIZER_PROBE = ("Hello world! I'M sure they'll don't 12345 + 3.14 = $x_1\n\n\t  a   b\r\n"
                       "  中文测试，日本語も。 😀 ...")
_GGUF_NAMES = {ours: theirs for theirs, ours in TENSOR_NAMES.items()}


def export_gguf(model, tok, path: str | os.PathLike, gguf_type: str = "f16") -> Path:
    """Write `model` (a plain Transformer: LoRA merged) and `tok` to a .gguf file."""
    import gguf

    if gguf_type not in GGUF_TYPES:
        raise InputError(f"gguf_type {gguf_type!r} is not one of {', '.join(GGUF_TYPES)}")
    cfg = model.config
    arch = gguf_arch(cfg)
    path = Path(path)
    partial = path.with_name(path.name + ".partial")  # renamed when complete: no torn files
    writer = gguf.GGUFWriter(str(partial), arch)
    try:
        _add_hyperparameters(writer, cfg, gguf_type)
        _add_tokenizer(writer, tok, cfg.vocab_size)
        for name, weights in gguf_tensors(model, arch):
            _add_tensor(writer, name, weights, gguf_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def gguf_arch(cfg: ModelConfig) -> str:
    """The llama.cpp architecture that runs this config (as hub.py picks HF's model_type)."""
    if cfg.qk_norm and cfg.attention_bias:
        raise InputError("q/k/v bias together with QK-norm: no llama.cpp architecture has both")
    return "qwen3" if cfg.qk_norm else "qwen2" if cfg.attention_bias else "llama"


def gguf_tensors(model, arch: str):
    """(llama.cpp name, fp32 numpy array) for each weight, q/k permuted for "llama"."""
    cfg = model.config
    for name, weights in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue  # llama.cpp reuses token_embd when `output` is absent
        weights = weights.detach().to(device="cpu", dtype=torch.float32)
        if arch == "llama" and name.endswith("q_proj.weight"):
            weights = permute_rope_rows(weights, cfg.num_attention_heads)
        elif arch == "llama" and name.endswith("k_proj.weight"):
            weights = permute_rope_rows(weights, cfg.num_key_value_heads)
        yield _gguf_name(name), weights.numpy()


def llama_cpp_pre(tok) -> str:
    """The llama.cpp pre-tokenizer name that splits text as `tok` does.

    llama.cpp recognises a pre-tokenizer by hashing a tokenizer's ids on a test text; we
    compare the splits of a probe text with those of each pre-tokenizer load_gguf would
    rebuild, so that a file we write reads back with the same ids.
    """
    pre_tokenizer = tok.backend.pre_tokenizer
    if pre_tokenizer is None:
        raise InputError("the tokenizer has no pre-tokenizer, which llama.cpp's 'gpt2' BPE needs")
    want = [piece for piece, _ in pre_tokenizer.pre_tokenize_str(PRE_TOKENIZER_PROBE)]
    for pre in PRE_TOKENIZERS:
        pieces = gguf_pre_tokenizer(pre).pre_tokenize_str(PRE_TOKENIZER_PROBE)
        if [piece for piece, _ in pieces] == want:
            return pre
    raise InputError("the tokenizer splits text unlike any llama.cpp pre-tokenizer we can "
                     f"write ({', '.join(PRE_TOKENIZERS)})")


def _add_hyperparameters(writer, cfg: ModelConfig, gguf_type: str) -> None:
    import gguf

    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_dimension_count(cfg.head_dim)
    # llama.cpp assumes head_dim = hidden / heads unless the key/value lengths say otherwise.
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    writer.add_vocab_size(cfg.vocab_size)
    file_types = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                  "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
    writer.add_file_type(file_types[gguf_type])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_tokenizer(writer, tok, vocab_size: int) -> None:
    """The vocabulary as llama.cpp's convert_hf_to_gguf.py writes a "gpt2" BPE: one entry
    per embedding row ("[PAD{i}]" fillers beyond the tokenizer), added tokens as text."""
    import gguf

    # As llama.cpp, we drop a normalizer (Qwen2's NFC) and apply merges by rank, where our
    # BPE matches whole pre-tokens first (ignore_merges): the same ids on every line of
    # the bundled corpus (53,507), since our vocabulary is built by exactly those merges.
    spec = json.loads(tok.backend.to_str())
    if spec["model"]["type"] != "BPE" or (spec.get("decoder") or {}).get("type") != "ByteLevel":
        raise InputError("only a byte-level BPE tokenizer can be written to GGUF (llama.cpp's "
                         f"'gpt2'); this one is {spec['model']['type']}")
    if tok.vocab_size > vocab_size:
        raise InputError(f"the tokenizer has {tok.vocab_size} tokens but the model embeds "
                         f"only {vocab_size}")
    token_at = {i: t for t, i in tok.backend.get_vocab(with_added_tokens=True).items()}
    added = tok.backend.get_added_tokens_decoder()
    tokens, types = [], []
    for i in range(vocab_size):
        tokens.append(token_at.get(i, f"[PAD{i}]"))
        if i not in token_at:
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            special = added[i].special
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(llama_cpp_pre(tok))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # tokenizer.json stores a merge as "a b" or, since tokenizers 0.20, as ["a", "b"].
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m)
                             for m in spec["model"]["merges"]])
    for add, token_id in ((writer.add_bos_token_id, tok.bos_id),
                          (writer.add_eos_token_id, tok.eos_id),
                          (writer.add_pad_token_id, tok.pad_id)):
        if token_id is not None:
            add(token_id)
    # Our chat template writes BOS itself; llama.cpp would otherwise prepend a second one.
    writer.add_add_bos_token(bool(tok.config.get("add_bos_token", False)))
    if tok.chat_template:
        writer.add_chat_template(tok.chat_template)


def _add_tensor(writer, name: str, weights: np.ndarray, gguf_type: str) -> None:
    """1-D tensors stay F32 (as llama.cpp keeps them); 2-D weights take `gguf_type`, except
    that a row not a whole number of Q8_0 blocks falls back to F16, as in llama.cpp."""
    import gguf

    if weights.ndim == 1 or gguf_type == "f32":
        writer.add_tensor(name, weights)
        return
    block_size, _ = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0]
    if gguf_type == "f16" or weights.shape[-1] % block_size:
        writer.add_tensor(name, weights.astype(np.float16))
        return
    q8 = gguf.GGMLQuantizationType.Q8_0
    writer.add_tensor(name, gguf.quants.quantize(weights, q8), raw_dtype=q8)


def _gguf_name(name: str) -> str:
    layer = re.match(r"model\.layers\.(\d+)\.", name)
    key = name.replace(f"layers.{layer[1]}.", "layers.{i}.", 1) if layer else name
    if key not in _GGUF_NAMES:
        raise InputError(f"tensor {name!r} has no GGUF equivalent (unmerged adapter weights?)")
    return _GGUF_NAMES[key].format(i=layer[1] if layer else "")
