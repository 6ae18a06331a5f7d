"""`lmforge data judge`: a policy's answers compared by a judge in both orders under a
constitution; only pairs both orders agree on are kept, with the verdicts, as DPO/RM input."""

import json

from lmforge.cli import main
from lmforge.data.preference import read_preferences
from lmforge.eval.judge import parse_verdict
from tests.synth.conftest import default_reply


def words_by_seed(body):
    """Generation: 1-4 words depending on the seed; judging: the default (longer wins)."""
    if "[Response 1]" in body["messages"][-1]["content"]:
        return default_reply(body)
    return " ".join(["word"] * (body["seed"] % 4 + 1))


def judge(*args):
    return main(["data", "judge", "--progress", "false", "--endpoint.backoff_s", "0.01", *map(str, args)])


def prompts_file(tmp_path, n=3):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Say something {i}."}]}) + "\n"
                            for i in range(n)))
    return path


def test_pairs_both_orders_agree_on_are_kept_with_their_verdicts(endpoint, tmp_path):
    url, script = endpoint
    script["reply"] = words_by_seed
    constitution = tmp_path / "constitution.md"
    constitution.write_text("- Prefer the more thorough answer {always}.\n")
    out = tmp_path / "pairs.jsonl"
    assert judge("--policy", "policy-m", "--policy_url", url, "--judge", "judge-m", "--judge_url", url,
                 "--constitution", constitution, "--prompts", prompts_file(tmp_path), "--answers", 4,
                 "--output", out) == 0
    generated = [r for r in script["requests"] if r["model"] == "policy-m"]
    judged = [r for r in script["requests"] if r["model"] == "judge-m"]
    assert len(generated) == 12 and all(r["temperature"] == 0.8 for r in generated)
    assert judged and all("Prefer the more thorough answer {always}." in r["messages"][0]["content"] for r in judged)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all(len(r["chosen"]) > len(r["rejected"]) for r in rows)
    assert all(parse_verdict(r["judge"]["verdict_chosen_first"]) == "1" and
               parse_verdict(r["judge"]["verdict_rejected_first"]) == "2" and r["judge"]["model"] == f"judge-m @ {url}"
               for r in rows)
    assert len(read_preferences(out)) == len(rows)  # what `lmforge dpo` and `lmforge rm` read
    manifest = json.loads((tmp_path / "pairs.jsonl.manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["rows"] + sum(counts["dropped"].values()) == 3 * 6  # C(4, 2) pairs per prompt
    assert len(judged) == 2 * (counts["rows"] + counts["dropped"].get("judge_tie", 0))  # both orders
    assert str(constitution) in manifest["inputs"] and set(manifest["generators"]) == {"policy", "judge"}


def test_a_position_biased_judge_yields_no_pairs(endpoint, tmp_path):
    url, script = endpoint
    script["reply"] = lambda body: "1" if "[Response 1]" in body["messages"][-1]["content"] else words_by_seed(body)
    out = tmp_path / "pairs.jsonl"
    assert judge("--policy", "p", "--policy_url", url, "--judge", "j", "--judge_url", url, "--answers", 3,
                 "--prompts", prompts_file(tmp_path), "--output", out) == 0
    assert out.read_text() == ""
    dropped = json.loads((tmp_path / "pairs.jsonl.manifest.json").read_text())["counts"]["dropped"]
    assert dropped["order_disagreement"] > 0 and set(dropped) <= {"order_disagreement", "identical_answers"}


def test_a_local_policy_with_an_endpoint_judge(chat_model_dir, endpoint, tmp_path):
    url, script = endpoint
    out = tmp_path / "pairs.jsonl"
    assert judge("--policy", chat_model_dir, "--judge", "j", "--judge_url", url, "--answers", 3, "--temperature", 1.0,
                 "--max_new_tokens", 8, "--prompts", prompts_file(tmp_path, 2), "--output", out) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    counts = json.loads((tmp_path / "pairs.jsonl.manifest.json").read_text())["counts"]
    assert counts["rows"] == len(rows) and counts["rows"] + sum(counts["dropped"].values()) == 2 * 3
    assert all(len(r["chosen"]) > len(r["rejected"]) for r in rows)
    assert all("[Response 1]" in r["messages"][-1]["content"] for r in script["requests"])  # only judging went out
