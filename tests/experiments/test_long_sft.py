"""`lmforge experiment long-sft --quick` end to end: a pool of terse, worked and chatty answers,
longest-k / random-k / all trained with the same budget, exact match and a judge that gives
length no credit, and a report that states the result."""

import json
import random

import pytest

from lmforge.cli import main
from lmforge.experiments.long_sft import LongSFTExperimentConfig, ReferenceJudge, make_pool, response
from lmforge.experiments.rl_reasoning import is_step_by_step
from lmforge.eval.judge import pairwise_compare
from lmforge.rewards.math import math_reward
from lmforge.rewards.tasks import arithmetic_problem_for, make_problems


def test_answers_in_every_style_right_and_wrong():
    problem, rng = arithmetic_problem_for(5, "+", 3), random.Random(0)
    assert response(problem, "terse", False, rng) == "5 + 3 = 8."
    assert response(problem, "worked", False, rng) == "5 + 3: 5 is 0, 6 is 1, 7 is 2, 8 is 3, so 8."
    chatty = response(problem, "chatty", False, rng)
    assert "5 + 3 = 8." in chatty and len(chatty) > 20 and math_reward(chatty, problem) == 1.0
    for style in ("terse", "worked", "chatty"):
        wrong = response(problem, style, True, rng)
        assert math_reward(wrong, problem) == 0.0
    miscounted = response(problem, "worked", True, rng)
    assert is_step_by_step(miscounted) and miscounted.startswith("5 + 3: 5 is 0")


def test_pool_is_fixed_and_mixed():
    pool = make_pool(LongSFTExperimentConfig())
    assert pool == make_pool(LongSFTExperimentConfig())  # whatever the seed
    held_out = {p["messages"][-1]["content"] for p in make_problems("arithmetic", 100, 1, "test", 10)}
    assert not {c["messages"][0]["content"] for c in pool} & held_out
    shares = {s: sum(c["style"] == s for c in pool) / len(pool) for s in ("terse", "worked", "chatty")}
    assert min(shares.values()) > 0.15 and 0.1 < 1 - sum(c["correct"] for c in pool) / len(pool) < 0.25


def test_reference_judge_rewards_correctness_not_length():
    problem = arithmetic_problem_for(5, "+", 3)
    judge = ReferenceJudge([problem])
    worked = "5 + 3: 5 is 0, 6 is 1, 7 is 2, 8 is 3, so 8."
    overcounted = "5 + 3: 5 is 0, 6 is 1, 7 is 2, 8 is 3, 9 is 4, so 9."
    other_numbers = "4 + 4: 4 is 0, 5 is 1, 6 is 2, 7 is 3, 8 is 4, so 8."
    a = ["5 + 3 = 8.", "5 + 3 = 9.", worked, "5 + 3: 5 is 0, 6 is 2, so 8.", overcounted, other_numbers]
    b = [worked, "5 + 3 = 8.", "Sure! 5 + 3 = 8. Hope that helps!", "5 + 3 = 8.", "5 + 3 = 9.", "5 + 3 = 8."]
    summary, rows = pairwise_compare(["What is 5 + 3?"] * 6, a, b, judge)
    # right beats wrong; of two right answers a false step ("6 is 2", counting 4 + 4) loses;
    # two wrong answers tie, however tidy the trace
    assert [r["outcome"] for r in rows] == ["tie", "loss", "tie", "loss", "tie", "loss"]
    assert summary["win_rate"] == 0.25
    assert [ReferenceJudge.false_steps(t, problem) for t in (worked, overcounted, other_numbers)] == [0, 1, 6]


@pytest.mark.slow
def test_long_sft_quick(tmp_path):
    out = tmp_path / "experiments" / "long-sft"
    assert main(["experiment", "long-sft", "--quick", "--output", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    chars = lambda name: [len(json.loads(line)["messages"][-1]["content"])  # noqa: E731
                          for line in (out / "seed0" / "data" / f"{name}.jsonl").read_text().splitlines()]
    longest, random_k = chars("longest-k"), chars("random-k")
    pool = [len(json.loads(line)["messages"][-1]["content"]) for line in (out / "data" / "pool.jsonl").open()]
    assert len(longest) == len(random_k) == 120 and len(pool) == results["pool"] > 300
    assert min(longest) >= sorted(pool, reverse=True)[119] and sum(longest) > 1.5 * sum(random_k)
    per = results["per_arm"]
    assert per["longest-k"]["worked_share"][0] + per["longest-k"]["chatty_share"][0] == 1.0  # no terse answer
    assert per["all"]["examples"][0] == results["pool"]
    steps = {arm: [json.loads(line)["step"] for line in (out / "seed0" / arm / "metrics.jsonl").open()]
             for arm in ("longest-k", "random-k", "all")}
    assert max(steps["longest-k"]) == max(steps["random-k"]) == max(steps["all"]) == 20  # the same budget
    for arm in ("longest-k", "random-k", "all"):
        assert 0.0 <= per[arm]["exact_match"][0] <= 1.0 and len(results["runs"][0][arm]["answers"]) == 47
    judged = results["runs"][0]["judged"]["longest-k vs random-k"]
    assert judged["n"] == 47 and judged["wins"] + judged["ties"] + judged["losses"] == 47
    report = (out / "report.md").read_text()
    assert "**exact match, longest-k − random-k**" in report and "**rule judge" in report and "no verdict" in report
    assert (out / "exact_match.png").stat().st_size > 0
    assert main(["report", str(tmp_path)]) == 0
    assert "## Experiment long-sft" in (tmp_path / "report.md").read_text()
