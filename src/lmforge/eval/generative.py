"""Generative tasks: how a prompt is shown to the model, and how its answer is read and judged.

    prompts = render_prompts(tok, task, chat=True)            # chat template, or few-shot text
    reward = answer_reward(task.extract, task.match)           # (completion, record) -> 0.0 | 1.0
    result = greedy_accuracy(model, prompts, task.examples, decode, reward, task.max_new_tokens)

Extraction (`extract`): `number` (the final number, as the math reward reads it), `boxed`
(\\boxed{...}), `gsm8k` (after ####), `letter` (a choice letter: "(B)", "B)", or alone),
`first_line`, `last_line`, `regex:<pattern>` (group 1, else the match), `none` (the whole
completion). Matching (`match`): `exact` compares the extracted text with the answer after
trimming spaces, case and a final period; `numeric` compares them as numbers (integers
exactly, decimals within 1e-6).
"""

from __future__ import annotations

import random
import re
from typing import Callable

from lmforge.config import ConfigError
from lmforge.eval.tasks import Task
from lmforge.rewards.math import answers_match, extract_answer, parse_number
from lmforge.tokenizer.chat import render_prompt

_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
# A choice letter: "(B)", else "B)" / "B." / "B:", else the last capital standing alone
# (the first one is often the pronoun "I" or the article "A").
_LETTERS = (re.compile(r"\(([A-Z])\)"), re.compile(r"(?<![A-Za-z])([A-Z])[).:](?!\w)"),
            re.compile(r"(?<![A-Za-z'])([A-Z])(?![A-Za-z'])"))
EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "number": lambda t: None if (x := extract_answer(t)) is None else _number_text(x),
    "boxed": lambda t: m[-1] if (m := _BOXED.findall(t)) else None,
    "gsm8k": lambda t: t.rsplit("####", 1)[1].strip() if "####" in t else None,
    "letter": lambda t: next((m[-1] for p in _LETTERS if (m := p.findall(t))), None),
    "first_line": lambda t: t.strip().splitlines()[0] if t.strip() else None,
    "last_line": lambda t: t.strip().splitlines()[-1] if t.strip() else None,
    "none": lambda t: t,
}


def extract(text: str, how: str) -> str | None:
    if how.startswith("regex:"):
        m = re.search(how[len("regex:"):], text)
        return None if m is None else (m.group(1) if m.groups() else m.group(0))
    if how not in EXTRACTORS:
        raise ConfigError(f"unknown extraction {how!r}: {', '.join(EXTRACTORS)} or regex:<pattern>")
    return EXTRACTORS[how](text)


def answer_matches(predicted: str | None, answer, match: str) -> bool:
    if predicted is None:
        return False
    if match == "numeric":
        gold = float(answer) if isinstance(answer, (int, float)) else parse_number(str(answer))
        return answers_match(parse_number(predicted), gold)
    if match == "exact":
        return _normalise(predicted) == _normalise(str(answer))
    raise ConfigError(f"unknown match {match!r}: exact | numeric")


def answer_reward(how: str, match: str):
    """A reward function (completion, record) -> 1.0 or 0.0, as RL rewards are called, so
    held-out accuracy in the GRPO stage and `lmforge eval` score answers the same way."""
    extract("", how)  # an unknown extraction fails now, not after generating
    return lambda completion, record: float(answer_matches(extract(completion, how), record["answer"], match))


def render_prompts(tok, task: Task, chat: bool, seed: int = 0) -> list[list[int]]:
    """Token ids per example. Chat models get the task's text as one user turn through their
    chat template; base models get `few_shot` solved examples from the task (never the one
    being asked) before it, separated by blank lines."""
    texts = [fill_template(task.template, r) for r in task.examples]
    if chat:
        return [render_prompt(tok, [{"role": "user", "content": t}]) for t in texts]
    bos = [tok.bos_id] if tok.bos_id is not None else []
    rng = random.Random(seed)
    prompts = []
    for i, text in enumerate(texts):
        others = [j for j in range(len(texts)) if j != i]
        shots = rng.sample(others, min(task.few_shot, len(others)))
        context = "".join(f"{texts[j]} {task.examples[j]['answer']}\n\n" for j in shots)
        prompts.append(bos + tok.encode(context + text))
    return prompts


def fill_template(template: str, record: dict, field: str = "prompt") -> str:
    """The text a record shows the model: its template filled in, or the field as is."""
    if not template:
        return record[field]
    try:
        return template.format(**record)
    except KeyError as e:
        raise ConfigError(f"template {template!r} names field {e} that the records do not have") from None


def _number_text(x: float) -> str:
    """Exact: 1234567.0 -> "1234567" (not "1.23457e+06"), 0.1 -> "0.1"."""
    return str(int(x)) if x.is_integer() else repr(x)


def _normalise(text: str) -> str:
    return " ".join(text.strip().rstrip(".").lower().split())
