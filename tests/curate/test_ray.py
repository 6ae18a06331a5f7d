import json

import pytest

from lmforge.curate.pipeline import run_pipeline
from lmforge.stages.curate import CurateConfig, ExtractConfig, FiltersConfig, FineWebConfig

from .test_distributed_dedup import planted
from .test_near_dup import chapters  # noqa: F401  (a fixture)
from .test_pipeline import small_warc

ray = pytest.importorskip("ray")


@pytest.mark.slow
def test_ray_and_local_executors_give_identical_output(tmp_path, chapters):  # noqa: F811
    """Ray runs the per-document work and dedup as tasks (distributed_dedup.py); the kept
    documents are the local run's, planted copies of every kind included."""
    warc = small_warc(tmp_path / "small.warc.gz", n=30)
    copies = tmp_path / "copies.jsonl"
    copies.write_text("".join(json.dumps({"text": t}) + "\n" for t in planted(chapters)))
    one_line_ok = FiltersConfig(fineweb=FineWebConfig(enabled=False))  # the copies are one line each
    # no extraction deadline: on a loaded machine a page can pass 5 s in one run and not the other
    local = CurateConfig(input=[str(warc), str(copies)], output=str(tmp_path / "local"), workers=2,
                         batch_docs=4, report=False, unit_mb=0.1, filters=one_line_ok,
                         extract=ExtractConfig(timeout_s=600.0))
    run_pipeline(local)
    # Ray 2.5x removed `local_mode`; a single-node Ray started in-process is the local mode now
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = CurateConfig(input=[str(warc), str(copies)], output=str(tmp_path / "ray"), executor="ray",
                              workers=2, batch_docs=4, report=False, unit_mb=0.1, filters=one_line_ok,
                              extract=ExtractConfig(timeout_s=600.0))
        stats = run_pipeline(remote)
        local_stats = json.loads((tmp_path / "local" / "stats.json").read_text())
    finally:
        ray.shutdown()
    expected = (tmp_path / "local" / "part-00000.jsonl").read_text()
    assert expected and (tmp_path / "ray" / "part-00000.jsonl").read_text() == expected
    assert stats["executor"] == "ray"
    assert stats["steps"]["dedup"] == local_stats["steps"]["dedup"]
    assert stats["steps"]["dedup"]["dropped"]["near_duplicate"] >= 5  # planted copies, not the same in both by luck
