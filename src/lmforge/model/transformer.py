"""A compact Llama-family decoder whose parameter names are Hugging Face's.

    model = Transformer(ModelConfig(num_hidden_layers=4, hidden_size=256))
    logits = model(input_ids)                                     # (B, T, V)
    logits = model(input_ids, positions=pos, cache=kv, attn_mask=m)  # incremental decoding

RoPE, RMSNorm, SwiGLU, grouped-query attention through `F.scaled_dot_product_attention`,
optional QK-norm (Qwen3/OLMo-2 style) and q/k/v bias (Qwen2 style), tied or untied
embeddings. `state_dict()` keys equal `transformers.LlamaForCausalLM`'s (model.layers.0.
self_attn.q_proj.weight, ...), so loading and saving HF checkpoints is a file operation.
No logging, optimizers, compile or distributed code lives here: those wrap it from outside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ModelConfig:
    vocab_size: int = 8192  # rows of the embedding table (>= the tokenizer's vocab)
    hidden_size: int = 256  # model width d
    intermediate_size: int = 768  # SwiGLU hidden width (≈ 8/3·d, rounded to 128)
    num_hidden_layers: int = 4  # depth
    num_attention_heads: int = 4  # query heads
    num_key_value_heads: int = 4  # key/value heads (< query heads = GQA)
    head_dim: int = 64  # per-head width
    max_position_embeddings: int = 2048  # longest sequence the RoPE tables cover
    rope_theta: float = 10000.0  # RoPE base frequency
    rms_norm_eps: float = 1e-5  # RMSNorm epsilon
    tie_word_embeddings: bool = True  # share the input embedding with the output head
    attention_bias: bool = False  # bias on q/k/v projections (Qwen2)
    qk_norm: bool = False  # RMSNorm on each head's queries and keys (Qwen3, OLMo-2)
    initializer_range: float = 0.02  # std of the normal init


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in fp32, as HF Llama does, so logits match to 1e-5."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused op instead of six: decoding a small model is bound by ops per token.
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)


def rope_tables(cfg: ModelConfig, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin of shape (max_positions, head_dim) in HF's half-rotation layout: the
    sin table's first half is negated, so that rotating is one `roll` (see apply_rope)."""
    inv_freq = 1.0 / cfg.rope_theta ** (
        torch.arange(0, cfg.head_dim, 2, dtype=torch.float32, device=device) / cfg.head_dim)
    t = torch.arange(cfg.max_position_embeddings, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv_freq)
    return torch.cat((freqs, freqs), dim=-1).cos(), torch.cat((-freqs.sin(), freqs.sin()), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, T, D); cos/sin broadcastable to it. HF's x·cos + rotate_half(x)·sin, where
    rotate_half(x) = (−x₂, x₁): the same products as (x₂, x₁) = roll(x, D/2) times the signed
    sin, bit for bit, in four ops instead of seven."""
    return (x * cos + x.roll(x.shape[-1] // 2, -1) * signed_sin).to(x.dtype)


class KVCache:
    """Preallocated keys/values for incremental decoding: (layers, B, H_kv, max_len, D).

    Every step attends over all max_len slots (unwritten ones masked out), so each decode
    step has the same shapes: the precondition for compiling it into one CUDA graph. Rows
    share write positions (prompts are left-padded); `length` counts the slots written so
    far and is advanced by the caller.
    """

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int, dtype, device):
        shape = (cfg.num_hidden_layers, batch_size, cfg.num_key_value_heads, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, cache_position: torch.Tensor):
        """Store k/v (B, H, T, D) at slots cache_position (T,); return the whole layer cache."""
        self.k[layer].index_copy_(2, cache_position, k)
        self.v[layer].index_copy_(2, cache_position, v)
        return self.k[layer], self.v[layer]

    def advance(self, num_tokens: int) -> None:
        if self.length + num_tokens > self.max_len:
            raise ValueError(f"KV cache full: {self.length + num_tokens} > {self.max_len} slots")
        self.length += num_tokens


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv, self.head_dim = (
            cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim)
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * self.head_dim, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, cfg.hidden_size, bias=False)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
        self.qk_norm = cfg.qk_norm

    def forward(self, x, cos, sin, cache: KVCache | None = None, attn_mask=None,
                cache_position=None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        # Queries and keys rotate together: one set of RoPE ops per layer, not two.
        q, k = apply_rope(torch.cat((q, k), 1), cos, sin).split((self.n_heads, self.n_kv), 1)
        if cache is not None:
            k, v = cache.write(self.layer_idx, k, v, cache_position)
        # Without a mask, a fresh sequence is plain causal attention (flash kernels apply).
        causal = attn_mask is None and cache is None
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal,
                                           enable_gqa=self.n_kv != self.n_heads)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, cache=None, attn_mask=None, cache_position=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, attn_mask, cache_position)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    """The body (HF's `LlamaModel`): embeddings, layers, final norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.model = Decoder(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        cos, sin = rope_tables(cfg)
        # Buffers, not parameters: recomputed on load, never saved.
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.config.initializer_range
        # Residual-branch outputs scaled by 1/sqrt(2·layers) (GPT-2) so the residual stream's
        # variance stays flat with depth.
        out_std = std / math.sqrt(2 * self.config.num_hidden_layers)
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.zeros_(p) if name.endswith("bias") else nn.init.ones_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, std=out_std)
            else:
                nn.init.normal_(p, std=std)
        self.reset_rope()

    def reset_rope(self) -> None:
        """Recompute the RoPE tables (after `to_empty` from the meta device, say)."""
        cos, sin = rope_tables(self.config, device=self.rope_cos.device)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor | None = None,
                cache: KVCache | None = None, attn_mask: torch.Tensor | None = None,
                cache_position: torch.Tensor | None = None, return_hidden: bool = False,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, T, V), or final hidden states (B, T, C).

        Without a cache this is plain causal attention over the T tokens. With a cache, the
        new tokens go to slots cache_position (T,) (default: the next T after cache.length;
        the caller then calls cache.advance(T)); positions (B, T) are RoPE positions
        (default: the slots); attn_mask is a boolean "may attend" mask (B or 1, 1, T,
        max_len), needed for left-padded batches (default: causal over the slots).
        inputs_embeds (B, T, C) replaces the embedding lookup (prompt tuning prepends to it).
        """
        x = self.model.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        B, T = x.shape[:2]
        if cache is not None:
            if cache_position is None:
                if cache.length + T > cache.max_len:
                    raise ValueError(f"KV cache full: {cache.length + T} > {cache.max_len} slots")
                cache_position = torch.arange(cache.length, cache.length + T, device=x.device)
            if attn_mask is None:
                slots = torch.arange(cache.max_len, device=x.device)
                attn_mask = slots[None, :] <= cache_position[:, None]
            if positions is None:
                positions = cache_position[None].expand(B, T)
        if positions is None:
            cos, sin = self.rope_cos[None, None, :T], self.rope_sin[None, None, :T]
        else:
            cos, sin = self.rope_cos[positions][:, None], self.rope_sin[positions][:, None]
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        for layer in self.model.layers:
            x = layer(x, cos, sin, cache, attn_mask, cache_position)
        x = self.model.norm(x)
        return x if return_hidden else self.lm_head(x)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.model.embed_tokens.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs/token = 6·N_matmul + 12·L·d·T (DESIGN.md's MFU convention)."""
        cfg = self.config
        n_matmul = sum(p.numel() for n, p in self.named_parameters()
                       if p.dim() == 2 and "embed_tokens" not in n)
        if cfg.tie_word_embeddings:  # the tied head still does a matmul
            n_matmul += self.lm_head.weight.numel()
        attn_width = cfg.num_attention_heads * cfg.head_dim
        return 6 * n_matmul + 12 * cfg.num_hidden_layers * attn_width * seq_len
