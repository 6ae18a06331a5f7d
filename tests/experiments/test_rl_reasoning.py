"""`lmforge experiment rl-reasoning --quick` end to end: the cold-start SFT answers in both
ways without a held-out problem, both GRPO arms run from it, and the report states the result."""

import json

import pytest

from lmforge.cli import main
from lmforge.experiments.rl_reasoning import answer, counting_trace, is_step_by_step
from lmforge.rewards import think_format_reward
from lmforge.rewards.math import math_reward
from lmforge.rewards.tasks import arithmetic_problem_for, make_problems


def test_both_answers_earn_both_rewards():
    assert counting_trace(5, "+", 3) == "5 + 3: 5 is 0, 6 is 1, 7 is 2, 8 is 3, so 8."
    assert counting_trace(1, "-", 2) == "1 - 2: 1 is 0, 0 is 1, -1 is 2, so -1."
    for a, op, b in ((5, "+", 3), (1, "-", 2), (7, "+", 0)):
        problem = arithmetic_problem_for(a, op, b)
        long, short = answer(problem, step_by_step=True), answer(problem, step_by_step=False)
        assert is_step_by_step(long) and not is_step_by_step(short) and len(long) > len(short)
        for text in (long, short):
            assert math_reward(text, problem) == 1.0 and think_format_reward(text) == 1.0


@pytest.mark.slow
def test_rl_reasoning_quick(tmp_path):
    out = tmp_path / "experiments" / "rl-reasoning"
    assert main(["experiment", "rl-reasoning", "--quick", "--output", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    chats = [json.loads(line) for line in (out / "data" / "sft.jsonl").read_text().splitlines()]
    held_out = {p["messages"][-1]["content"] for p in make_problems("arithmetic", 100, 1, "test", 10)}
    assert len(chats) == 120 and not {c["messages"][0]["content"] for c in chats} & held_out
    counts = [line.split(":")[0] for doc in (out / "data" / "pretrain.jsonl").read_text().splitlines()
              for line in json.loads(doc)["text"].split("\n") if line[:1].isdigit() or line[:1] == "-"]
    assert len(counts) == 600 and not {f"What is {c}?" for c in counts} & held_out  # no held-out sum pretrained
    steps = sum(is_step_by_step(c["messages"][-1]["content"]) for c in chats)
    assert 30 < steps < 70  # both ways of answering, about half and half
    for name in ("sft", "grpo + format", "grpo, accuracy only"):
        accuracy, _ = results["per_model"][name]["accuracy"]
        assert 0.0 <= accuracy <= 1.0 and results["per_model"][name]["completion_tokens"][0] > 0
    curve = results["runs"]["grpo + format"][0]["curve"]
    assert [step for step, _, _ in curve] == [0, 2, 4]  # the SFT model, then every eval_every_steps
    report = (out / "report.md").read_text()
    assert "**accuracy**" in report and "**length**" in report and "no verdict" in report
    assert (out / "accuracy.png").stat().st_size > 0 and (out / "length.png").stat().st_size > 0
    assert main(["report", str(tmp_path)]) == 0
    assert "## Experiment rl-reasoning" in (tmp_path / "report.md").read_text()
