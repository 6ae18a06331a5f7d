"""Verifiable math rewards: pull the final number out of a completion and compare it.

    extract_answer("So she has $1,234.50 left.")     # -> 1234.5
    extract_answer("<think>2+2</think> #### 4")        # -> 4.0
    math_reward("3 + 4 = 7.", {"answer": "7"})         # -> 1.0

Where the final answer is marked, the mark wins: `#### 42` (GSM8K), `\\boxed{42}` (MATH),
`<answer>42</answer>`, "the answer is 42"; otherwise the last number in the text counts.
Currency signs, thousands separators, units and trailing periods are ignored; a
completion without a number earns 0, never an exception.
"""

from __future__ import annotations

import re

# A number: optional sign (a '-' right after a digit or ')' is subtraction, not a sign),
# optional '$', digits with optional 3-digit comma groups, optional decimals.
_NUMBER = re.compile(r"(?:(?<![\w)])[-−])?\$?\s?(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)")
_MARKED = (
    re.compile(r"####\s*(.+)"),
    re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}"),
    re.compile(r"<answer>(.*?)</answer>", re.S),
    re.compile(r"answer(?: is|:)\s*(.+)", re.I),
)


def parse_number(text: str) -> float | None:
    """The first number in `text` as a float ("−1,234.5 kg" -> -1234.5), or None."""
    m = _NUMBER.search(text)
    return _to_float(m.group(0)) if m else None


def numbers_in(text: str) -> list[float]:
    """Every number in `text`, in order."""
    return [x for x in map(_to_float, _NUMBER.findall(text)) if x is not None]


def last_number(text: str) -> float | None:
    found = _NUMBER.findall(text)
    return _to_float(found[-1]) if found else None


def extract_answer(text: str) -> float | None:
    """The final answer of a completion: a marked answer if there is one, else the last number."""
    for pattern in _MARKED:
        marks = pattern.findall(text)
        if marks:
            value = parse_number(marks[-1])
            if value is not None:
                return value
    return last_number(text)


def answers_match(predicted: float | None, gold: float | None, rel_tol: float = 1e-6) -> bool:
    """Integers must match exactly: a relative tolerance would pass 106475279602 for
    106475279601 (reasoning-gym's basic_arithmetic). Decimals match within rel_tol."""
    if predicted is None or gold is None:
        return False
    if gold.is_integer():
        return predicted == gold
    return abs(predicted - gold) <= rel_tol * max(1.0, abs(gold))


def math_reward(completion: str, example: dict) -> float:
    """1.0 when the completion's final answer equals example["answer"] (a number, or a
    GSM8K-style solution ending in "#### N"), else 0.0."""
    gold = example["answer"]
    gold = float(gold) if isinstance(gold, (int, float)) else extract_answer(str(gold))
    return 1.0 if answers_match(extract_answer(completion), gold) else 0.0


def grounded_answer_reward(completion: str, example: dict) -> float:
    """1.0 when the final answer is one of the numbers the question states. Partial credit
    for choice-type questions ("Which is larger, 37 or 52?": the answer must be 37 or 52):
    a dense first step for a policy that still answers with arbitrary numbers."""
    answer = extract_answer(completion)
    return 1.0 if any(answers_match(answer, n) for n in numbers_in(example["messages"][-1]["content"])) else 0.0


def _to_float(token: str) -> float | None:
    cleaned = token.replace("−", "-").replace("$", "").replace(",", "").replace(" ", "")
    try:
        return float(cleaned)
    except ValueError:
        return None
