"""Pairwise judging: two models answer the same prompts and a judge picks the better answer.

    summary, rows = pairwise_compare(prompts, answers_a, answers_b, judge_backend)
    summary["win_rate"], summary["ci95"]      # A's wins + half its ties, over prompts

Judges prefer whichever answer they read first (or second) more often than chance, so each
pair is asked in both orders and only a verdict that survives the swap counts: A wins when
the judge picks A as the first answer and again as the second; a verdict that flips with
the order is a tie. The judge is any `synth.backend` back end: a model lmforge loads or an
OpenAI-compatible endpoint.
"""

from __future__ import annotations

import math
import re

JUDGE_PROMPT = """You are judging two responses to the same user request. {criteria}

[User request]
{prompt}

[Response 1]
{first}

[Response 2]
{second}

Answer with exactly one of: "1", "2" or "tie"."""


def judge_template(criteria: str = "Which one is better: more helpful, correct and clear?") -> str:
    """The judge's prompt with `criteria` written in (its braces escaped), leaving {prompt},
    {first} and {second} to fill."""
    return JUDGE_PROMPT.replace("{criteria}", criteria.replace("{", "{{").replace("}", "}}"))

_VERDICT = re.compile(r"\b(1|2|tie)\b", re.I)


def parse_verdict(text: str) -> str | None:
    """"1", "2" or "tie" from the judge's reply (its first such word), else None."""
    m = _VERDICT.search(text)
    return m.group(1).lower() if m else None


def pairwise_compare(prompts: list[str], answers_a: list[str], answers_b: list[str], judge,
                     max_new_tokens: int = 16, template: str = "") -> tuple[dict, list[dict]]:
    """`template` has {prompt}, {first} and {second} (default: `judge_template()`; the data
    engine's judge writes a constitution in)."""
    template = template or judge_template()
    ask = lambda first, second: [[{"role": "user", "content": template.format(  # noqa: E731
        prompt=p, first=f, second=s)}] for p, f, s in zip(prompts, first, second)]
    a_first = judge.chat(ask(answers_a, answers_b), max_new_tokens=max_new_tokens)
    b_first = judge.chat(ask(answers_b, answers_a), max_new_tokens=max_new_tokens)
    rows = []
    for p, a, b, v1, v2 in zip(prompts, answers_a, answers_b, a_first, b_first):
        first, second = parse_verdict(v1), parse_verdict(v2)
        outcome = ("win" if (first, second) == ("1", "2") else
                   "loss" if (first, second) == ("2", "1") else "tie")
        rows.append({"prompt": p, "answer_a": a, "answer_b": b, "verdict_a_first": v1,
                     "verdict_b_first": v2, "outcome": outcome})
    return summarize(rows), rows


def summarize(rows: list[dict]) -> dict:
    """Win/tie/loss counts and A's win rate (ties count half) with a 95% normal interval."""
    scores = [{"win": 1.0, "tie": 0.5, "loss": 0.0}[r["outcome"]] for r in rows]
    n = len(scores)
    mean = sum(scores) / n if n else float("nan")
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1)) if n > 1 else float("nan")
    half = 1.96 * sd / math.sqrt(n) if n > 1 else float("nan")
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("win", "tie", "loss")}
    return {"wins": counts["win"], "ties": counts["tie"], "losses": counts["loss"], "n": n,
            "win_rate": mean, "ci95_low": max(0.0, mean - half), "ci95_high": min(1.0, mean + half)}
