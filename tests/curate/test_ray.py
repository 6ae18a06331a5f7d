import pytest

from lmforge.curate.pipeline import run_pipeline
from lmforge.stages.curate import CurateConfig, ExtractConfig

from .test_pipeline import small_warc

ray = pytest.importorskip("ray")


@pytest.mark.slow
def test_ray_and_local_executors_give_identical_output(tmp_path, monkeypatch):
    warc = small_warc(tmp_path / "small.warc.gz", n=30)
    # no extraction deadline: on a loaded machine a page can pass 5 s in one run and not the other
    local = CurateConfig(input=[str(warc)], output=str(tmp_path / "local"), workers=2,
                         batch_docs=4, report=False,
                         extract=ExtractConfig(timeout_s=600.0))
    run_pipeline(local)
    # Ray 2.5x removed `local_mode`; a single-node Ray started in-process is the local mode now
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = CurateConfig(input=[str(warc)], output=str(tmp_path / "ray"), executor="ray",
                              workers=2, batch_docs=4, report=False,
                              extract=ExtractConfig(timeout_s=600.0))
        stats = run_pipeline(remote)
    finally:
        ray.shutdown()
    expected = (tmp_path / "local" / "part-00000.jsonl").read_text()
    assert expected and (tmp_path / "ray" / "part-00000.jsonl").read_text() == expected
    assert stats["executor"] == "ray"
