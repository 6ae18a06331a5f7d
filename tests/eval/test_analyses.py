"""Token shift and knowledge categories."""

import json

import pytest
import torch

from lmforge.cli import main
from lmforge.eval import knowledge
from lmforge.eval.knowledge import category, is_correct, knowledge_categories
from lmforge.eval.token_shift import base_ranks, shift_class, token_shift
from lmforge.model.load import load_pretrained
from lmforge.model.transformer import Transformer
from lmforge.stages.common import export_model
from tests.conftest import tiny_config

PROMPTS = ["What is 2 + 3?", "Say hello.", "Which is larger, 4 or 9?", "Name a colour."]


def test_a_model_against_itself_shifts_no_token(chat_model_dir):
    model, tok = load_pretrained(chat_model_dir)
    summary, rows = token_shift(model, model, tok, PROMPTS, max_new_tokens=12, batch_size=3)
    assert summary["tokens"] == sum(len(r["base_ranks"]) for r in rows) > 0
    assert summary["unshifted_share"] == 1.0 and all(r == 0 for row in rows for r in row["base_ranks"])


def test_base_ranks_equal_a_naive_rank_per_prefix():
    torch.manual_seed(0)
    model = Transformer(tiny_config()).eval()
    seqs = [[1, 5, 9, 3, 7, 2], [4, 4, 8, 1]]
    ranks = base_ranks(model, seqs, starts=[2, 1], batch_size=2)  # padded together in one batch
    for seq, start, got in zip(seqs, [2, 1], ranks):
        expected = []
        for t in range(start, len(seq)):
            logits = model(torch.tensor([seq[:t]]))[0, -1]
            expected.append(int((logits > logits[seq[t]]).sum()))
        assert got == expected
    assert [shift_class(r) for r in (0, 1, 2, 3, 50)] == ["unshifted", "marginal", "marginal", "shifted", "shifted"]


def test_token_shift_cli_writes_report_and_figure(chat_model_dir, tmp_path):
    torch.manual_seed(1)
    model, tok = load_pretrained(chat_model_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # an "aligned" model that differs from its base
    export_model(model, tok, tmp_path / "aligned")
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS))
    out = tmp_path / "shift"
    assert main(["analyze", "token-shift", str(chat_model_dir), str(tmp_path / "aligned"), "--prompts",
                 str(tmp_path / "prompts.txt"), "--output", str(out), "--max_new_tokens", "12"]) == 0
    summary = json.loads((out / "token_shift.json").read_text())
    shares = [summary[f"{c}_share"] for c in ("unshifted", "marginal", "shifted")]
    assert sum(shares) == pytest.approx(1.0) and shares[0] < 1.0  # the perturbation shifted some tokens
    assert (out / "token_shift.png").stat().st_size > 1000 and "Token shift" in (out / "report.md").read_text()


def test_knowledge_categories_follow_the_definitions(monkeypatch):
    qa = [{"question": f"q{i}", "answer": a} for i, a in enumerate(["Paris", ["Lima", "Lima, Peru"], "Oslo", "Rome", "x"])]
    # Greedy answers per question (2 exemplar sets), then sampled answers (2 sets x 2 samples).
    greedy = {"q0": ["Paris", "paris."], "q1": ["Lima", "Cusco"], "q2": ["no", "no"], "q3": ["no", "no"], "q4": ["y", "y"]}
    sampled = {"q0": ["Paris"] * 4, "q1": ["Lima"] * 4, "q2": ["Oslo", "no", "no", "no"], "q3": ["no"] * 4, "q4": ["x"] * 4}

    def fake_answers(model, tok, prompts, sampling, *args):
        table = greedy if sampling.temperature == 0 else sampled
        counters = {}
        out = []
        for p in prompts:
            q = tok.decode(p).rsplit("Q: ", 1)[1].split("\n")[0]
            out.append(table[q][counters.get(q, 0) % len(table[q])] if sampling.temperature == 0
                       else table[q][counters.get(q, 0)])
            counters[q] = counters.get(q, 0) + 1
        return out

    class Tok:
        bos_id = None
        encode = staticmethod(lambda s: list(s.encode()))
        decode = staticmethod(lambda ids: bytes(ids).decode())

    monkeypatch.setattr(knowledge, "_answers", fake_answers)
    summary, rows = knowledge_categories(None, Tok(), qa, exemplar_sets=2, shots=2, samples=2)
    assert [r["category"] for r in rows] == ["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown", "WeaklyKnown"]
    assert [r["p_greedy"] for r in rows[:3]] == [1.0, 0.5, 0.0] and rows[2]["p_sample"] == 0.25
    assert summary["HighlyKnown"] == 1 and summary["Unknown"] == 1 and summary["questions"] == 5
    assert category(0.0, 0.0) == "Unknown" and is_correct("The Lima, Peru!", ["lima peru"])


def test_knowledge_cli_labels_every_question(chat_model_dir, tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": f"What is {i} plus 1?", "answer": str(i + 1)}) + "\n"
                          for i in range(6)))
    out = tmp_path / "k"
    assert main(["analyze", "knowledge", str(chat_model_dir), "--qa", str(qa), "--output", str(out),
                 "--exemplar_sets", "2", "--shots", "2", "--samples", "2"]) == 0
    rows = [json.loads(line) for line in (out / "knowledge.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["category"] in knowledge.CATEGORIES and len(r["greedy_answers"]) == 2
                                  for r in rows)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q"}) + "\n")
    assert main(["analyze", "knowledge", str(chat_model_dir), "--qa", str(bad)]) == 2
