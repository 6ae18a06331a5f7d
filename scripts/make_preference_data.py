"""Write data/preference/arithmetic_pairs{,_dev,_test}.jsonl: synthetic preference pairs for DPO.

    python scripts/make_preference_data.py [--seed 0]

Chosen = the correct restated answer ("3 + 4 = 7."), rejected = a plausible mistake
(off by a little, the wrong operation, or no answer at all). One pair per distinct problem
("3 + 4" and "4 + 3" are one problem), and each file takes the problems of one split of
lmforge.rewards.tasks: DPO trains on the train file, settings are tuned on dev, and the
reported held-out accuracy comes from test, whose problems appear in no other file in any
wording. Deterministic: the same seed writes the same files.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from lmforge.rewards.tasks import arithmetic_key, arithmetic_problem_for, in_split

OUT = Path(__file__).resolve().parents[1] / "data" / "preference"
FILES = {"train": "arithmetic_pairs.jsonl", "dev": "arithmetic_pairs_dev.jsonl", "test": "arithmetic_pairs_test.jsonl"}


def rejected_answer(rng: random.Random, solution: str, answer: int) -> str:
    expression = solution.split(" = ")[0]
    a, op, b = expression.split(" ")
    kind = rng.choice(["off_by", "off_by", "wrong_op", "no_answer"])
    if kind == "off_by":
        return f"{expression} = {answer + rng.choice([-3, -2, -1, 1, 2, 3])}."
    if kind == "wrong_op":
        wrong = int(a) - int(b) if op == "+" else int(a) + int(b)
        return f"{expression} = {wrong if wrong != answer else answer + 1}."
    return rng.choice(["I don't know.", "That is a hard one.", f"{expression} is a number."])


def distinct_problems(split: str, seed: int) -> list[dict]:
    """Every problem of `split` once (operands 0-20, + and -), in a seeded order, shown in
    a seeded operand order."""
    rng = random.Random(seed)
    keys = sorted({arithmetic_key(a, op, b) for a in range(21) for b in range(21) for op in "+-"})
    problems = []
    for key in keys:
        if in_split(key, split):
            op, (a, b) = key[0], map(int, key[2:].split(","))
            if op == "+" and rng.random() < 0.5:
                a, b = b, a
            problems.append(arithmetic_problem_for(a, op, b))
    rng.shuffle(problems)
    return problems


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for split, name in FILES.items():
        problems = distinct_problems(split, args.seed + 100)
        with open(args.out / name, "w") as f:
            for p in problems:
                record = {"prompt": p["messages"][0]["content"], "chosen": p["solution"],
                          "rejected": rejected_answer(rng, p["solution"], p["answer"])}
                f.write(json.dumps(record) + "\n")
        print(f"{split}: {len(problems)} pairs -> {args.out / name}")


if __name__ == "__main__":
    main()
