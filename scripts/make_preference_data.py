"""Write data/preference/arithmetic_pairs.jsonl: synthetic preference pairs for DPO.

    python scripts/make_preference_data.py [--n 600] [--seed 0]

Chosen = the correct restated answer ("3 + 4 = 7."), rejected = a plausible mistake
(off by a little, the wrong operation, or no answer at all). Questions come from the train
split of lmforge.rewards.tasks, so the held-out arithmetic test set stays unseen.
Deterministic: the same seed writes the same file.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from lmforge.rewards.tasks import arithmetic_problems

OUT = Path(__file__).resolve().parents[1] / "data" / "preference" / "arithmetic_pairs.jsonl"


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        for p in arithmetic_problems(args.n, seed=args.seed + 100, split="train"):
            record = {"prompt": p["messages"][0]["content"], "chosen": p["solution"],
                      "rejected": rejected_answer(rng, p["solution"], p["answer"])}
            f.write(json.dumps(record) + "\n")
    print(f"wrote {args.n} pairs to {args.out}")


if __name__ == "__main__":
    main()
