"""`lmforge label`: pair selectors on a constructed ensemble, labellers, and the stage on a
tiny model (appends pairs `lmforge rm` reads; a restart relabels nothing and continues as an
uninterrupted run would)."""

import json

import pytest
import torch

from lmforge.cli import main
from lmforge.config import ConfigError
from lmforge.data.preference import read_preferences
from lmforge.rewards.labellers import RewardLabeller, open_labeller
from lmforge.train.pair_selection import double_thompson, max_spread, random_pair
from tests.stages.test_dpo_grpo import tiny_model_dir  # noqa: F401 (fixture)

GOLD = "reward:tests.stages.test_label:length_reward"


def length_reward(completion: str, example: dict) -> float:
    """A gold reward for the tiny random model's babble: longer is better (ties broken by the text)."""
    return len(completion) + sum(map(ord, completion)) % 1000 / 1000


class FirstAnswer:
    def label(self, example, a, b):
        return 0


def make_labeller():
    return FirstAnswer()


# 5 answers x 4 heads: 0 is good under every head, 1 is best under head 0 only (uncertain),
# 2-4 are worse under every head. Every head's best answer is 0 or 1.
SCORES = torch.tensor([[1.0, 1.0, 1.0, 1.0],
                       [3.0, -2.0, -2.0, -2.0],
                       [0.5, 0.5, 0.5, 0.5],
                       [0.0, 0.2, 0.0, 0.2],
                       [-1.0, -1.0, -1.0, -1.0]])


def test_double_thompson_pairs_the_plausibly_best_answers():
    picks = [double_thompson(SCORES, torch.Generator().manual_seed(s)) for s in range(200)]
    assert all(i != j for i, j in picks)
    # the certain best and the uncertain one, unless 8 draws all miss head 0 ((3/4)^8 ≈ 10%):
    # then the best other answer under the last head, 2; the low ones never
    assert all(i in (0, 1) and j in (0, 1, 2) for i, j in picks)
    assert sum({i, j} == {0, 1} for i, j in picks) > 0.8 * len(picks)
    assert picks == [double_thompson(SCORES, torch.Generator().manual_seed(s)) for s in range(200)]
    # heads that all agree on the best answer: the second is the best other one under a drawn head
    agree = torch.tensor([[2.0, 2.0], [1.0, 0.0], [0.0, 1.5], [-1.0, -1.0]])
    for s in range(20):
        i, j = double_thompson(agree, torch.Generator().manual_seed(s))
        assert i == 0 and j in (1, 2)


def test_random_and_max_spread_selectors():
    counts = torch.zeros(5)
    for s in range(500):
        i, j = random_pair(SCORES, torch.Generator().manual_seed(s))
        assert i != j
        counts[[i, j]] += 1
    assert counts.min() > 150  # each answer in ~2/5 of 500 pairs
    # the heads disagree most about answer 1 against 2: head 0 prefers 1 by 2.5, the others 2 by 2.5
    assert max_spread(SCORES, torch.Generator()) == (1, 2)
    with pytest.raises(ValueError, match="ensemble"):
        max_spread(SCORES[:, :1], torch.Generator())


def test_labellers_from_a_gold_reward_and_a_factory():
    math = open_labeller("reward:math")
    example = {"messages": [{"role": "user", "content": "What is 3 + 4?"}], "answer": 7}
    assert math.label(example, "3 + 4 = 7.", "3 + 4 = 8.") == 0
    assert math.label(example, "It is 9.", "7") == 1
    assert math.label(example, "8", "9") is None  # both wrong: no preference, skipped
    assert isinstance(open_labeller(GOLD), RewardLabeller)
    assert open_labeller("tests.stages.test_label:make_labeller").label(example, "a", "b") == 0
    for spec, message in [("reword:math", "unknown labeller"), ("reward:nope", "unknown reward"),
                          ("judge:", "unknown labeller"), ("tests.stages.test_label:FIRST", "no callable")]:
        with pytest.raises(ConfigError, match=message):
            open_labeller(spec)


def _label(model_dir, run, *extra):
    argv = ["label", "--model", str(model_dir), "--run_dir", str(run), "--labeller", GOLD, "--answers", "4",
            "--max_new_tokens", "6", "--ensemble", "3", "--refit_every", "2", "--refit_steps", "3",
            "--device", "cpu", *extra]
    assert main(argv) == 0
    return json.loads((run / "summary.json").read_text())


def test_label_stage_appends_pairs_rm_reads_and_resumes(tiny_model_dir, tmp_path):
    full = _label(tiny_model_dir, tmp_path / "full", "--max_prompts", "5")
    pairs = read_preferences(tmp_path / "full" / "pairs.jsonl")
    assert full["labelled"] == len(pairs) >= 3 and full["labelled"] + full["skipped"] == 5
    assert full["refits"] == len(pairs) // 2
    for p in pairs:  # the gold labeller's verdict is what was written
        assert len(p.chosen["content"]) >= len(p.rejected["content"])
    assert (tmp_path / "full" / "reward_model" / "model.safetensors").exists()

    # stopped after 4 prompts, restarted for 6: the first rows stay, nothing is relabelled, and
    # the file ends as the uninterrupted run's did
    part = tmp_path / "part"
    _label(tiny_model_dir, part, "--max_prompts", "3")
    first = (part / "pairs.jsonl").read_text()
    again = _label(tiny_model_dir, part, "--max_prompts", "5")
    assert again["labelled"] + again["skipped"] == 2
    text = (part / "pairs.jsonl").read_text()
    assert text.startswith(first) and text == (tmp_path / "full" / "pairs.jsonl").read_text()

    assert main(["rm", "--model", str(tiny_model_dir), "--run_dir", str(tmp_path / "rm"),
                 "--data", str(part / "pairs.jsonl"), "--eval_percent", "0", "--ensemble", "2",
                 "--loop.max_steps", "2", "--batch_size", "2", "--tensorboard", "false",
                 "--loop.progress", "false"]) == 0
    assert json.loads((tmp_path / "rm" / "summary.json").read_text())["pairs"]["train"] == len(pairs)


def test_bad_labeller_spec_is_a_one_line_error(tiny_model_dir, tmp_path, capsys):
    assert main(["label", "--model", str(tiny_model_dir), "--run_dir", str(tmp_path / "x"),
                 "--labeller", "gold"]) == 2
    err = capsys.readouterr().err
    assert "lmforge label: unknown labeller 'gold': use reward:NAME" in err
    assert not (tmp_path / "x" / "pairs.jsonl").exists()
    assert main(["label", "--model", str(tiny_model_dir), "--run_dir", str(tmp_path / "y"),
                 "--labeller", GOLD, "--ensemble", "1"]) == 2
    assert "selector double_ts reads the ensemble's disagreement" in capsys.readouterr().err
