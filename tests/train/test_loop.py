import math

import pytest
import torch

from lmforge.model.transformer import Transformer
from lmforge.runtime import Runtime
from lmforge.stages.common import model_checkpointing
from lmforge.train.checkpoint import find_checkpoint
from lmforge.train.loop import LoopConfig, Periodic, TrainingDiverged, train
from lmforge.train.metrics import MetricsLog, read_metrics
from lmforge.train.objectives.lm import lm_objective
from lmforge.train.optim import OptimConfig, build_optimizer
from tests.conftest import ToyBatches, tiny_config


class NoTokenizer:
    """Checkpoint tests need no tokenizer files."""
    bos_id = eos_id = pad_id = None

    def token_to_id(self, token):
        return None

    def save(self, path):
        pass


def _setup(tmp_path, seed=0, optim=None, steps=12, **loop_kw):
    rt = Runtime.setup("cpu", "float32", seed)
    model = Transformer(tiny_config())
    optim = optim or OptimConfig(lr=3e-3, warmup_steps=2)
    opt = build_optimizer(model, optim, rt.device)
    loop = LoopConfig(max_steps=steps, log_every_steps=1, progress=False, **loop_kw)
    log = MetricsLog(tmp_path, tensorboard=False)
    ckpt = model_checkpointing(model, NoTokenizer(), tmp_path / "model")
    return dict(model=model, optimizer=opt, loop=loop, optim=optim, runtime=rt, log=log,
                checkpoint=ckpt)


def _run(parts, batches, objective=lm_objective, **kw):
    model, opt = parts["model"], parts["optimizer"]
    rest = {k: v for k, v in parts.items() if k not in ("model", "optimizer")}
    return train(model, objective, batches, opt, **rest, **kw)


def test_loss_decreases_and_metrics_are_logged(tmp_path):
    parts = _setup(tmp_path, steps=30)
    result = _run(parts, ToyBatches())
    assert result.losses[-1] < result.losses[0] - 1.0
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 31))
    assert all(r["train/tokens"] == 4 * 16 for r in rows)
    assert rows[0]["train/lr"] < rows[5]["train/lr"]  # warmup


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, optimizer):
    optim = OptimConfig(name=optimizer, lr=3e-3, warmup_steps=2)
    reference = _run(_setup(tmp_path / "ref", optim=optim, save_every_steps=5), ToyBatches())

    class Crash(Exception):
        pass

    def crash_at_7(step):
        if step == 7:
            raise Crash
        return {}

    parts = _setup(tmp_path / "run", optim=optim, save_every_steps=5)
    with pytest.raises(Crash):
        _run(parts, ToyBatches(), evaluators=[Periodic(1, crash_at_7)])
    # A fresh process: new model, optimizer and data source, differently seeded.
    torch.manual_seed(123)
    resumed = _run(_setup(tmp_path / "run", seed=99, optim=optim, save_every_steps=5),
                   ToyBatches(), resume=True)
    assert resumed.losses == reference.losses[5:]


def test_crash_during_save_leaves_previous_checkpoint_loadable(tmp_path):
    parts = _setup(tmp_path, steps=4, save_every_steps=2)
    ckpt = parts["checkpoint"]
    original_save = ckpt.save_model
    calls = []

    def save_then_die(path):
        calls.append(path)
        if len(calls) == 2:  # the second save (step 4) dies half-way through
            original_save(path)
            (path / "model.safetensors").write_bytes(b"truncated")
            raise OSError("disk full")
        original_save(path)

    ckpt.save_model = save_then_die
    with pytest.raises(OSError):
        _run(parts, ToyBatches())
    found = find_checkpoint(ckpt.path)
    assert found is not None
    from lmforge.model.hub import load_model
    from lmforge.train.checkpoint import STATE_DIR
    import json
    assert json.loads((found / STATE_DIR / "state.json").read_text())["step"] == 2
    load_model(found)  # weights intact


def test_non_finite_loss_skips_step_then_stops(tmp_path):
    def sometimes_nan(model, batch, calls=[0]):
        calls[0] += 1
        loss, metrics = lm_objective(model, batch)
        return (loss * float("nan") if calls[0] in (3, 4) else loss), metrics

    parts = _setup(tmp_path, steps=8)
    before = {k: v.clone() for k, v in parts["model"].state_dict().items()}
    result = _run(parts, ToyBatches(), objective=sometimes_nan)
    assert result.skipped_steps == 2 and math.isnan(result.losses[2])
    assert all(math.isfinite(x) for i, x in enumerate(result.losses) if i not in (2, 3))
    assert any(not torch.equal(before[k], v) for k, v in parts["model"].state_dict().items())

    always_nan = lambda model, batch: (lm_objective(model, batch)[0] * float("nan"), {})  # noqa: E731
    with pytest.raises(TrainingDiverged, match="non-finite"):
        _run(_setup(tmp_path / "b", steps=8), ToyBatches(), objective=always_nan)


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    """8 sequences × 1 micro-batch == 4 × 2 micro-batches (TRL's invariant)."""
    big = [next(ToyBatches(batch_size=8, seed=s)) for s in range(6)]
    halves = [{k: v[i * 4:(i + 1) * 4] for k, v in b.items()} for b in big for i in (0, 1)]
    one = _run(_setup(tmp_path / "a", steps=6), iter(big))
    two = _run(_setup(tmp_path / "b", steps=6, grad_accum_steps=2), iter(halves))
    assert one.losses == pytest.approx(two.losses, rel=1e-5)
