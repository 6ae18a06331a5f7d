"""A curation run killed with SIGKILL and started again with the same output skips the
work units it had committed and ends with exactly the output of an uninterrupted run,
global dedup included (duplicates span units here)."""

import json
import subprocess
import sys
from pathlib import Path

from lmforge.cli import main
from lmforge.curate.readers import ReadLog, read_inputs

from .webdata import SAMPLE_WARC, write_warc

RUNNER = Path(__file__).parents[1] / "stages" / "crash_runner.py"
ROOT = Path(__file__).parents[2]


def three_warcs(tmp: Path) -> list[str]:
    """Pages 0-39, 40-79, 80-119 of the bundled sample; the third also repeats pages 0-9, so
    dedup must drop documents of one unit for copies in another."""
    records = [("response", d.url, d.html, "text/html; charset=utf-8")
               for _, d in zip(range(120), read_inputs([SAMPLE_WARC], ReadLog()))]
    parts = [records[:40], records[40:80], records[80:120] + records[:10]]
    return [str(write_warc(tmp / f"crawl-{i}.warc.gz", part)) for i, part in enumerate(parts)]


def curate_args(inputs: list[str], out: Path, *extra: str) -> list[str]:
    # unit_mb 0: every file is its own unit
    return ["curate", "configs/curate.yaml", "--input", *inputs, "--output", str(out), "--unit_mb", "0",
            "--workers", "1", "--report", "false", *extra]


def outputs(out: Path) -> dict:
    stats = json.loads((out / "stats.json").read_text())
    for key in ("seconds", "documents_per_second", "resumed_units"):
        stats.pop(key)
    return {"shards": {p.name: p.read_bytes() for p in sorted(out.glob("part-*"))}, "stats": stats}


def test_killed_run_resumes_to_the_uninterrupted_output(tmp_path):
    inputs = three_warcs(tmp_path)
    assert main(curate_args(inputs, tmp_path / "straight")) == 0
    straight = outputs(tmp_path / "straight")
    assert straight["stats"]["steps"]["dedup"]["dropped"], "the inputs must hold duplicates"

    killed = tmp_path / "killed"
    run = subprocess.run([sys.executable, str(RUNNER), "unit=2", "--", *curate_args(inputs, killed)],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == -9, run.stderr
    work = killed / "_work"
    assert (work / "unit-00000.done.json").exists() and not (work / "unit-00001.done.json").exists()
    assert (work / "unit-00001.jsonl").exists()  # committed up to its marker: still not done
    assert not list(killed.glob("part-*")) and not (killed / "stats.json").exists()

    assert main(curate_args(inputs, killed)) == 0
    assert json.loads((killed / "stats.json").read_text())["resumed_units"] == 1
    assert outputs(killed) == straight
    assert not work.exists()  # the work dir goes once the output is complete


def test_work_of_another_config_is_discarded_not_mixed_in(tmp_path, capsys):
    inputs = three_warcs(tmp_path)
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(RUNNER), "unit=3", "--", *curate_args(inputs, out)],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == -9, run.stderr
    other = ("--filters.length.min_chars", "2000")
    assert main(curate_args(inputs, out, *other)) == 0
    assert "starting over" in capsys.readouterr().out
    assert json.loads((out / "stats.json").read_text())["resumed_units"] == 0
    assert main(curate_args(inputs, tmp_path / "fresh", *other)) == 0
    assert outputs(out) == outputs(tmp_path / "fresh")
