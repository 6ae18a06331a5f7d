"""The resumable writer: a job killed after k batches and restarted writes exactly the rows of
an uninterrupted run, none twice; a half-written batch is cut off; other settings refuse to
resume into the same file."""

import json
from collections import Counter
from dataclasses import dataclass

import pytest

from lmforge.errors import InputError
from lmforge.synth.stage import Manifest, Prompt, write_resumable


@dataclass
class Settings:
    prompts: str = "inline"
    samples: int = 2
    output: str = ""


class Killed(Exception):
    pass


def prompts(n=10):
    return [Prompt(i, [{"role": "user", "content": f"q{i}"}], {}) for i in range(n)]


def make_rows(calls: list, kill_after: int | None = None):
    """Two rows per prompt, one dropped for every third prompt; raises after `kill_after` batches."""
    def rows_for(batch_no, batch):
        if kill_after is not None and len(calls) == kill_after:
            raise Killed
        calls.append([p.index for p in batch])
        rows = [{"messages": [*p.messages, {"role": "assistant", "content": f"a{p.index}.{s}"}]}
                for p in batch for s in range(2) if p.index % 3 or s == 0]
        return rows, Counter({"verifier:math": sum(p.index % 3 == 0 for p in batch)})
    return rows_for


def run(out, rows_for, cfg=None, **kw):
    return write_resumable(out, prompts(), rows_for, 3, Manifest("data test", cfg or Settings(), [], {"gen": "m"}),
                           progress=False, **kw)


def lines(path):
    return path.read_text().splitlines()


def test_killed_and_restarted_gives_the_rows_of_an_uninterrupted_run(tmp_path):
    whole = tmp_path / "whole.jsonl"
    expected = run(whole, make_rows([]))
    assert expected == {"prompts": 10, "prompts_done": 10, "rows": 16, "dropped": {"verifier:math": 4}}

    out, calls = tmp_path / "out.jsonl", []
    with pytest.raises(Killed):
        run(out, make_rows(calls, kill_after=2))
    assert calls == [[0, 1, 2], [3, 4, 5]] and len(lines(out)) == 10  # two batches flushed, kept
    manifest = json.loads((tmp_path / "out.jsonl.manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["counts"]["prompts_done"] == 6

    resumed_calls = []
    assert run(out, make_rows(resumed_calls)) == expected  # counts carry over the restart
    assert resumed_calls == [[6, 7, 8], [9]]  # only the prompts not done
    assert lines(out) == lines(whole) and len(set(lines(out))) == len(lines(out))
    manifest = json.loads((tmp_path / "out.jsonl.manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"] == expected
    assert manifest["generators"] == {"gen": "m"} and manifest["settings"]["samples"] == 2
    again = []
    assert run(out, make_rows(again)) == expected and again == []  # a finished job is a no-op


def test_a_batch_written_but_not_marked_is_cut_off_on_restart(tmp_path):
    out = tmp_path / "out.jsonl"
    with pytest.raises(Killed):
        run(out, make_rows([], kill_after=1))
    with open(out, "a") as f:  # the kill came after the rows of batch 2, before its mark ...
        f.write('{"messages": "half a batch"}\n{"messa')
    with open(str(out) + ".progress", "a") as f:  # ... or while the mark was being written
        f.write('{"keys": ["3:')
    run(out, make_rows([]))
    assert lines(out) == lines(_whole(tmp_path))


def _whole(tmp_path):
    whole = tmp_path / "whole.jsonl"
    run(whole, make_rows([]))
    return whole


def test_other_settings_or_a_foreign_file_are_not_resumed_into(tmp_path):
    out = tmp_path / "out.jsonl"
    with pytest.raises(Killed):
        run(out, make_rows([], kill_after=1))
    with pytest.raises(InputError, match="changed: samples"):
        run(out, make_rows([]), Settings(samples=3))
    assert run(out, make_rows([]), Settings(output="elsewhere"))["rows"] == 16  # output is not a setting
    run(out, make_rows([]), Settings(samples=3), overwrite=True)
    foreign = tmp_path / "mine.jsonl"
    foreign.write_text('{"messages": []}\n')
    with pytest.raises(InputError, match="not written by a resumable job"):
        run(foreign, make_rows([]))
