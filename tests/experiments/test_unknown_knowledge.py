"""`lmforge experiment unknown-knowledge --quick` end to end: facts never stated in
pretraining never appear there, every question is labelled, the fine-tuning sets differ
only in their Unknown share, the held-out questions are in none of them, and the IDK arm's
Unknown targets are the refusal."""

import json

import pytest

from lmforge.cli import main
from lmforge.eval.knowledge import CATEGORIES
from lmforge.experiments.unknown_knowledge import fact_documents, is_refusal, make_world


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_unstated_facts_are_never_written():
    people, facts = make_world(40, 0.6)
    assert len(facts) == 160 and 0.45 < sum(f["stated"] for f in facts) / 160 < 0.75
    docs = fact_documents(people, facts, [1, 3])
    text = "\n".join(d["text"] for d in docs)
    for f in facts:
        assert (f"Q: {f['question']}\nA: {f['answer']}" in text) == f["stated"]
    assert make_world(40, 0.6) == (people, facts) and fact_documents(people, facts, [1, 3]) == docs  # no seed in it
    assert is_refusal("I don't know.") and is_refusal("i dont know") and not is_refusal("Lisbon")


@pytest.mark.slow
def test_unknown_knowledge_quick(tmp_path):
    out = tmp_path / "experiments" / "unknown-knowledge"
    assert main(["experiment", "unknown-knowledge", "--quick", "--output", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    run = results["runs"][0]
    assert sum(run["categories"].values()) == 60 * 4  # every question labelled once
    labelled = _read(out / "seed0" / "knowledge" / "knowledge.jsonl")
    assert {r["category"] for r in labelled} <= set(CATEGORIES) and len(labelled) == 240

    def questions(arm, unknown: bool | None = None):
        rows = _read(out / "seed0" / arm / "knowledge.jsonl")
        return [r["question"] for r in rows if unknown is None or (r["category"] == "Unknown") == unknown]

    assert [len(questions(a, True)) for a in ("unknown0", "unknown25", "unknown50", "unknown75")] == [0, 6, 12, 18]
    assert set(questions("unknown25", True)) < set(questions("unknown50", True))  # nested: only the share differs
    assert questions("idk") == questions("unknown50")
    chats = {a: [c["messages"][-1]["content"].strip() for c in _read(out / "seed0" / a / "sft.jsonl")]
             for a in ("unknown50", "idk")}
    assert chats["idk"].count("I don't know.") == 12 and "I don't know." not in chats["unknown50"]
    trained = {q for a in ("unknown0", "unknown75") for q in questions(a)}
    for group in ("known", "weakly", "unknown"):
        task = out / "seed0" / "idk" / "tasks" / f"test_{group}.jsonl"
        if task.exists():
            assert not {r["prompt"] for r in _read(task)} & trained  # held out of every fine-tuning set
    for arm, held in run["arms"].items():
        for group, v in held["held_out"].items():
            assert all(0.0 <= v[k] <= 1.0 for k in ("right", "abstained", "wrong"))
            assert v["right"] + v["abstained"] + v["wrong"] == pytest.approx(1.0)
        steps = [s for s, _ in held["curves"]["fit_known"]]
        assert steps == [10, 20, 30]  # the fit, every eval_every_steps
    report = (out / "report.md").read_text()
    assert "**held-out accuracy**" in report and "**IDK, wrong answers**" in report and "no verdict" in report
    assert (out / "held_out.png").stat().st_size > 0 and (out / "fit.png").stat().st_size > 0
