"""Per-token log-probabilities and masked reductions, shared by the alignment objectives.

    logps = policy_logprobs(model, x, labels)         # (B, T); 0 where labels == -100
    logps = token_logprobs(logits, labels)            # the same from logits you already have
    seq = masked_sum(logps, labels != IGNORE_INDEX)   # (B,) sequence log-likelihoods
    ref = frozen_reference(model)                     # or adapter_reference(model) for LoRA
    ref_logps = ref(x, labels)                        # no grad, same shape as logps

Labels follow `lm_objective`: `labels[:, t]` is the token that follows `input_ids[:, t]`,
and -100 marks positions that are not scored (prompt, padding).
"""

from __future__ import annotations

import copy
from typing import Callable

import torch

from lmforge.train.head_loss import IGNORE_INDEX, model_token_logprobs, token_logprobs

__all__ = ["label_mask", "masked_mean", "masked_sum", "policy_logprobs", "token_logprobs",
           "frozen_reference", "adapter_reference", "ReferenceFn"]

ReferenceFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def label_mask(labels: torch.Tensor) -> torch.Tensor:
    return labels != IGNORE_INDEX


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = -1) -> torch.Tensor:
    x = x * mask
    return x.sum() if dim is None else x.sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = -1) -> torch.Tensor:
    """Mean over the masked-in entries (of the whole tensor when dim is None); 0 if none."""
    count = mask.sum() if dim is None else mask.sum(dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1)


def policy_logprobs(model, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) (B, T) under the model, through the fused head (no (B, T, V) logits)."""
    return model_token_logprobs(model, input_ids, labels)


def frozen_reference(model) -> ReferenceFn:
    """A frozen copy of `model` as it is now (full fine-tuning; costs one model of memory)."""
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    return _no_grad_logprobs(lambda x, y: policy_logprobs(ref, x, y))


def adapter_reference(model) -> ReferenceFn:
    """The base model under a PEFT adapter: the same weights with the adapter switched off,
    so LoRA runs need no second copy."""
    from lmforge.model.peft import disable_adapters

    def ref(x, y):
        was_training = model.training
        model.eval()
        with disable_adapters(model):
            out = policy_logprobs(model, x, y)
        model.train(was_training)
        return out

    return _no_grad_logprobs(ref)


def _no_grad_logprobs(fn: ReferenceFn) -> ReferenceFn:
    def wrapped(input_ids, labels):
        with torch.no_grad():
            return fn(input_ids, labels).detach()
    return wrapped
