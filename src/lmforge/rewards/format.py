"""Format rewards: did the completion lay out its reasoning and answer as asked?

    think_format_reward("<think>3 + 4 is 7</think> The answer is 7.", {})   # -> 1.0

Used beside a correctness reward (DeepSeek-R1's "format reward"), usually with a small
weight, so a model learns the layout without being paid for layout alone.
"""

from __future__ import annotations

import re

_THINK_THEN_ANSWER = re.compile(r"^\s*<think>(?P<think>.+?)</think>(?P<answer>.*\S.*)$", re.S)
_ANSWER_TAG = re.compile(r"<answer>.*?\S.*?</answer>\s*$", re.S)


def think_format_reward(completion: str, example: dict | None = None) -> float:
    """1.0 for exactly one non-empty <think>…</think> block, first, followed by an answer."""
    m = _THINK_THEN_ANSWER.match(completion)
    if not m or "<think>" in m["answer"] or "</think>" in m["answer"] or not m["think"].strip():
        return 0.0
    return 1.0


def answer_tag_reward(completion: str, example: dict | None = None) -> float:
    """1.0 when the completion ends with a non-empty <answer>…</answer>."""
    return 1.0 if _ANSWER_TAG.search(completion) else 0.0
