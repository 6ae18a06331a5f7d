"""Per-token log-probabilities and masked reductions, shared by the alignment objectives.

    logps = token_logprobs(model(x), labels)          # (B, T); 0 where labels == -100
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
import torch.nn.functional as F

from lmforge.train.objectives.lm import IGNORE_INDEX

ReferenceFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits (B, T, V), labels (B, T) -> log p(label) (B, T) in fp32, 0 on ignored labels."""
    # cross_entropy fuses log_softmax + gather without materialising (B, T, V) log-probs twice.
    nll = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(),
                          ignore_index=IGNORE_INDEX, reduction="none")
    return -nll.view(labels.shape)


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
    return token_logprobs(model(input_ids), labels)


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
