"""`lmforge report RUN_ROOT`: one report card for every stage found under a run root.

    lmforge report runs/demo          # -> runs/demo/report.md

Stages are found by their own report.md (curation funnel, tokenizer compression, base model
loss and bits per byte, SFT / DPO / GRPO curves); each is included in pipeline order, its
figures linked where they are. Then two tables that compare stages: `lmforge eval` results
under RUN_ROOT/eval/<stage>/results.json (the same tasks on each stage's model), and
token-shift results under RUN_ROOT/token_shift/<stage>/token_shift.json (each aligned model
against the base), with their figures. Last, any `lmforge experiment` report under
RUN_ROOT/experiments/<name>/.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import InputError

PIPELINE_ORDER = ("curated", "tokenizer", "shards", "pretrain", "sft", "rm", "ppo", "dpo", "kto", "spin", "grpo")


@dataclass
class ReportConfig:
    run_root: str = ""  # a directory holding stage run directories (e.g. runs/demo)


def report_card(cfg: ReportConfig) -> Path:
    root = Path(cfg.run_root)
    if not root.is_dir():
        raise InputError("not a run directory", cfg.run_root)
    stages = _stage_dirs(root)
    lines = [f"# lmforge report card: {root}", "",
             "Every stage found under this run root, in pipeline order, then tables that compare them.", ""]
    evals = _eval_table(root / "eval", [s.name for s in stages])
    shifts = _shift_table(root / "token_shift")
    experiments = sorted(d for d in (root / "experiments").glob("*") if (d / "report.md").is_file())
    lines += ["## Contents", ""] + [f"- [{s.name}](#{s.name})" for s in stages]
    lines += ["- [evaluation across stages](#evaluation-across-stages)"] if evals else []
    lines += ["- [token shift](#token-shift)"] if shifts else []
    lines += [f"- [experiment {e.name}](#experiment-{e.name})" for e in experiments]
    for stage in stages:
        lines += ["", f"## {stage.name}", ""] + _embed(stage / "report.md", stage.name)
    if evals:
        lines += ["", "## Evaluation across stages", "",
                  "`lmforge eval` on each stage's model, the same tasks (`eval/<stage>/results.json`).", ""] + evals
    if shifts:
        lines += ["", "## Token shift", "",
                  "Greedy answers of each aligned model, ranked by the base model (URIAL): unshifted = the "
                  "base's own first choice, marginal = its 2nd/3rd, shifted = anything else.", ""] + shifts
    for experiment in experiments:
        lines += ["", f"## Experiment {experiment.name}", ""] + _embed(experiment / "report.md",
                                                                        f"experiments/{experiment.name}")
    if not stages and not evals and not shifts and not experiments:
        raise InputError("no stage reports, eval/, token_shift/ or experiments/ results found", cfg.run_root)
    out = root / "report.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"report card: {out} ({len(stages)} stages)")
    return out


def _stage_dirs(root: Path) -> list[Path]:
    found = [d for d in root.iterdir() if (d / "report.md").is_file()]
    rank = {name: i for i, name in enumerate(PIPELINE_ORDER)}
    return sorted(found, key=lambda d: (rank.get(d.name, len(rank)), d.name))


def _embed(report: Path, prefix: str) -> list[str]:
    """A stage report's lines with headings one level down and figure links made relative
    to the run root."""
    lines = report.read_text(encoding="utf-8").splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    lines = [("#" + line) if line.startswith("#") else line for line in lines]
    return [re.sub(r"\]\((?!https?:|/)([^)]+\.(?:png|svg))\)", rf"]({prefix}/\1)", line) for line in lines]


def _eval_table(eval_root: Path, stage_order: list[str]) -> list[str]:
    results = {d.name: json.loads((d / "results.json").read_text())
               for d in sorted(eval_root.iterdir()) if (d / "results.json").is_file()} if eval_root.is_dir() else {}
    if not results:
        return []
    rank = {name: i for i, name in enumerate(list(PIPELINE_ORDER) + stage_order)}
    names = sorted(results, key=lambda n: (rank.get(n, len(rank)), n))
    columns = []  # (task, metric) pairs, in first-seen order
    for name in names:
        for task, metrics in results[name]["tasks"].items():
            for metric in _headline(metrics):
                if (task, metric) not in columns:
                    columns.append((task, metric))
    rows = ["| stage | " + " | ".join(f"{t} {m}" for t, m in columns) + " |",
            "|---|" + "---:|" * len(columns)]
    for name in names:
        cells = []
        for task, metric in columns:
            m = results[name]["tasks"].get(task, {})
            value, err = m.get(metric), m.get(f"{metric}_stderr")
            cells.append("—" if value is None else f"{value:.3f}" + (f" ± {err:.3f}" if err is not None else ""))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    n = {t: m.get("n") for r in results.values() for t, m in r["tasks"].items()}
    return rows + ["", "Examples per task: " + ", ".join(f"{t} {k}" for t, k in n.items()) + "; ± is the standard error."]


def _headline(metrics: dict) -> list[str]:
    """The metrics worth a column: accuracies, rates and bits per byte, not counts or times."""
    keep = ("acc", "acc_norm", "exact_match", "bits_per_byte", "win_rate")
    return [k for k in metrics if k in keep or k.startswith("pass@")]


def _shift_table(shift_root: Path) -> list[str]:
    found = sorted(d for d in shift_root.iterdir() if (d / "token_shift.json").is_file()) if shift_root.is_dir() else []
    if not found:
        return []
    rank = {name: i for i, name in enumerate(PIPELINE_ORDER)}
    found.sort(key=lambda d: (rank.get(d.name, len(rank)), d.name))
    lines = ["| aligned model | tokens | unshifted | marginal | shifted | most frequent shifted tokens |",
             "|---|---:|---:|---:|---:|---|"]
    for d in found:
        s = json.loads((d / "token_shift.json").read_text())
        top = ", ".join(f"`{t!r}` ×{n}" for t, n in s["top_shifted_tokens"][:5])
        lines.append(f"| {d.name} | {s['tokens']} | {s['unshifted_share']:.1%} | {s['marginal_share']:.1%} | "
                     f"{s['shifted_share']:.1%} | {top} |")
    lines.append("")
    lines += [f"![token shift, {d.name}](token_shift/{d.name}/token_shift.png)" for d in found
              if (d / "token_shift.png").is_file()]
    return lines
