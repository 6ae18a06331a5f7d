"""The output head fused with its loss, so (tokens × vocab) logits never exist at once.

    hidden = model(input_ids, return_hidden=True)                  # (B, T, C)
    loss = linear_cross_entropy(hidden, head_weight(model), labels)  # mean over scored tokens
    logps = linear_token_logprobs(hidden, head_weight(model), labels)  # (B, T), 0 where ignored

Why: at SmolLM2's shape (vocab 49,152) a 16 × 1024 batch has 0.8 G logits — 3.2 GB in fp32,
and the usual `cross_entropy(logits.float())` keeps several such tensors alive (the bf16
logits, their fp32 copy, the saved log-softmax, the gradient). Here the rows go through the
head in chunks of `chunk_rows`:
- `linear_cross_entropy` computes each chunk's gradient in the forward pass (the loss is a
  mean, so d loss / d logits = (softmax - onehot) / n is known then) and keeps only the
  gradients for the hidden states and the weight: no logits are saved, nothing is
  recomputed, the matmul count equals the unfused path's.
- `linear_token_logprobs` returns per-token values whose upstream gradient is not known in
  forward (DPO and GRPO weight them). Only the scored rows go through the head (a prompt or
  padding row costs nothing; TRL's fused head does this on GPUs only). With a frozen head
  (LoRA) the gradient of each row's log-prob with respect to its hidden state is one
  C-vector, known in forward, and kept: two head matmuls per row instead of three. When the
  head trains, each chunk is checkpointed instead: its logits are recomputed in backward,
  one chunk at a time (one extra head matmul).
Under autocast the matmuls run in the autocast dtype and the softmax in fp32, as in the
unfused path.
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint
from torch import nn

IGNORE_INDEX = -100
LOGITS_PER_CHUNK = 1 << 25  # 32 M logits (128 MB in fp32) in flight at a time


def _unwrapped(model: nn.Module):
    """The model and every module inside it down to the Transformer (DDP's `.module`,
    torch.compile's `._orig_mod`, PromptTuned's `.base_model`)."""
    yield model
    while not hasattr(model, "lm_head"):
        model = next((getattr(model, a) for a in ("module", "_orig_mod", "base_model")
                      if isinstance(getattr(model, a, None), nn.Module)), None)
        if model is None:
            return
        yield model


def head_weight(model: nn.Module) -> torch.Tensor:
    """The output projection's weight (V, C) under DDP, torch.compile and PEFT wrappers
    (dequantized when the head is int8/int4: a frozen copy for this call)."""
    *_, inner = _unwrapped(model)
    if not hasattr(inner, "lm_head"):
        raise TypeError(f"{type(model).__name__} has no lm_head to fuse the loss with")
    head = inner.lm_head
    return head.weight if isinstance(head, nn.Linear) else head.dequantize()


def is_compiled(model: nn.Module) -> bool:
    return any(hasattr(m, "_orig_mod") for m in _unwrapped(model))


def fusable(weight: torch.Tensor) -> bool:
    """FSDP shards the weight (a DTensor outside forward): use the plain logits path then."""
    return type(weight) in (torch.Tensor, nn.Parameter)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         chunk_rows: int | None = None, compiled: bool = False) -> torch.Tensor:
    """mean over labels != -100 of -log softmax(hidden @ weight.T)[label]; 0 if none scored.
    compiled: run each chunk through torch.compile (fused softmax-gradient kernels)."""
    h, y = hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1)
    rows = chunk_rows or _chunk_rows(weight)
    dtype = _compute_dtype(hidden)
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(h, weight, y, rows, dtype, compiled)
    with torch.autocast(h.device.type, enabled=False):
        total = sum(_chunk_nll(h[i:i + rows], weight, y[i:i + rows], dtype).sum()
                    for i in range(0, h.shape[0], rows))
    return total / (y != IGNORE_INDEX).sum().clamp(min=1)


def linear_token_logprobs(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                          chunk_rows: int | None = None) -> torch.Tensor:
    """log p(label) (B, T) in fp32, 0 where labels == -100; differentiable, chunked."""
    y = labels.reshape(-1)
    scored = (y != IGNORE_INDEX).nonzero().squeeze(1)
    h, y = hidden.reshape(-1, hidden.shape[-1])[scored], y[scored]
    rows = chunk_rows or _chunk_rows(weight)
    dtype = _compute_dtype(hidden)
    grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    if grad and not weight.requires_grad:
        logps = _FrozenHeadLogprobs.apply(h, weight, y, rows, dtype)
    else:
        chunks = []
        with torch.autocast(h.device.type, enabled=False):
            for i in range(0, h.shape[0], rows):
                args = (h[i:i + rows], weight, y[i:i + rows], dtype)
                chunks.append(torch.utils.checkpoint.checkpoint(_chunk_nll, *args, use_reentrant=False)
                              if grad else _chunk_nll(*args))
        # Nothing scored: an empty result still connected to the model, so backward runs.
        logps = -torch.cat(chunks) if chunks else h.float().sum(-1) * 0
    out = torch.zeros(labels.numel(), dtype=torch.float32, device=labels.device)
    return out.index_copy(0, scored, logps).view(labels.shape)


class _FrozenHeadLogprobs(torch.autograd.Function):
    """log p(y) per row of h under a head that needs no gradient. d log p / d h per row is
    (onehot - softmax) @ W, a C-vector computed with the logits and saved (rows x C, like h),
    so backward scales it by the upstream gradient and recomputes nothing."""

    @staticmethod
    def forward(ctx, h, weight, y, rows, dtype):
        w = weight.to(dtype)
        nll = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
        grad_h = torch.empty(h.shape, dtype=dtype, device=h.device)  # d nll / d h
        with torch.autocast(h.device.type, enabled=False):
            for i in range(0, h.shape[0], rows):
                nll[i:i + rows], grad_h[i:i + rows], _ = _chunk_step(h[i:i + rows].to(dtype), w, y[i:i + rows],
                                                                     True, False)
        ctx.save_for_backward(grad_h)
        ctx.h_dtype = h.dtype
        return -nll

    @staticmethod
    def backward(ctx, grad_out):
        (grad_h,) = ctx.saved_tensors
        return (-grad_out[:, None] * grad_h).to(ctx.h_dtype), None, None, None, None


def _chunk_rows(weight: torch.Tensor) -> int:
    return max(1, LOGITS_PER_CHUNK // weight.shape[0])


def _compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    device = hidden.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype


def _chunk_logits(h, weight, dtype) -> torch.Tensor:
    return (h.to(dtype) @ weight.to(dtype).T).float()


def _chunk_nll(h, weight, y, dtype) -> torch.Tensor:
    """-log p(y) per row in fp32; 0 on ignored rows."""
    logits = _chunk_logits(h, weight, dtype)
    target = logits.gather(1, y.clamp(min=0)[:, None]).squeeze(1)
    return (torch.logsumexp(logits, -1) - target) * (y != IGNORE_INDEX)


def _chunk_step(hc, w, yc, need_h: bool, need_w: bool):
    """One chunk: (nll per row, d sum / d hc, d sum / d w), from d sum / d logits =
    softmax - onehot(target), zero on unscored rows. Pure, so it can be compiled into a few
    fused kernels around the three matmuls."""
    logits = (hc @ w.T).float()
    lse = torch.logsumexp(logits, -1)
    scored = yc != IGNORE_INDEX
    target = yc.clamp(min=0)
    nll = (lse - logits.gather(1, target[:, None]).squeeze(1)) * scored
    # Built in place over the logits buffer: one chunk of memory, however large the vocab.
    g = logits.sub_(lse[:, None]).exp_()
    g.scatter_add_(1, target[:, None], torch.full_like(lse[:, None], -1.0))
    g = g.mul_(scored[:, None]).to(hc.dtype)
    return nll, g @ w if need_h else None, g.T @ hc if need_w else None


_compiled_chunk_step = None


def _compiled_step():
    global _compiled_chunk_step
    if _compiled_chunk_step is None:
        # Default dynamic=None: the first new row count (a last chunk, a new batch width)
        # recompiles once with a symbolic size instead of once per size.
        _compiled_chunk_step = torch.compile(_chunk_step)
    return _compiled_chunk_step


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, y, rows, dtype, compiled):
        need_h, need_w = ctx.needs_input_grad[:2]
        step = _compiled_step() if compiled else _chunk_step
        w = weight.to(dtype)
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        with torch.autocast(h.device.type, enabled=False):
            for i in range(0, h.shape[0], rows):
                nll, gh, gw = step(h[i:i + rows].to(dtype), w, y[i:i + rows], need_h, need_w)
                total += nll.sum()
                if need_h:
                    grad_h[i:i + rows] = gh
                if need_w:  # accumulated over chunks in fp32 whatever the matmul dtype
                    grad_w += gw
        n = (y != IGNORE_INDEX).sum().clamp(min=1)
        ctx.save_for_backward(grad_h, grad_w, n)
        ctx.weight_dtype = weight.dtype
        return total / n

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, n = ctx.saved_tensors
        scale = grad_out / n
        return (None if grad_h is None else grad_h * scale.to(grad_h.dtype),
                None if grad_w is None else (grad_w * scale).to(ctx.weight_dtype),
                None, None, None, None)


def model_cross_entropy(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor,
                        **model_kwargs) -> torch.Tensor:
    """The model's mean next-token loss, through the fused head where the weight allows;
    model_kwargs (positions, attn_mask) go to the model."""
    weight = head_weight(model)
    if not fusable(weight):
        logits = model(input_ids, **model_kwargs)
        return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten(),
                                                 ignore_index=IGNORE_INDEX)
    # A compiled model gets a compiled head too (whole-model compile cannot trace the loop).
    return linear_cross_entropy(model(input_ids, return_hidden=True, **model_kwargs), weight, labels,
                                compiled=is_compiled(model))


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits (B, T, V), labels (B, T) -> log p(label) (B, T) in fp32, 0 on ignored labels."""
    nll = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten(),
                                            ignore_index=IGNORE_INDEX, reduction="none")
    return -nll.view(labels.shape)


def model_token_logprobs(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) (B, T) under the model, 0 where labels == -100."""
    weight = head_weight(model)
    if not fusable(weight):
        return token_logprobs(model(input_ids), labels)
    return linear_token_logprobs(model(input_ids, return_hidden=True), weight, labels)
