"""Write the demo's held-out evaluation tasks from the test split of lmforge.rewards.tasks.

    python scripts/make_task_splits.py

data/eval/compare_test.jsonl     every test-split "Which is larger, a or b?" (0-20), both orders
data/eval/arithmetic_test.jsonl  every test-split "What is a ± b?" (0-20), one wording each
data/eval/chat_prompts.txt       prompts for the token-shift analysis (test-split questions
                                 and short open requests)
Records are the canonical generative form {"prompt", "answer"}, so `lmforge eval` reads
them as they are; the problems are exactly those GRPO reports on and SFT/DPO never see.
Deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmforge.rewards.tasks import make_problems

OUT = Path(__file__).resolve().parents[1] / "data" / "eval"
OPEN_PROMPTS = ["Hello", "Who are you?", "Tell me about the sea.", "What is a good book?",
                "How do I restart my computer?", "Say something kind.", "你好", "What should I eat today?"]


def write_task(name: str, problems: list[dict]) -> None:
    with open(OUT / name, "w", encoding="utf-8") as f:
        for p in sorted(problems, key=lambda p: p["key"]):
            f.write(json.dumps({"prompt": p["messages"][-1]["content"], "answer": p["answer"]}) + "\n")
    print(f"{len(problems)} problems -> {OUT / name}")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    # Far more draws than the split holds, so every test problem is drawn (distinct questions).
    compare = make_problems("compare", 10_000, seed=1, split="test", max_operand=20)
    arithmetic = make_problems("arithmetic", 10_000, seed=1, split="test", max_operand=20)
    write_task("compare_test.jsonl", compare)
    write_task("arithmetic_test.jsonl", list({p["key"]: p for p in arithmetic}.values()))
    prompts = [p["messages"][-1]["content"] for p in compare[:8] + arithmetic[:8]] + OPEN_PROMPTS
    (OUT / "chat_prompts.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
    print(f"{len(prompts)} prompts -> {OUT / 'chat_prompts.txt'}")


if __name__ == "__main__":
    main()
