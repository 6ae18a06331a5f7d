"""Validation loss and bits per byte.

    token_bytes = token_byte_lengths(tokenizer)           # (V,) UTF-8 bytes per token
    metrics = evaluate_loss(model, batches, token_bytes, runtime)

Bits per byte divides the summed cross-entropy (in bits) by the number of UTF-8 bytes the
target tokens stand for, so models with different tokenizers compare fairly (special
tokens count zero bytes and are left out of both sums).
"""

from __future__ import annotations

import math
import re
from typing import Iterable

import torch

from lmforge.tokenizer.tiktoken_bridge import bytes_to_unicode
from lmforge.train.head_loss import IGNORE_INDEX, model_token_logprobs


def token_byte_lengths(tokenizer, vocab_size: int) -> torch.Tensor:
    """The raw byte count of each token id; 0 for special tokens and unused rows.

    Counted from the token's own bytes, not its decoded text: a token holding part of a
    UTF-8 character decodes to U+FFFD (3 bytes), which overcounted Chinese text by ~3%."""
    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    lengths = torch.zeros(vocab_size, dtype=torch.long)
    for i in range(min(vocab_size, tokenizer.vocab_size)):
        if i not in tokenizer.special_ids:
            lengths[i] = _raw_byte_count(tokenizer, i, byte_of)
    return lengths


def _raw_byte_count(tokenizer, token_id: int, byte_of: dict[str, int]) -> int:
    token = tokenizer.id_to_token(token_id) or ""
    if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", token):  # SentencePiece byte fallback
        return 1
    if token and all(c in byte_of for c in token):  # byte-level BPE spells each byte as one char
        return len(token)
    return len(tokenizer.decode([token_id]).encode("utf-8"))


@torch.no_grad()
def evaluate_loss(model, batches: Iterable[dict], token_bytes: torch.Tensor, runtime) -> dict:
    """Mean loss over every scored token; bits per byte over the tokens that carry bytes."""
    model.eval()
    token_bytes = token_bytes.to(runtime.device)
    all_nats, byte_nats, tokens, nbytes = 0.0, 0.0, 0, 0
    for batch in batches:
        x, labels = batch["input_ids"].to(runtime.device), batch["labels"].to(runtime.device)
        with runtime.autocast():
            loss = -model_token_logprobs(model, x, labels).flatten()  # nats per token
        y = labels.flatten()
        target_bytes = token_bytes[y.clamp(min=0)] * (y != IGNORE_INDEX)
        all_nats += float(loss.sum())
        byte_nats += float(loss[target_bytes > 0].sum())
        tokens += int((y != IGNORE_INDEX).sum())
        nbytes += int(target_bytes.sum())
    if tokens == 0:
        raise ValueError("validation set is empty: no batches, or every label is ignored")
    return {"val/loss": all_nats / tokens, "val/bpb": byte_nats / math.log(2) / max(1, nbytes),
            "val/tokens": tokens}
