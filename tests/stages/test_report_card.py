"""`lmforge report RUN_ROOT` gathers stage reports, eval results and token shift."""

import json
import re

from lmforge.cli import main
from lmforge.report import write_report


def test_report_card_gathers_stages_in_pipeline_order(tmp_path):
    root = tmp_path / "run"
    draw = lambda ax: ax.plot([0, 1], [1, 0])  # noqa: E731
    for stage, line in [("grpo", "- held-out accuracy 0.1 -> 0.2"), ("pretrain", "- val bpb 2.1"),
                        ("curated", "- kept 95 of 216")]:
        (root / stage).mkdir(parents=True)
        write_report(root / stage, f"{stage} report", [line], {f"{stage}.png": draw})
    for stage, acc in [("sft", 0.25), ("grpo", 0.5)]:
        (root / "eval" / stage).mkdir(parents=True)
        (root / "eval" / stage / "results.json").write_text(json.dumps({"tasks": {
            "compare": {"kind": "generative", "exact_match": acc, "exact_match_stderr": 0.05, "n": 96,
                        "seconds": 1.0}}}))
    (root / "token_shift" / "sft").mkdir(parents=True)
    (root / "token_shift" / "sft" / "token_shift.json").write_text(json.dumps(
        {"tokens": 40, "unshifted_share": 0.75, "marginal_share": 0.15, "shifted_share": 0.1,
         "top_shifted_tokens": [["The", 3]]}))
    assert main(["report", str(root)]) == 0
    text = (root / "report.md").read_text()
    sections = re.findall(r"^## (.+)$", text, re.M)
    assert sections == ["Contents", "curated", "pretrain", "grpo", "Evaluation across stages", "Token shift"]
    assert "| sft | 0.250 ± 0.050 |" in text and "| grpo | 0.500 ± 0.050 |" in text
    assert "| sft | 40 | 75.0% | 15.0% | 10.0% |" in text
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (root / link).parent.is_dir()  # figure links resolve from the run root
    assert "(pretrain/pretrain.png)" in text and "### " not in text.split("## curated")[0]
    assert main(["report", str(tmp_path / "missing")]) == 2
