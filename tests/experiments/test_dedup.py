"""`lmforge experiment dedup --quick` end to end: the planted copies are what curation removes,
both corpora are trained on, and the report states the result."""

import json
import math

import pytest

from lmforge.cli import main


@pytest.mark.slow
def test_dedup_experiment_quick(tmp_path):
    out = tmp_path / "experiments" / "dedup"
    assert main(["experiment", "dedup", "--quick", "--output", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    planted = results["passages"]["planted_copies"]
    removed = results["curate"]["documents_read"] - results["curate"]["documents_kept"]
    assert planted == 10 * 30 and 0.95 * planted <= removed <= planted + 5  # the copies, (nearly) only them
    for condition in ("with duplicates", "deduplicated"):
        for metric in ("val_loss", "planted_loss"):  # (the gap is their difference)
            mean, _ = results["per_condition"][condition][metric]
            assert math.isfinite(mean) and 0 < mean < 10
    report = (out / "report.md").read_text()
    assert "**validation:**" in report and "**memorisation:**" in report and "no verdict" in report
    assert (out / "validation_loss.png").stat().st_size > 0
    assert main(["report", str(tmp_path)]) == 0  # the report card takes in experiments/ under a run root
    card = (tmp_path / "report.md").read_text()
    assert "## Experiment dedup" in card and "](experiments/dedup/validation_loss.png)" in card
