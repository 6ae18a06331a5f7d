"""Bits per byte counts each token's raw bytes."""

import gzip
import json

from lmforge.eval.loss import token_byte_lengths
from tests.conftest import CORPUS


def test_token_bytes_sum_to_the_text_bytes_on_chinese_and_english(tok):
    # Small vocab: many Chinese characters are split across tokens, each holding part of a
    # character's UTF-8 bytes (decoded alone, such a token is U+FFFD, 3 bytes).
    lengths = token_byte_lengths(tok, tok.vocab_size + 16)
    with gzip.open(CORPUS / "zh_analects.jsonl.gz", "rt") as f:
        chinese = json.loads(f.readline())["text"][:2000]
    for text in (chinese, "Call me Ishmael. Some years ago — never mind how long", "naïve café 🙂"):
        ids = tok.encode(text)
        assert int(lengths[ids].sum()) == len(text.encode("utf-8"))
    partial = [i for i in tok.encode(chinese) if tok.decode([i]) == "\ufffd"]
    assert partial and all(lengths[i] < 3 for i in partial)  # the case that used to count 3
    assert all(lengths[i] == 0 for i in tok.special_ids) and lengths[-1] == 0
