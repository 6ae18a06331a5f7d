import re

import pytest

from lmforge.rewards import load_reward, load_rewards
from lmforge.rewards.format import answer_tag_reward, think_format_reward
from lmforge.rewards.math import extract_answer, math_reward
from lmforge.eval.accuracy import trivial_baselines
from lmforge.rewards.tasks import arithmetic_problems, in_split, make_problems, word_problems


@pytest.mark.parametrize("text, expected", [
    ("3 + 4 = 7.", 7),
    ("3 - 5 = -2.", -2),
    ("10-5=5", 5),                              # a minus after a digit is subtraction
    ("She has 1,234 apples left.", 1234),
    ("The total is $12.50.", 12.5),
    ("It costs −3 dollars", -3),                # unicode minus
    ("12 apples", 12),
    ("1,2,3", 3),                               # a list, not a thousands-separated number
    ("First 5, then 6 #### 42", 42),
    ("#### 1,000", 1000),
    ("so \\boxed{17} and then 3 more words 9", 17),
    ("\\boxed{\\frac{1}{2}} ... 4", 1),         # the boxed content's first number
    ("<think>2 + 2 = 4, plus 1</think><answer>5</answer>", 5),
    ("The answer is 8 apples, not 9.", 8),
    ("Answer: -4", -4),
    (".5 of it", 0.5),
])
def test_extract_answer_tricky_cases(text, expected):
    assert extract_answer(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "no idea", "seven", "#### ", "\\boxed{}"])
def test_missing_answer_is_none_and_scores_zero(text):
    assert extract_answer(text) is None
    assert math_reward(text, {"answer": 7}) == 0.0


def test_math_reward_against_numbers_and_gsm8k_solutions():
    assert math_reward("3 + 4 = 7.", {"answer": 7}) == 1.0
    assert math_reward("3 + 4 = 8.", {"answer": 7}) == 0.0
    assert math_reward("He pays $1,234.00 in total", {"answer": "1234"}) == 1.0
    assert math_reward("x = 42", {"answer": "6 * 7 = 42\n#### 42"}) == 1.0
    assert math_reward("-5 degrees", {"answer": -5}) == 1.0
    assert math_reward("5 degrees", {"answer": -5}) == 0.0


def test_format_rewards():
    assert think_format_reward("<think>3 plus 4 is 7</think> 3 + 4 = 7.") == 1.0
    assert think_format_reward("  <think>x</think>\nThe answer is 2") == 1.0
    assert think_format_reward("3 + 4 = 7.") == 0.0
    assert think_format_reward("<think></think> 7") == 0.0          # empty reasoning
    assert think_format_reward("<think>hmm</think>") == 0.0          # no answer after it
    assert think_format_reward("<think>a</think> 7 <think>b</think> 8") == 0.0
    assert think_format_reward("7 <think>late</think> 7") == 0.0
    assert answer_tag_reward("blah <answer>7</answer>") == 1.0
    assert answer_tag_reward("<answer> </answer>") == 0.0


def test_user_rewards_load_by_module_path():
    assert load_reward("math") is math_reward
    fn = load_reward("tests.rewards.test_math:shortness")
    assert fn("abc", {}) == shortness("abc", {})
    with pytest.raises(ValueError, match="unknown reward"):
        load_reward("nope")
    with pytest.raises(ValueError, match="no callable"):
        load_rewards(["tests.rewards.test_math:missing"])


def shortness(completion, example):
    return -len(completion) / 100


def test_tasks_are_seeded_and_splits_disjoint():
    train = arithmetic_problems(300, seed=0, split="train")
    test = arithmetic_problems(100, seed=1, split="test")
    assert train == arithmetic_problems(300, seed=0, split="train")
    q = lambda ps: {p["messages"][-1]["content"] for p in ps}  # noqa: E731
    assert not q(train) & q(test)
    assert len(q(test)) == len(test)  # test problems are distinct
    for p in train[:50]:
        assert math_reward(p["solution"], p) == 1.0
        assert in_split(p["key"], "train")
    words = word_problems(50, seed=0)
    assert all(math_reward(p["solution"], p) == 1.0 for p in words)
    assert all(isinstance(p["answer"], int) and p["answer"] >= 0 for p in words)


def _canonical(question: str) -> tuple:
    """An independent canonical form: the question's numbers, unordered where the operation
    commutes ("3 + 4" = "4 + 3", "larger, 3 or 7" = "larger, 7 or 3"), plus its words."""
    numbers = [int(n) for n in re.findall(r"\d+", question)]
    commutes = "+" in question or "×" in question or "larger" in question
    return tuple(sorted(numbers)) if commutes else tuple(numbers), "-" in question, "larger" in question


@pytest.mark.parametrize("task", ["compare", "arithmetic"])
def test_no_held_out_problem_has_a_rewording_in_train(task):
    # The old split hashed the question text: 64 of the demo's 85 held-out comparisons had
    # their mirror ("b or a") in train. Every pair of splits must be disjoint under an
    # independent canonical form, whatever the seeds.
    splits = {s: make_problems(task, 3000 if s == "train" else 400, seed, s, 20)
              for s, seed in (("train", 0), ("dev", 7), ("test", 1))}
    forms = {s: {_canonical(p["messages"][-1]["content"]) for p in ps} for s, ps in splits.items()}
    assert forms["train"] and forms["dev"] and forms["test"]
    assert not forms["train"] & forms["test"] and not forms["train"] & forms["dev"]
    assert not forms["dev"] & forms["test"]
    # held-out draws cover both orders of a pair, so "answer the first number" scores 0.5
    if task == "compare":
        assert trivial_baselines(splits["train"], splits["test"])["random_number_from_question"] == 0.5


def test_word_problems_are_split_by_template_and_numbers_not_names():
    from lmforge.rewards.tasks import _ITEMS, _NAMES

    def form(p):  # names and items blanked out: what is left is the template and its numbers
        return re.sub(r"\b(" + "|".join(_NAMES + _ITEMS) + r")\b", "X", p["messages"][-1]["content"])

    test = {form(p) for p in word_problems(300, seed=1, split="test")}
    train = {form(p) for p in word_problems(5000, seed=0, split="train")}
    assert len(test) > 100 and not test & train


def test_trivial_baselines_are_exact():
    ask = lambda q, a: {"messages": [{"role": "user", "content": q}], "answer": a}  # noqa: E731
    test = [ask("Which is larger, 3 or 7?", 7), ask("What is 2 + 2?", 4), ask("What is 1 + 5?", 6)]
    train = [ask("x", 4), ask("y", 4), ask("z", 9)]
    assert trivial_baselines(train, test) == {"random_number_from_question": (0.5 + 0 + 0) / 3,
                                              "most_common_train_answer": 1 / 3}


def test_grounded_answer_rewards_an_answer_taken_from_the_question():
    from lmforge.rewards.math import grounded_answer_reward

    ex = {"messages": [{"role": "user", "content": "Which is larger, 37 or -5?"}], "answer": 37}
    assert grounded_answer_reward("The larger is 37.", ex) == 1.0
    assert grounded_answer_reward("The larger is -5.", ex) == 1.0  # grounded, though wrong
    assert grounded_answer_reward("The larger is 61.", ex) == 0.0
    assert grounded_answer_reward("I don't know.", ex) == 0.0
