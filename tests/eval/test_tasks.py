"""Task files: canonical JSONL, YAML with field maps, and one-line errors for bad records."""

import json

import pytest

from lmforge.cli import main
from lmforge.errors import InputError
from lmforge.eval.generative import answer_matches, extract
from lmforge.eval.tasks import load_task


def _jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_canonical_jsonl_is_a_task_and_its_kind_is_inferred(tmp_path):
    mc = load_task(str(_jsonl(tmp_path / "mc.jsonl", [{"context": "2+2=", "choices": ["4", "5"], "gold": 0}])))
    gen = load_task(str(_jsonl(tmp_path / "gen.jsonl", [{"prompt": "2+2?", "answer": 4}, "",
                                                        {"prompt": "3+3?", "answer": "6"}])))
    (tmp_path / "val.txt").write_text("some text")
    assert (mc.kind, mc.name, len(mc.examples)) == ("multiple_choice", "mc", 1)
    assert (gen.kind, [e["answer"] for e in gen.examples]) == ("generative", [4, "6"])
    assert load_task(str(tmp_path / "val.txt")).kind == "bpb"


def test_yaml_maps_fields_and_sets_options(tmp_path):
    _jsonl(tmp_path / "capitals.jsonl", [{"q": "France?", "city": "Paris"}, {"q": "Peru?", "city": "Lima"}])
    (tmp_path / "capitals.yaml").write_text(
        "data: capitals.jsonl\nfields: {prompt: q, answer: city}\ntemplate: 'Capital of {prompt}'\n"
        "few_shot: 1\nextract: first_line\nmatch: exact\nmax_new_tokens: 8\n")
    task = load_task(str(tmp_path / "capitals.yaml"))
    assert (task.name, task.kind, task.extract, task.match, task.few_shot) == (
        "capitals", "generative", "first_line", "exact", 1)
    assert task.examples[1]["prompt"] == "Peru?" and task.examples[1]["answer"] == "Lima"
    (tmp_path / "bad.yaml").write_text("data: capitals.jsonl\nfew_shots: 2\n")
    with pytest.raises(InputError, match=r"bad.yaml: unknown task field\(s\) \['few_shots'\]"):
        load_task(str(tmp_path / "bad.yaml"))


@pytest.mark.parametrize("record, message", [
    ({"context": "x", "gold": 0}, "neither multiple-choice"),  # line 2 lacks choices: see below
    ({"context": "x", "choices": [], "gold": 0}, "field 'choices' must be a non-empty list"),
    ({"context": "x", "choices": ["a", "b"], "gold": 2}, "field 'gold' is 2, outside 0..1"),
    ({"context": "x", "choices": ["a", "b"], "gold": "0"}, "field 'gold' must be an integer"),
    ({"context": 3, "choices": ["a"], "gold": 0}, "field 'context' must be a string"),
    ({"context": "x", "choices": ["a", 7], "gold": 0}, "field 'choices' must hold non-empty strings"),
    ("{not json", "not valid JSON"),
])
def test_bad_records_name_file_line_and_field(tmp_path, record, message):
    good = {"context": "ok", "choices": ["a", "b"], "gold": 1}
    path = _jsonl(tmp_path / "t.jsonl", [good, record] if message != "neither multiple-choice" else [record])
    line = 1 if message == "neither multiple-choice" else 2
    with pytest.raises(InputError) as e:
        load_task(str(path))
    assert str(e.value).startswith(f"{path}:{line}: ") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_cli_reports_a_bad_task_in_one_line_before_loading_a_model(tmp_path, capsys):
    path = _jsonl(tmp_path / "t.jsonl", [{"prompt": 5, "answer": 1}])
    assert main(["eval", "no/such-model-needed", "--task", str(path), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{path}:1:" in err[0]


@pytest.mark.parametrize("text, how, expected", [
    ("so it is 1,234.", "number", "1234"),
    ("it is 106475279601", "number", "106475279601"),
    ("about 0.1 of it", "number", "0.1"),
    ("The answer: \\boxed{\\frac{1}{2}} done", "boxed", "\\frac{1}{2}"),
    ("5 + 3 = 8\n#### 8", "gsm8k", "8"),
    ("I pick (B) because", "letter", "B"),
    ("Paris\nis the capital", "first_line", "Paris"),
    ("answer=42;", "regex:answer=(\\d+)", "42"),
    ("no number here", "number", None),
])
def test_answer_extraction(text, how, expected):
    assert extract(text, how) == expected


def test_answer_matching():
    assert answer_matches("8", 8, "numeric") and answer_matches("8.0", "8", "numeric")
    assert not answer_matches("9", 8, "numeric") and not answer_matches(None, 8, "numeric")
    assert answer_matches(" Paris.", "paris", "exact") and not answer_matches("Paris, France", "Paris", "exact")
