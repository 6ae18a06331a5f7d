"""The loop's loss-spike guard: an injected spike is skipped, or answered by a rollback to
the last checkpoint with a lower learning rate; a clean run sees none; resume stays exact."""

import pytest
import torch

from lmforge.train.loop import Periodic
from lmforge.train.metrics import read_metrics
from lmforge.train.objectives.lm import lm_objective
from lmforge.train.spikes import SpikeDetector
from tests.conftest import ToyBatches
from tests.train.test_loop import _run, _setup

SPIKY = dict(spike_threshold_std=3.0, spike_window_steps=10, save_every_steps=5)


class BadBatchAt(ToyBatches):
    """ToyBatches whose batch at `position` has random labels: a loss spike in the data."""

    def __init__(self, position: int):
        super().__init__()
        self.bad = position

    def __next__(self):
        bad = self.position == self.bad
        batch = super().__next__()
        if bad:
            g = torch.Generator().manual_seed(7)
            batch["labels"] = torch.randint(0, self.vocab, batch["labels"].shape, generator=g)
        return batch


def spike_on_call(objective, call: int, factor: float = 20.0):
    """The objective, its loss multiplied on one call only: a transient spike (not in the data)."""
    calls = [0]

    def spiky(model, batch):
        calls[0] += 1
        loss, metrics = objective(model, batch)
        return (loss * factor if calls[0] == call else loss), metrics
    return spiky


def spike_rows(run_dir):
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if any(k.startswith("spike/") for k in r)]


def test_detector_waits_for_its_window_and_floors_the_std():
    d = SpikeDetector(threshold_std=3.0, window_steps=4)
    for x in (2.0, 2.0, 2.0):
        assert not d.is_spike(100.0)  # warm-up: nothing judged
        d.accept(x)
    d.accept(2.0)
    assert d.threshold() == pytest.approx(2.0 + 3 * 0.02)  # flat window: std floored at 1% of the mean
    assert d.is_spike(2.1) and not d.is_spike(2.05) and not d.is_spike(float("nan"))


def test_a_clean_run_has_no_spikes_at_the_default_threshold(tmp_path):
    result = _run(_setup(tmp_path, steps=40, spike_action="skip", spike_window_steps=10), ToyBatches())
    assert result.skipped_steps == 0 and not spike_rows(tmp_path)


def test_a_spike_in_the_data_is_skipped_and_logged(tmp_path, capsys):
    result = _run(_setup(tmp_path, steps=30, spike_action="skip", **SPIKY), BadBatchAt(20))
    assert result.skipped_steps == 1 and result.rollbacks == 0
    [row] = spike_rows(tmp_path)
    assert row["step"] == 21 and row["spike/skipped"] == 1 and row["spike/loss"] > row["spike/threshold"]
    assert "step 20: loss spike" in capsys.readouterr().out
    # without the guard the same run takes the bad update
    off = _run(_setup(tmp_path / "off", steps=30, **SPIKY), BadBatchAt(20))
    assert off.skipped_steps == 0 and off.losses[:20] == result.losses[:20] and off.losses[21:] != result.losses[21:]


def test_a_transient_spike_rolls_back_to_the_checkpoint_with_a_lower_lr(tmp_path, capsys):
    parts = _setup(tmp_path, steps=30, spike_action="rollback", spike_lr_factor=0.5, **SPIKY)
    result = _run(parts, ToyBatches(), objective=spike_on_call(lm_objective, call=18))  # step 17
    assert result.rollbacks == 1 and result.skipped_steps == 0 and result.lr_scale == 0.5
    assert result.step == 30 and len(result.losses) == 30  # one loss per step of the final trajectory
    [row] = spike_rows(tmp_path)
    assert row["step"] == 18 and row["spike/rolled_back_to_step"] == 15 and row["spike/lr_scale"] == 0.5
    assert "rolled back to step 15, learning rate × 0.5" in capsys.readouterr().out
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "train/lr" in r]
    replayed = [r for r in rows if r["step"] == 16]
    assert len(replayed) == 2 and replayed[1]["train/lr"] == pytest.approx(replayed[0]["train/lr"] * 0.5)
    assert replayed[1]["train/loss"] == replayed[0]["train/loss"]  # same weights and data at the checkpoint


def test_a_bad_batch_that_spikes_again_after_its_rollback_is_skipped(tmp_path):
    result = _run(_setup(tmp_path, steps=30, spike_action="rollback", **SPIKY), BadBatchAt(20))
    assert result.rollbacks == 1 and result.skipped_steps == 1 and result.step == 30
    assert [("spike/rolled_back_to_step" in r, r["step"]) for r in spike_rows(tmp_path)] == [(True, 21), (False, 21)]


def test_resume_with_the_guard_on_is_bit_identical(tmp_path):
    straight = _run(_setup(tmp_path / "a", steps=30, spike_action="rollback", **SPIKY), BadBatchAt(20))

    class Crash(Exception):
        pass

    def crash_at_27(step):
        if step == 27:
            raise Crash
        return {}

    with pytest.raises(Crash):
        _run(_setup(tmp_path / "b", steps=30, spike_action="rollback", **SPIKY), BadBatchAt(20),
             evaluators=[Periodic(1, crash_at_27)])
    resumed = _run(_setup(tmp_path / "b", seed=5, steps=30, spike_action="rollback", **SPIKY), BadBatchAt(20),
                   resume=True)
    assert resumed.losses == straight.losses[25:]
    assert (resumed.rollbacks, resumed.skipped_steps, resumed.lr_scale) == (1, 1, 0.5)


def test_rollback_without_a_checkpoint_yet_skips_the_update(tmp_path, capsys):
    result = _run(_setup(tmp_path, steps=24, spike_action="rollback", **{**SPIKY, "save_every_steps": 0}),
                  BadBatchAt(20))
    assert (result.rollbacks, result.skipped_steps, result.lr_scale) == (0, 1, 1.0)
    assert "step 20: loss spike" in capsys.readouterr().out
