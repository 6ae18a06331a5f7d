"""Leak-free held-out splits: a record's side is decided by a hash of its canonical key.

    split_of("compare:3,7")        # "train" | "dev" | "test", the same on every machine
    text_key("What is 3+4?")       # "what is 3 + 4": punctuation, case and spacing dropped

Hashing the key rather than the surface text is what keeps rewordings of one problem on one
side: a caller makes the key canonical ("3 + 4" and "4 + 3" -> "+:3,4"), and every stage
that holds data out (GRPO's task splits, DPO's held-out pairs, the chat data builder) goes
through this one function, so the splits agree with each other.
"""

from __future__ import annotations

import re
import zlib
from typing import Literal

Split = Literal["train", "dev", "test", "all"]
TEST_PERCENT, DEV_PERCENT = 20, 10  # shares of the key space held out; the rest is train


def bucket(key: str) -> int:
    """0..99 from CRC-32 (stable across runs and machines, unlike Python's salted hash)."""
    return zlib.crc32(key.encode()) % 100


def split_of(key: str) -> str:
    b = bucket(key)
    return "test" if b < TEST_PERCENT else "dev" if b < TEST_PERCENT + DEV_PERCENT else "train"


def in_split(key: str, split: Split) -> bool:
    return split == "all" or split_of(key) == split


def text_key(text: str) -> str:
    """The canonical key of free text: its lower-cased words, numbers and math symbols
    (sentence punctuation dropped, but "3 - 4" is not "3 + 4")."""
    return " ".join(re.findall(r"\w+|[-+*/×÷=<>^%$−]", text.lower()))
