"""`lmforge experiment token-shift --quick` end to end: a base -> SFT -> DPO -> GRPO chain and a
second base, each ranked by the first base with `lmforge analyze token-shift`."""

import json
import math

import pytest

from lmforge.cli import main


@pytest.mark.slow
def test_token_shift_quick(tmp_path):
    out = tmp_path / "experiments" / "token-shift"
    assert main(["experiment", "token-shift", "--quick", "--output", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    for name in ("sft", "dpo", "grpo", "second base"):
        shares = [results["shares"][name][c][0] for c in ("unshifted", "marginal", "shifted")]
        assert math.isclose(sum(shares), 1.0, abs_tol=1e-9) and min(shares) >= 0
        assert (out / "seed0" / "token_shift" / name.replace(" ", "_") / "token_shift.jsonl").is_file()
        assert len(results["by_position"][name]) == 7
    run = results["runs"][0]
    assert run["second base"]["tokens"] > 0 and run["sft"]["tokens"] > 0
    report = (out / "report.md").read_text()
    assert "**SFT:**" in report and "**GRPO:**" in report and "no verdict" in report
    assert (out / "token_shift.png").stat().st_size > 0
    assert main(["report", str(tmp_path)]) == 0
    assert "## Experiment token-shift" in (tmp_path / "report.md").read_text()
