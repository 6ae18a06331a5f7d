"""`lmforge data distill` with a local teacher and through an OpenAI-compatible endpoint: the
same command, resumable, filtered, and clear about a broken endpoint while keeping its rows."""

import json
import socket

import pytest

from lmforge.cli import main
from lmforge.data.chat import read_conversations
from lmforge.rewards.math import math_reward
from lmforge.synth.backend import LocalBackend
from lmforge.synth.stage import sha256_file
from tests.synth.conftest import default_reply


class Killed(Exception):
    pass


def write_prompts(path, n=6):
    path.write_text("".join(json.dumps({"prompt": f"Tell me about the number {i}."}) + "\n" for i in range(n)))
    return path


def distill(*args):
    return main(["data", "distill", "--progress", "false", "--endpoint.backoff_s", "0.01", *map(str, args)])


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_local_teacher_killed_mid_run_resumes_to_the_same_rows(chat_model_dir, tmp_path, monkeypatch):
    prompts = write_prompts(tmp_path / "prompts.jsonl")
    common = ["--teacher", chat_model_dir, "--prompts", prompts, "--samples", 2, "--temperature", 1.0,
              "--max_new_tokens", 6, "--batch_size", 2, "--system_prompt", "Be brief.", "--drop_truncated", "false"]
    whole, out = tmp_path / "whole.jsonl", tmp_path / "out.jsonl"
    assert distill(*common, "--output", whole) == 0

    real_complete, calls = LocalBackend.complete, []

    def dies_on_the_third_batch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise Killed
        return real_complete(self, *args, **kwargs)
    monkeypatch.setattr(LocalBackend, "complete", dies_on_the_third_batch)
    with pytest.raises(Killed):
        distill(*common, "--output", out)
    assert len(rows(out)) <= 8  # two batches of two prompts, two samples each, minus drops
    monkeypatch.setattr(LocalBackend, "complete", real_complete)
    assert distill(*common, "--output", out) == 0

    assert out.read_text() == whole.read_text()  # same rows, same order, none twice
    conversations = read_conversations(out)  # what `lmforge sft` reads
    assert conversations and all(c[0] == {"role": "system", "content": "Be brief."} for c in conversations)
    assert all(c[-1]["role"] == "assistant" and c[-1]["content"] for c in conversations)
    manifest = json.loads((tmp_path / "out.jsonl.manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["generators"] == {"teacher": str(chat_model_dir)}
    assert manifest["inputs"] == {str(prompts): sha256_file(prompts)}
    assert manifest["output"]["sha256"] == sha256_file(out)
    counts = manifest["counts"]
    assert counts["rows"] == len(conversations) and counts["rows"] + sum(counts["dropped"].values()) == 12


def test_an_endpoint_teacher_with_a_verifier_a_length_range_and_the_system_prompt_distilled_away(
        endpoint, tmp_path):
    url, script = endpoint
    out = tmp_path / "arith.jsonl"
    assert distill("--teacher", "teacher-model", "--url", url, "--prompts", "arithmetic:6", "--samples", 4,
                   "--temperature", 0.7, "--verifier", "math", "--max_chars", 16, "--system_prompt", "Add.",
                   "--keep_system_prompt", "false", "--batch_size", 4, "--output", out) == 0
    assert len(script["requests"]) == 24 and all(r["messages"][0]["content"] == "Add." for r in script["requests"])
    assert {r["model"] for r in script["requests"]} == {"teacher-model"}
    assert len({r["seed"] for r in script["requests"]}) == 24  # n samples of one prompt differ
    replies = [(default_reply(r), r["messages"][-1]["content"]) for r in script["requests"]]
    wanted = [reply for reply, question in replies if len(reply) <= 16 and math_reward(reply, _gold(question))]
    got = rows(out)
    assert sorted(r["messages"][-1]["content"] for r in got) == sorted(wanted) and wanted
    assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in got)
    dropped = json.loads((tmp_path / "arith.jsonl.manifest.json").read_text())["counts"]["dropped"]
    assert dropped["too_long"] == sum(len(reply) > 16 for reply, _ in replies) > 0
    assert dropped["verifier:math"] > 0 and len(got) + sum(dropped.values()) == 24


def _gold(question):
    a, b = [int(t) for t in question.replace("?", " ").split() if t.isdigit()]
    return {"answer": a + b if "+" in question else a - b}


def test_answers_cut_off_at_max_new_tokens_are_dropped_unless_asked(endpoint, tmp_path):
    url, _ = endpoint
    prompts, out = write_prompts(tmp_path / "p.jsonl", 3), tmp_path / "out.jsonl"
    assert distill("--teacher", "m", "--url", url, "--prompts", prompts, "--max_new_tokens", 4, "--output", out) == 0
    assert rows(out) == []
    assert json.loads((tmp_path / "out.jsonl.manifest.json").read_text())["counts"]["dropped"] == {"truncated": 3}
    assert distill("--teacher", "m", "--url", url, "--prompts", prompts, "--max_new_tokens", 4,
                   "--drop_truncated", "false", "--output", out, "--overwrite", "true") == 0
    assert [len(r["messages"][-1]["content"].split()) for r in rows(out)] == [4, 4, 4]


def test_endpoint_misbehaviour_is_retried(endpoint, tmp_path):
    url, script = endpoint
    script["fail"] = ["500", "malformed", "no_choices", "drop", "slow"]
    out = tmp_path / "out.jsonl"
    assert distill("--teacher", "m", "--url", url, "--prompts", write_prompts(tmp_path / "p.jsonl", 2),
                   "--endpoint.timeout_s", 0.2, "--endpoint.concurrency", 1, "--endpoint.retries", 5,
                   "--output", out) == 0
    answers = [r["messages"][-1]["content"] for r in rows(out)]
    assert [a.split(" to: ")[1] for a in answers] == ["Tell me about the number 0.", "Tell me about the number 1."]
    assert len(script["requests"]) == 7


@pytest.mark.parametrize("kind", ["500", "malformed", "slow"])
def test_a_broken_endpoint_fails_clearly_and_keeps_what_was_written(endpoint, tmp_path, capsys, kind):
    url, script = endpoint
    script["broken_after"] = (2, kind)  # the first batch (two prompts) is answered, then nothing works
    out, prompts = tmp_path / "out.jsonl", write_prompts(tmp_path / "p.jsonl", 4)
    args = ["--teacher", "m", "--url", url, "--prompts", prompts, "--batch_size", 2, "--endpoint.retries", 2,
            "--endpoint.timeout_s", 0.2, "--output", out]
    assert distill(*args) == 2
    error = capsys.readouterr().err
    assert "the 2 rows written so far are kept; run the same command again to resume" in error
    assert {"500": "HTTP 500", "malformed": "no chat completion", "slow": "no answer after 3 tries"}[kind] in error
    assert len(rows(out)) == 2 and len(script["requests"]) == 2 + 2 * 3  # two prompts, three tries each
    manifest = json.loads((tmp_path / "out.jsonl.manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["counts"]["rows"] == 2 and manifest["error"]
    script["broken_after"] = None  # the endpoint is back: the job finishes where it stopped
    assert distill(*args) == 0
    assert [r["messages"][0]["content"] for r in rows(out)] == [f"Tell me about the number {i}." for i in range(4)]


def test_a_refused_connection_is_retried_then_reported(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    assert distill("--teacher", "m", "--url", f"http://127.0.0.1:{port}/v1", "--endpoint.retries", 1,
                   "--prompts", write_prompts(tmp_path / "p.jsonl", 1), "--output", tmp_path / "o.jsonl") == 2
    assert "no answer after 2 tries" in capsys.readouterr().err
