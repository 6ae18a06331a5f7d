"""Byte-level BPE tokenizers: training (`train_bpe`), encoding/decoding (`Tokenizer`), streaming."""

from lmforge.tokenizer.bpe import SPECIAL_TOKENS, train_bpe
from lmforge.tokenizer.core import Tokenizer
from lmforge.tokenizer.hf_config import CHAT_TEMPLATE
from lmforge.tokenizer.stream import StreamDecoder

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "StreamDecoder", "Tokenizer", "train_bpe"]
