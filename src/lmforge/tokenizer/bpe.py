"""Train a byte-level BPE with Hugging Face `tokenizers`, GPT-4 style.

    backend = train_bpe(texts, vocab_size=8192)        # a `tokenizers.Tokenizer`
    Tokenizer.from_trained(backend).save("runs/tok")   # see lmforge.tokenizer.core

Text is first split by the GPT-4 (cl100k) pre-tokenisation regex, so merges never cross
word, punctuation or whitespace-run boundaries, then mapped to bytes (ByteLevel), so every
string, in any script, round-trips exactly and there is no unknown token. No Unicode
normalisation: decode(encode(x)) == x must hold for combining characters too.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as Backend

ENDOFTEXT = "<|endoftext|>"  # separates documents; also starts each one (BOS)
PAD = "<|pad|>"
IM_START, IM_SEP, IM_END = "<|im_start|>", "<|im_sep|>", "<|im_end|>"
TOOL_CALL, TOOL_CALL_END = "<|tool_call|>", "<|/tool_call|>"
TOOL_RESULT, TOOL_RESULT_END = "<|tool_result|>", "<|/tool_result|>"
SPECIAL_TOKENS = [ENDOFTEXT, PAD, IM_START, IM_SEP, IM_END,
                  TOOL_CALL, TOOL_CALL_END, TOOL_RESULT, TOOL_RESULT_END]


def split_pattern(max_digits_per_token: int = 1) -> str:
    """The cl100k pre-tokenisation regex, with numbers cut into runs of <= N digits.

    We default to single digits (as Llama and DeepSeek do) rather than cl100k's groups of
    three: every number then has one spelling, digit by digit, which helps arithmetic
    (the GRPO math tasks), and at an 8k vocabulary the 1,110 one-to-three-digit tokens
    would take an eighth of the vocabulary. Prose barely grows (numbers are rare).
    """
    digits = r"\p{N}" if max_digits_per_token == 1 else rf"\p{{N}}{{1,{max_digits_per_token}}}"
    return (r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|" + digits +
            r"| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+")


def new_bpe_backend(max_digits_per_token: int = 1) -> Backend:
    """An untrained byte-level BPE with our pre-tokeniser and decoder."""
    # ignore_merges: a pre-token that is itself in the vocabulary becomes that one token,
    # as in tiktoken; it also lets a tiktoken Encoding reproduce our ids exactly.
    backend = Backend(models.BPE(ignore_merges=True))
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split_pattern(max_digits_per_token)), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    return backend


def train_bpe(texts: Iterable[str], vocab_size: int = 8192, max_digits_per_token: int = 1,
              min_frequency: int = 2, show_progress: bool = True,
              special_tokens: list[str] = SPECIAL_TOKENS) -> Backend:
    """Learn merges from `texts`; specials take ids 0.., then the 256 bytes, then merges."""
    minimum = len(special_tokens) + 256
    if vocab_size <= minimum:
        raise ValueError(f"vocab_size must exceed {minimum} (specials + 256 bytes), got {vocab_size}")
    backend = new_bpe_backend(max_digits_per_token)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=show_progress)
    backend.train_from_iterator(texts, trainer)
    return backend
