"""Held-out accuracy on verifiable tasks, and the trivial baselines it must beat.

    acc = greedy_accuracy(model, prompt_ids, test, decode)      # {"accuracy", "n", "stderr", ...}
    texts = complete(model, prompt_ids, decode, max_new_tokens=64, sampling=Sampling(0.7))
    floor = trivial_baselines(train, test)                      # what answering blindly scores

A number like "accuracy 0.21" means little alone: on "Which is larger, 7 or 15?" answering
either number in the question scores 0.5 on average. So every accuracy the stages print
comes with the scores of two policies that read no question: a number picked from the
question at random, and the most common training answer.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Callable

import torch

from lmforge.infer.engine import Sampling, generate
from lmforge.rewards.math import answers_match, math_reward, numbers_in


def greedy_accuracy(model, prompt_ids: list[list[int]], problems: list[dict],
                    decode: Callable[[list[int]], str], reward=math_reward,
                    max_new_tokens: int = 32, batch_size: int = 64,
                    stop_ids: set[int] | frozenset = frozenset(), pad_id: int = 0,
                    compile: bool = False) -> dict:
    """The mean of `reward` over problems (prompts already rendered), answered greedily,
    with its standard error, every completion and score, and the first few as samples."""
    completions = complete(model, prompt_ids, decode, max_new_tokens, batch_size, Sampling(temperature=0.0),
                           stop_ids, pad_id, compile)
    scores = [float(reward(c, p)) for c, p in zip(completions, problems)]
    samples = [{"question": _question(p), "completion": c, "answer": p["answer"], "reward": r}
               for p, c, r in zip(problems[:5], completions, scores)]
    return {"accuracy": mean(scores), "stderr": stderr(scores), "n": len(scores), "samples": samples,
            "completions": completions, "scores": scores}


def complete(model, prompt_ids: list[list[int]], decode: Callable[[list[int]], str], max_new_tokens: int,
             batch_size: int = 64, sampling: Sampling | None = None, stop_ids: set[int] | frozenset = frozenset(),
             pad_id: int = 0, compile: bool = False, seed: int = 0) -> list[str]:
    """Each prompt's completion, in order; sampled ones are drawn from one generator seeded
    with `seed`, so a call is repeatable."""
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    # Batches of similar prompt lengths waste little on padding; results return in order.
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    completions: list[str] = [""] * len(prompt_ids)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        out = generate(model, [prompt_ids[i] for i in rows], max_new_tokens, sampling, stop_ids=stop_ids,
                       pad_id=pad_id, generator=generator, compile=compile)
        for i, tokens in zip(rows, out.tokens):
            completions[i] = decode(tokens)
    model.train(was_training)
    return completions


def _question(problem: dict) -> str:
    return problem["messages"][-1]["content"] if "messages" in problem else problem["prompt"]


def trivial_baselines(train: list[dict], test: list[dict]) -> dict:
    """Accuracy on `test` of two blind policies: "a number from the question, at random"
    (expected value, exact) and "the most common answer in `train`"."""
    def from_question(p: dict) -> float:
        numbers = numbers_in(p["messages"][-1]["content"])
        return sum(answers_match(x, float(p["answer"])) for x in numbers) / len(numbers) if numbers else 0.0

    common = Counter(float(p["answer"]) for p in train).most_common(1)
    most_common = common[0][0] if common else None
    return {"random_number_from_question": mean([from_question(p) for p in test]),
            "most_common_train_answer": mean([float(answers_match(most_common, float(p["answer"])))
                                              for p in test])}


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def stderr(xs: list[float]) -> float:
    """Standard error of the mean (sample standard deviation / sqrt(n))."""
    if len(xs) < 2:
        return float("nan")
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))
