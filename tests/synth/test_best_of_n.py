"""`lmforge data best-of-n`: the best of N samples by a verifier, a reward model or a judge."""

import json

import pytest
import torch

from lmforge.cli import main
from lmforge.data.chat import read_conversations
from lmforge.model.reward import RewardModel, save_reward_model
from lmforge.model.transformer import Transformer
from lmforge.rewards.math import math_reward
from lmforge.synth.score import RewardModelScorer
from lmforge.tokenizer import Tokenizer
from tests.conftest import tiny_config
from tests.synth.conftest import default_reply
from tests.synth.test_distill import _gold


def best_of_n(*args):
    return main(["data", "best-of-n", "--progress", "false", "--endpoint.backoff_s", "0.01", *map(str, args)])


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def candidates(script, model="policy"):
    """Each question's sampled answers, in order, from what the server was asked."""
    out = {}
    for r in sorted(script["requests"], key=lambda r: r.get("seed", 0)):  # the i-th sample has seed + i
        if r["model"] == model:
            out.setdefault(r["messages"][-1]["content"], []).append(default_reply(r))
    return out


def test_a_verifier_keeps_a_passing_answer_and_drops_prompts_none_pass(endpoint, tmp_path):
    url, script = endpoint
    out = tmp_path / "bon.jsonl"
    assert best_of_n("--policy", "policy", "--url", url, "--prompts", "arithmetic:8", "--n", 2, "--verifier", "math",
                     "--output", out) == 0
    asked = candidates(script)
    got = rows(out)
    assert all(math_reward(r["messages"][-1]["content"], _gold(r["messages"][0]["content"])) == 1.0 and
               r["score"] == 1.0 for r in got)
    passing = [q for q, answers in asked.items() if any(math_reward(a, _gold(q)) for a in answers)]
    assert sorted(r["messages"][0]["content"] for r in got) == sorted(passing)
    dropped = json.loads((tmp_path / "bon.jsonl.manifest.json").read_text())["counts"]["dropped"]
    assert dropped.get("none_passed", 0) == len(asked) - len(passing)
    assert len(read_conversations(out)) == len(got)


def test_a_reward_model_picks_its_highest_scoring_answer(chat_model_dir, endpoint, tmp_path):
    url, script = endpoint
    torch.manual_seed(1)
    rm_dir = tmp_path / "rm"
    tok = Tokenizer.from_dir(chat_model_dir)
    save_reward_model(RewardModel(Transformer(tiny_config(vocab_size=512)), pad_id=tok.pad_id or 0), rm_dir, tok)
    out = tmp_path / "bon.jsonl"
    assert best_of_n("--policy", "policy", "--url", url, "--prompts", "arithmetic:3", "--n", 4,
                     "--reward_model", rm_dir, "--output", out) == 0
    scorer = RewardModelScorer(str(rm_dir))
    for r in rows(out):
        question = r["messages"][0]["content"]
        answers = candidates(script)[question]
        scores = scorer.score([[{"role": "user", "content": question}, {"role": "assistant", "content": a}]
                               for a in answers])
        assert r["messages"][-1]["content"] == answers[scores.index(max(scores))]
        assert r["score"] == pytest.approx(max(scores), abs=1e-5)


def test_a_judge_knockout_picks_the_answer_it_prefers_in_both_orders(endpoint, tmp_path):
    url, script = endpoint  # the judge prefers the longer response
    out = tmp_path / "bon.jsonl"
    assert best_of_n("--policy", "policy", "--url", url, "--prompts", "arithmetic:3", "--n", 4,
                     "--judge", "judge", "--judge_url", url, "--output", out) == 0
    for r in rows(out):
        answers = candidates(script)[r["messages"][0]["content"]]
        assert len(r["messages"][-1]["content"]) == max(map(len, answers))
    assert sum(r["model"] == "judge" for r in script["requests"]) == 3 * 3 * 2  # 3 matches a prompt, both orders


def test_a_local_policy_and_exactly_one_scorer(chat_model_dir, tmp_path, capsys):
    out = tmp_path / "bon.jsonl"
    assert best_of_n("--policy", chat_model_dir, "--prompts", "arithmetic:4", "--n", 2, "--max_new_tokens", 6,
                     "--verifier", "math", "--min_score", 0, "--output", out) == 0
    assert len(rows(out)) == 4  # min_score 0: every prompt keeps its best, right or not
    assert best_of_n("--policy", chat_model_dir, "--prompts", "arithmetic:4", "--output", out) == 2
    assert "exactly one scorer" in capsys.readouterr().err


def test_rounds_alternate_best_of_n_with_sft(chat_model_dir, tmp_path):
    recipe = tmp_path / "sft.yaml"
    recipe.write_text("data: {seq_len: 64, batch_size: 4, val_fraction: 0.0}\nloop: {max_steps: 2, progress: false}\n"
                      "optim: {warmup_steps: 1}\neval: {sample_questions: []}\ntensorboard: false\ncheck: false\n")
    args = ["--policy", chat_model_dir, "--prompts", "arithmetic:4", "--n", 2, "--max_new_tokens", 6,
            "--verifier", "math", "--min_score", 0, "--rounds", 2, "--sft_recipe", recipe,
            "--run_dir", tmp_path / "rest", "--output", tmp_path / "bon.jsonl"]
    assert best_of_n(*args) == 0
    for r in (1, 2):
        assert len(rows(tmp_path / f"bon.round{r}.jsonl")) == 4
        assert (tmp_path / "rest" / f"round{r}" / "model" / "model.safetensors").exists()
    manifest = json.loads((tmp_path / "bon.round2.jsonl.manifest.json").read_text())
    assert manifest["generators"]["policy"] == str(tmp_path / "rest" / "round1" / "model")  # sampled from round 1
    sft_config = (tmp_path / "rest" / "round2" / "config.yaml").read_text()
    assert str(tmp_path / "rest" / "round1" / "model") in sft_config and "bon.round2.jsonl" in sft_config
