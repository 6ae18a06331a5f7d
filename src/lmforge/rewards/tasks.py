"""Seeded verifiable tasks for RL, with leak-free train / dev / test splits.

    train = arithmetic_problems(2000, seed=0, split="train")   # "What is 3 + 4?" -> 7
    dev = arithmetic_problems(100, seed=1, split="dev")         # for tuning settings
    test = arithmetic_problems(200, seed=1, split="test")       # reported, never tuned on
    words = word_problems(500, seed=0)                           # GSM8K-style, "#### N"
    gsm = reasoning_gym_problems("gsm_symbolic", 500, split="test")  # pip install reasoning-gym

A problem is a dict: `messages` (a one-turn user chat), `answer` (the number), `solution`
(a reference answer text, usable as SFT data) and `key`, its canonical form. The split is
decided by a hash of the key, not by the seed, and the key is what makes two questions the
same problem: "Which is larger, 3 or 7?" and "..., 7 or 3?" share the key `compare:3,7`,
"3 + 4" and "4 + 3" share `+:3,4`, a word problem is its template and its numbers whatever
the names and items, and any other text is its lower-cased words (`lmforge.data.splits`).
So no held-out problem has a rewording in train, whatever the seeds; the seed only picks
which problems are drawn.
Dev and test draws are distinct questions (a repeat would be counted twice).
"""

from __future__ import annotations

import random
import re
from typing import Callable, Iterable

from lmforge.data.splits import Split, in_split, text_key
from lmforge.rewards.math import extract_answer

__all__ = ["Split", "in_split", "arithmetic_key", "comparison_key", "make_problems"]


def arithmetic_key(a: int, op: str, b: int) -> str:
    """+ and × commute, so their operands are unordered; - keeps its order."""
    if op in "+*×":
        a, b = sorted((a, b))
    return f"{'*' if op == '×' else op}:{a},{b}"


def comparison_key(a: int, b: int) -> str:
    return f"compare:{min(a, b)},{max(a, b)}"


def arithmetic_problem(rng: random.Random, max_operand: int = 20, ops: str = "+-") -> dict:
    """One "What is a op b?" question; the solution restates it: "3 + 4 = 7."."""
    a, b, op = rng.randint(0, max_operand), rng.randint(0, max_operand), rng.choice(ops)
    return arithmetic_problem_for(a, op, b)


def arithmetic_problem_for(a: int, op: str, b: int) -> dict:
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    shown = {"*": "×"}.get(op, op)
    question = f"What is {a} {shown} {b}?"
    return _problem(question, value, f"{a} {shown} {b} = {value}.", arithmetic_key(a, op, b))


def comparison_problem(rng: random.Random, max_value: int = 99) -> dict:
    """"Which is larger, 37 or 52?" -> 52. The demo's RL task: a 5M-parameter model partly
    solves held-out pairs after SFT (it must compare digits, not recall a fact), which
    leaves GRPO room to raise accuracy; small-number addition it can barely do at all."""
    a, b = rng.sample(range(max_value + 1), 2)
    return _problem(f"Which is larger, {a} or {b}?", max(a, b), f"The larger is {max(a, b)}.",
                    comparison_key(a, b))


def comparison_problems(n: int, seed: int = 0, split: Split = "train", max_value: int = 99) -> list[dict]:
    return _draw(lambda rng: comparison_problem(rng, max_value), n, seed, split)


# GSM8K-style templates: (question, solution steps, answer) from sampled names and numbers.
_NAMES = ["Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Iris", "Jamal"]
_ITEMS = ["apples", "marbles", "stickers", "books", "pencils", "cookies", "shells", "cards"]


def _buy_and_give(rng, name, item):
    a, b, c = rng.randint(5, 40), rng.randint(2, 30), rng.randint(1, 10)
    c = min(c, a + b)
    q = f"{name} has {a} {item}. {name} buys {b} more and gives {c} to a friend. How many {item} does {name} have now?"
    return q, f"{a} + {b} = {a + b}. {a + b} - {c} = {a + b - c}.", a + b - c


def _price_total(rng, name, item):
    n, price, paid = rng.randint(2, 12), rng.randint(1, 9), None
    total = n * price
    paid = total + rng.randint(0, 20)
    q = (f"{name} buys {n} {item} at ${price} each and pays with ${paid}. "
         f"How much change does {name} get, in dollars?")
    return q, f"{n} × {price} = {total}. {paid} - {total} = {paid - total}.", paid - total


def _share_equally(rng, name, item):
    friends, each = rng.randint(2, 8), rng.randint(2, 12)
    total = friends * each
    q = f"{name} shares {total} {item} equally among {friends} friends. How many {item} does each friend get?"
    return q, f"{total} ÷ {friends} = {each}.", each


def _weekly_savings(rng, name, item):
    per_week, weeks, spent = rng.randint(3, 25), rng.randint(2, 10), rng.randint(0, 20)
    q = (f"{name} saves ${per_week} every week for {weeks} weeks, then spends ${spent} on {item}. "
         f"How many dollars does {name} have left?")
    saved = per_week * weeks
    return q, f"{per_week} × {weeks} = {saved}. {saved} - {spent} = {saved - spent}.", saved - spent


def _boxes(rng, name, item):
    boxes, per_box, broken = rng.randint(2, 9), rng.randint(3, 15), rng.randint(0, 9)
    q = (f"{name} has {boxes} boxes with {per_box} {item} in each box. {broken} {item} are lost. "
         f"How many {item} are left?")
    total = boxes * per_box
    return q, f"{boxes} × {per_box} = {total}. {total} - {broken} = {total - broken}.", total - broken


_TEMPLATES = (_buy_and_give, _price_total, _share_equally, _weekly_savings, _boxes)


def word_problem(rng: random.Random) -> dict:
    template = rng.choice(_TEMPLATES)
    question, steps, value = template(rng, rng.choice(_NAMES), rng.choice(_ITEMS))
    # Names and items are surface: the same template with the same numbers is one problem.
    numbers = ",".join(re.findall(r"\d+", question))
    return _problem(question, value, f"{steps}\n#### {value}", f"{template.__name__}:{numbers}")


def arithmetic_problems(n: int, seed: int = 0, split: Split = "train", max_operand: int = 20,
                        ops: str = "+-") -> list[dict]:
    return _draw(lambda rng: arithmetic_problem(rng, max_operand, ops), n, seed, split)


def word_problems(n: int, seed: int = 0, split: Split = "train") -> list[dict]:
    return _draw(word_problem, n, seed, split)


def reasoning_gym_problems(name: str, n: int, seed: int = 0, split: Split = "train", **kwargs) -> list[dict]:
    """Problems from a dataset of the optional `reasoning-gym` package ("gsm_symbolic",
    "chain_sum", ...; kwargs go to its config), split by question hash like the others.
    Only numeric answers qualify, since the math reward scores the task: a dataset that
    answers "True" or "3/4" is a ValueError naming it, not a reward that is always 0."""
    reasoning_gym = _import_reasoning_gym()
    # Items are generated on access (item i from Random(seed + i)), so a large size costs nothing.
    data = reasoning_gym.create_dataset(name, size=_max_draws(n), seed=seed, **kwargs)
    return _take((_reasoning_gym_problem(name, e) for e in data), n, split)


def _import_reasoning_gym():
    try:
        import reasoning_gym
    except ModuleNotFoundError:
        raise ModuleNotFoundError("the reasoning_gym:<dataset> tasks need the reasoning-gym package: "
                                  "pip install reasoning-gym", name="reasoning_gym") from None
    return reasoning_gym


def _reasoning_gym_problem(name: str, entry: dict) -> dict:
    answer = _exact_number(entry["answer"])
    if answer is None:
        raise ValueError(f"reasoning_gym:{name} has a non-numeric answer {entry['answer']!r}; lmforge "
                         f"scores tasks with the math reward, so pick a dataset with numeric answers "
                         f"(gsm_symbolic, basic_arithmetic, chain_sum, products, ...)")
    # gsm_symbolic ships a worked solution ending in "#### N", better SFT data than the bare answer.
    solution = entry.get("metadata", {}).get("answer_cot") or entry["answer"]
    return _problem(entry["question"], answer, solution, text_key(entry["question"]))


def _exact_number(text: str) -> int | float | None:
    """The answer as a number if the math reward reads exactly that number from it ("-14282",
    "4471.6021"); None otherwise ("True", "3/4", "45a", and "6.1e-05", read as 5)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    if extract_answer(str(text)) != value:
        return None
    return int(text) if str(text).strip().lstrip("-").isdigit() else value


def make_problems(task: str, n: int, seed: int, split: Split, max_operand: int = 20) -> list[dict]:
    """By name: "arithmetic", "compare", "word", or "reasoning_gym:<dataset>". max_operand
    bounds the numbers of arithmetic and compare."""
    if task == "arithmetic":
        return arithmetic_problems(n, seed, split, max_operand)
    if task == "compare":
        return comparison_problems(n, seed, split, max_operand)
    if task == "word":
        return word_problems(n, seed, split)
    if task.startswith("reasoning_gym:"):
        return reasoning_gym_problems(task.partition(":")[2], n, seed, split)
    raise ValueError(f"unknown task {task!r}: arithmetic | compare | word | reasoning_gym:<name>")


def _problem(question: str, answer, solution: str, key: str) -> dict:
    return {"messages": [{"role": "user", "content": question}], "answer": answer,
            "solution": solution, "key": key}


def _draw(make: Callable[[random.Random], dict], n: int, seed: int, split: Split) -> list[dict]:
    rng = random.Random(seed)
    return _take((make(rng) for _ in range(_max_draws(n))), n, split)


def _max_draws(n: int) -> int:
    return 200 * n + 1000  # bounded: a tiny question space must not loop forever


def _take(candidates: Iterable[dict], n: int, split: Split) -> list[dict]:
    """The first n candidates whose key falls in `split`; dev and test questions are
    distinct, so a small problem space may yield fewer than n."""
    out, seen = [], set()
    for p in candidates:
        if len(out) == n:
            break
        question = p["messages"][-1]["content"]
        if in_split(p["key"], split) and not (split in ("dev", "test") and question in seen):
            seen.add(question)
            out.append(p)
    return out
