"""`lmforge experiment paraphrase-knowledge --quick` end to end: both arms have the same
number of biography documents, one fixed wording vs rewordings, and the tested people's
questions are never trained on."""

import json

import pytest

from lmforge.cli import main
from lmforge.experiments.paraphrase import biographies, make_people


def test_arms_differ_only_in_wording():
    people = make_people(10)
    once, rewritten = biographies(people, 5, rewritten=False), biographies(people, 5, rewritten=True)
    assert len(once) == len(rewritten) == 50
    assert len({d["text"] for d in once}) == 10 and len({d["text"] for d in rewritten}) > 40


@pytest.mark.slow
def test_paraphrase_knowledge_quick(tmp_path):
    out = tmp_path / "experiments" / "paraphrase-knowledge"
    assert main(["experiment", "paraphrase-knowledge", "--quick", "--output", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    qa = (out / "data" / "qa.jsonl").read_text()
    tested = make_people(60)[30:]
    assert not any(p["name"] in qa for p in tested)  # never asked about in fine-tuning
    for arm in ("once", "rewritten"):
        assert 0.0 <= results["per_arm"][arm]["tested"]["all"][0] <= 1.0
    assert "no verdict" in (out / "report.md").read_text()
