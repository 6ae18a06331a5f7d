"""The reasoning_gym:<dataset> tasks: held-out split, math-reward answers, clear errors."""

import sys

import pytest

from lmforge.rewards.math import math_reward
from lmforge.data.splits import text_key
from lmforge.rewards.tasks import _exact_number, in_split, make_problems

NUMERIC = ["gsm_symbolic", "basic_arithmetic", "chain_sum"]


def _questions(problems: list[dict]) -> list[str]:
    return [p["messages"][-1]["content"] for p in problems]


@pytest.mark.parametrize("dataset", ["gsm_symbolic", "chain_sum"])
def test_held_out_split_never_shares_a_question_with_train(dataset):
    # seeds as the GRPO stage draws them: seed for train, seed + 1 for test
    train = make_problems(f"reasoning_gym:{dataset}", 1000, 0, "train")
    test = make_problems(f"reasoning_gym:{dataset}", 200, 1, "test")
    assert (len(train), len(test)) == (1000, 200)
    train_q, test_q = _questions(train), _questions(test)
    assert all(in_split(p["key"], "train") for p in train) and all(in_split(p["key"], "test") for p in test)
    assert not {text_key(q) for q in train_q} & {text_key(q) for q in test_q}
    assert len(set(test_q)) == len(test_q)


def test_the_seed_picks_the_draw_deterministically():
    draw = lambda seed: _questions(make_problems("reasoning_gym:chain_sum", 50, seed, "train"))  # noqa: E731
    assert draw(0) == draw(0) != draw(2)


@pytest.mark.parametrize("dataset", NUMERIC)
def test_reference_solution_scores_one_and_a_wrong_number_zero(dataset):
    problems = make_problems(f"reasoning_gym:{dataset}", 300, 0, "train")
    assert all(isinstance(p["answer"], (int, float)) for p in problems)
    assert all(math_reward(p["solution"], p) == 1.0 for p in problems)
    assert all(math_reward(f"#### {p['answer']}", p) == 1.0 for p in problems)
    assert not any(math_reward(f"#### {p['answer'] + 1}", p) for p in problems)


def test_gsm_symbolic_solutions_are_worked_gsm8k_style():
    p = make_problems("reasoning_gym:gsm_symbolic", 1, 0, "train")[0]
    steps, _, final = p["solution"].rpartition("\n#### ")
    assert steps and float(final) == p["answer"]


def test_large_integer_answers_need_an_exact_match():
    # basic_arithmetic answers reach 1e11, where a 1e-6 relative tolerance would pass ±100000
    assert math_reward("106475279601", {"answer": 106475279601}) == 1.0
    assert math_reward("106475279602", {"answer": 106475279601}) == 0.0
    assert math_reward("0.1234567", {"answer": 0.12345671}) == 1.0  # decimals keep a tolerance


@pytest.mark.parametrize("dataset, example", [("course_schedule", "False"), ("dice", "823/1575")])
def test_non_numeric_datasets_are_rejected_by_name(dataset, example):
    with pytest.raises(ValueError, match=f"reasoning_gym:{dataset} has a non-numeric answer"):
        make_problems(f"reasoning_gym:{dataset}", 5, 0, "train")


@pytest.mark.parametrize("text, expected", [
    ("-14282", -14282), ("106475279601", 106475279601), ("4471.6021", 4471.6021),
    ("True", None), ("3/4", None), ("45a", None), ("1 2 3", None), (None, None),
    ("6.103515625e-05", None),  # the math reward would read 5 from it
])
def test_only_answers_the_math_reward_reads_back_exactly_count_as_numbers(text, expected):
    assert _exact_number(text) == expected


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # makes `import reasoning_gym` fail
    with pytest.raises(ModuleNotFoundError, match="pip install reasoning-gym") as info:
        make_problems("reasoning_gym:gsm_symbolic", 10, 0, "train")
    assert info.value.__suppress_context__  # one clear error, not a chained traceback
