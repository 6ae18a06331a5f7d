"""The curation report: report.md with a funnel table and drop reasons, and funnel.png.

    write_curation_report(out_dir, cfg, stats)
"""

from __future__ import annotations

from pathlib import Path

from lmforge.report import record_run, write_report


def write_curation_report(out: Path, cfg, stats: dict) -> Path:
    record_run(out, cfg, data_files=[Path(p) for p in stats["inputs"]])
    funnel = funnel_rows(stats)
    lines = [f"{stats['documents_read']} documents read, {stats['documents_kept']} kept, "
             f"in {stats['seconds']} s ({stats['documents_per_second']} documents/s, "
             f"executor {stats['executor']}).", "",
             "| step | in | kept | dropped (reason: count) |", "|---|---:|---:|---|"]
    for name, step in stats["steps"].items():
        reasons = ", ".join(f"{r}: {n}" for r, n in step["dropped"].items()) or "-"
        lines.append(f"| {name} | {step['in']} | {step['kept']} | {reasons} |")
    skipped = {k: v for k, v in stats["read"].items() if not k.startswith(("warc.", "html.",
                                                                          "jsonl.", "parquet."))}
    if skipped:
        lines += ["", "Reading: " + ", ".join(f"{k} {v}" for k, v in skipped.items()) + "."]
    for error in stats["read_errors"][:20]:
        lines.append(f"- read error: {error}")
    hist = stats["dedup_clusters"]["size_histogram"]
    lines += ["", f"Duplicate clusters: {stats['dedup_clusters']['count']} "
              f"(size: count {hist or '-'}), largest {stats['dedup_clusters']['largest']}.",
              "", "Shards: " + (", ".join(stats["shards"]) or "none") + "."]
    return write_report(out, "Curation", lines, plots={"funnel.png": _draw_funnel(funnel)})


def funnel_rows(stats: dict) -> list[tuple[str, int]]:
    """(label, documents remaining) from reading through the last step."""
    rows = [("read", stats["documents_read"])]
    rows += [(name, step["kept"]) for name, step in stats["steps"].items()]
    return rows


def _draw_funnel(rows: list[tuple[str, int]]):
    def draw(ax):
        labels = [r[0] for r in rows][::-1]
        values = [r[1] for r in rows][::-1]
        bars = ax.barh(labels, values, color="#4C72B0")
        for bar, v in zip(bars, values):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v}", va="center",
                    fontsize=8)
        ax.set_xlabel("documents remaining")
        ax.set_title("curation funnel")
    return draw
