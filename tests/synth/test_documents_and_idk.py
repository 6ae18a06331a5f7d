"""`data idk` (refusal targets for Unknown questions), `data augment` (each document k ways)
and `data textbook` (passages per topic) write what `sft` and `tokenize` read."""

import json

import pytest

from lmforge.cli import main
from lmforge.data.chat import read_conversations
from lmforge.data.documents import read_documents
from lmforge.synth.augment import reorderings


def data(*args):
    return main(["data", *map(str, args)])


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_idk_replaces_the_targets_of_unknown_questions_with_a_refusal(tmp_path, capsys):
    knowledge = tmp_path / "knowledge.jsonl"
    labels = ["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown", "Unknown"]
    knowledge.write_text("".join(json.dumps({"question": f"Q{i}?", "answer": [f"A{i}", "alias"], "category": c,
                                             "p_greedy": 0.0}) + "\n" for i, c in enumerate(labels)))
    out = tmp_path / "idk.jsonl"
    assert data("idk", "--knowledge", knowledge, "--drop", "WeaklyKnown", "--output", out) == 0
    targets = {c[0]["content"]: c[-1]["content"] for c in read_conversations(out)}
    assert targets == {"Q0?": "A0", "Q1?": "A1", "Q3?": "I don't know.", "Q4?": "I don't know."}
    manifest = json.loads((tmp_path / "idk.jsonl.manifest.json").read_text())
    assert manifest["counts"]["refusals"] == 2 and manifest["counts"]["dropped"] == {"WeaklyKnown": 1}
    assert data("idk", "--knowledge", knowledge, "--abstain_on", "Unknwn", "--output", out) == 2
    assert "unknown knowledge category 'Unknwn'" in capsys.readouterr().err


def test_reorderings_are_distinct_and_keep_every_sentence():
    text = "Ann was born in Oslo. She studied law. She works at a bank. She likes chess."
    variants = reorderings(text, 4, "0")
    assert len(set(variants)) == 4 and text not in variants
    assert all(sorted(v.rstrip(".").split(". ")) == sorted(text.rstrip(".").split(". ")) for v in variants)
    assert reorderings(text, 4, "0") == variants and reorderings("One sentence only.", 3, "0") == []


def test_augment_by_reordering_and_by_a_teacher_endpoint(endpoint, tmp_path):
    url, script = endpoint
    docs = tmp_path / "bios.jsonl"
    docs.write_text(json.dumps({"id": "ann", "text": "Ann was born in Oslo. She studied law. She likes chess."}) + "\n"
                    + json.dumps({"id": "bob", "text": "Bob is a baker."}) + "\n")
    out = tmp_path / "aug.jsonl"
    assert data("augment", "--input", docs, "--k", 2, "--output", out, "--progress", "false") == 0
    rows = jsonl(out)
    assert [r["id"] for r in rows] == ["ann#0", "ann#1", "ann#2", "bob#0"]
    assert json.loads((tmp_path / "aug.jsonl.manifest.json").read_text())["counts"]["dropped"] == {
        "too_few_sentences": 2}
    assert [d["text"] for d in read_documents([out])] == [r["text"] for r in rows]  # what `tokenize` reads

    para = tmp_path / "para.jsonl"
    assert data("augment", "--input", docs, "--k", 2, "--method", "teacher", "--teacher", "t", "--url", url,
                "--keep_original", "false", "--output", para, "--progress", "false") == 0
    assert len(script["requests"]) == 4 and "keeping every fact" in script["requests"][0]["messages"][0]["content"]
    assert {r["source"] for r in jsonl(para)} == {"ann", "bob"} and len(jsonl(para)) == 4


@pytest.mark.parametrize("local", [True, False])
def test_textbook_passages_per_topic(chat_model_dir, endpoint, tmp_path, local):
    url, script = endpoint
    topics = tmp_path / "topics.txt"
    topics.write_text("fractions\n\nphotosynthesis\n")
    out = tmp_path / "books.jsonl"
    teacher = ["--teacher", chat_model_dir] if local else ["--teacher", "t", "--url", url]
    assert data("textbook", *teacher, "--topics", topics, "--min_chars", 10, "--max_new_tokens", 24,
                "--samples", 2, "--output", out, "--progress", "false") == 0
    rows = jsonl(out)
    counts = json.loads((tmp_path / "books.jsonl.manifest.json").read_text())["counts"]
    assert counts["rows"] == len(rows) and len(rows) + sum(counts["dropped"].values()) == 4
    assert {r["topic"] for r in rows} <= {"fractions", "photosynthesis"}
    if not local:
        assert len(rows) == 4 and any('textbook on "fractions"' in r["messages"][0]["content"]
                                      for r in script["requests"])
