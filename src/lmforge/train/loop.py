"""THE training loop. It knows no algorithm.

    result = train(model, lm_objective, batches, optimizer, loop=LoopConfig(max_steps=100),
                   optim=optim_cfg, runtime=rt, log=metrics_log, checkpoint=ckpt)

An *objective* maps (model, batch) -> (loss, metrics); pretraining, SFT, DPO and GRPO
differ only there. A *batch source* is any iterator of dicts of tensors; when it has
`state_dict()`/`load_state_dict()` (data loaders, rollout sources) its position is part
of the checkpoint, so resume is exact. Everything else lives here once: gradient
accumulation, LR schedule, clipping, mixed precision, non-finite-loss guard, logging,
periodic evaluation, atomic checkpoints.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from lmforge.config import require
from lmforge.runtime import Runtime
from lmforge.train.checkpoint import find_checkpoint, load_trainer_state, save_checkpoint
from lmforge.train.metrics import MetricsLog
from lmforge.train.optim import OptimConfig, lr_multiplier, set_lr
from lmforge.train.parallel import is_sharded
from lmforge.train.spikes import SpikeDetector

Objective = Callable[[nn.Module, dict], tuple[torch.Tensor, dict]]


@dataclass
class LoopConfig:
    max_steps: int = 200  # optimizer steps
    grad_accum_steps: int = 1  # micro-batches per optimizer step
    log_every_steps: int = 10  # write train metrics every N steps
    eval_every_steps: int = 100  # run evaluators every N steps (and at the end)
    save_every_steps: int = 0  # checkpoint every N steps (0 = only at the end)
    max_bad_steps: int = 3  # consecutive non-finite steps tolerated before stopping
    progress: bool = True  # show a progress bar
    # Loss spikes (train/spikes.py): off by default, because a policy-gradient or preference
    # loss is not a stationary series (GRPO's hovers around 0 and changes sign) and a
    # judgement on it would drop good steps; turn it on for pretraining and SFT.
    spike_action: Literal["off", "skip", "rollback"] = "off"  # skip the batch, or reload the last checkpoint
    spike_threshold_std: float = 6.0  # a spike: loss > mean + this many std of the recent losses
    spike_window_steps: int = 50  # recent accepted losses judged against (also the warm-up)
    spike_lr_factor: float = 0.5  # rollback multiplies the learning rate by this, for the rest of the run

    def __post_init__(self):
        for name in ("max_steps", "grad_accum_steps", "log_every_steps", "eval_every_steps"):
            require(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))
        require(self.save_every_steps >= 0, "save_every_steps", ">= 0 (0 = only at the end)", self.save_every_steps)
        require(self.spike_window_steps >= 2, "spike_window_steps", ">= 2", self.spike_window_steps)
        require(self.spike_threshold_std > 0, "spike_threshold_std", "> 0", self.spike_threshold_std)
        require(0 < self.spike_lr_factor <= 1, "spike_lr_factor", "in (0, 1]", self.spike_lr_factor)


@dataclass
class Periodic:
    """A callback run every `every_steps` optimizer steps and after the last one."""

    every_steps: int
    fn: Callable[[int], dict]


@dataclass
class Checkpointing:
    path: Path  # the checkpoint directory (a loadable model dir + trainer_state/)
    save_model: Callable[[Path], None]  # writes the model files into a directory
    load_model: Callable[[Path], None]  # restores weights from one into the live model


@dataclass
class TrainResult:
    step: int
    losses: list[float] = field(default_factory=list)  # one per optimizer step run
    skipped_steps: int = 0  # updates not applied: non-finite, or a skipped spike
    rollbacks: int = 0  # spikes answered by reloading the last checkpoint
    lr_scale: float = 1.0  # the schedule's LR times this (each rollback lowers it)
    rolled_back_steps: set[int] = field(default_factory=set)  # steps whose spike caused a rollback
    last_metrics: dict = field(default_factory=dict)


class TrainingDiverged(RuntimeError):
    pass


def train(model: nn.Module, objective: Objective, batches: Iterator[dict], optimizer: Any, *,
          loop: LoopConfig, optim: OptimConfig, runtime: Runtime, log: MetricsLog,
          checkpoint: Checkpointing | None = None, evaluators: Sequence[Periodic] = (),
          flops_per_token: float | None = None, resume: bool = False) -> TrainResult:
    result = TrainResult(step=0)
    spikes = SpikeDetector(loop.spike_threshold_std, loop.spike_window_steps)
    if resume:
        _resume(checkpoint, model, optimizer, batches, runtime, result, spikes)
        log.rewind(result.step)  # steps logged after the checkpoint are about to run again
    start_step = result.step
    params = [p for p in model.parameters() if p.requires_grad]
    peak_flops = runtime.peak_flops()
    bar = tqdm(total=loop.max_steps, initial=start_step, disable=not (loop.progress and runtime.is_main),
               dynamic_ncols=True, unit="step")
    bad_in_a_row = 0
    model.train()
    step = start_step
    while step < loop.max_steps:
        t0 = time.perf_counter()
        set_lr(optimizer, result.lr_scale * lr_multiplier(step, loop.max_steps, optim))
        loss, metrics = _accumulate_gradients(model, objective, batches, loop.grad_accum_steps, runtime)
        spike = loop.spike_action != "off" and spikes.is_spike(loss)
        if (spike and loop.spike_action == "rollback" and step not in result.rolled_back_steps
                and checkpoint and find_checkpoint(checkpoint.path)):  # else: skipped, below
            optimizer.zero_grad(set_to_none=True)
            step = bar.n = _rollback(checkpoint, model, optimizer, batches, runtime, result, spikes, step, loss,
                                     loop, log)
            continue
        grad_norm = _clip(params, optim.grad_clip) if math.isfinite(loss) else float("nan")
        if spike:
            result.skipped_steps += 1
            runtime.print(f"step {step}: loss spike {loss:.4f} > {spikes.threshold():.4f} (mean + "
                          f"{loop.spike_threshold_std:g} std of the last {loop.spike_window_steps} steps); "
                          "update skipped")
            log.write(step + 1, {"spike/loss": loss, "spike/threshold": spikes.threshold(), "spike/skipped": 1})
        elif math.isfinite(loss) and math.isfinite(grad_norm):
            optimizer.step()
            spikes.accept(loss)
            bad_in_a_row = 0
        else:
            bad_in_a_row += 1
            result.skipped_steps += 1
            runtime.print(f"step {step}: non-finite loss/grad ({loss}, {grad_norm}); update skipped")
            if bad_in_a_row > loop.max_bad_steps:
                raise TrainingDiverged(
                    f"{bad_in_a_row} non-finite steps in a row (last at step {step}): lower the "
                    "learning rate, check the data, or raise loop.max_bad_steps")
        optimizer.zero_grad(set_to_none=True)
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        result.losses.append(loss)
        done = step + 1
        tokens_per_s = metrics.get("tokens", 0) / seconds
        metrics.update(loss=loss, grad_norm=grad_norm, lr=optimizer.param_groups[0]["lr"],
                       tokens_per_s=tokens_per_s, step_seconds=seconds)
        if flops_per_token and peak_flops:
            metrics["mfu"] = flops_per_token * tokens_per_s / peak_flops
        bar.update(1)
        bar.set_postfix(_postfix(metrics), refresh=False)
        if done % loop.log_every_steps == 0 or done == loop.max_steps:
            log.write(done, {f"train/{k}": v for k, v in metrics.items()})
        for ev in evaluators:
            if done % ev.every_steps == 0 or done == loop.max_steps:
                log.write(done, ev.fn(done))
                model.train()
        if checkpoint and (done == loop.max_steps or
                           (loop.save_every_steps and done % loop.save_every_steps == 0)):
            _save(checkpoint, model, optimizer, batches, runtime, done, result, spikes)
        result.step, result.last_metrics = done, metrics
        step = done
    bar.close()
    return result


def _accumulate_gradients(model, objective, batches, accum_steps: int, runtime: Runtime):
    """Run accum_steps micro-batches; return (mean loss as float, mean metrics)."""
    losses, sums, counts = [], {}, {}
    for micro in range(accum_steps):
        batch = _to_device(next(batches), runtime.device)
        sync = micro == accum_steps - 1
        with _maybe_no_sync(model, sync), runtime.autocast():
            loss, metrics = objective(model, batch)
        (loss / accum_steps).backward()
        losses.append(loss.detach())
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0) + (v.detach().float() if torch.is_tensor(v) else v)
            counts[k] = counts.get(k, 0) + 1
    # One host sync per step: stack everything, then .tolist().
    keys = list(sums)
    values = torch.stack([torch.as_tensor(sums[k], dtype=torch.float32, device=runtime.device)
                          for k in keys] + [torch.stack(losses).float().mean()]).tolist()
    # "tokens" is a count: summed over micro-batches; every other metric is averaged.
    metrics = {k: v if k == "tokens" else v / counts[k] for k, v in zip(keys, values)}
    return values[-1], metrics


def _clip(params, max_norm: float) -> float:
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    grads = [p.grad.detach().norm() for p in params if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


def _maybe_no_sync(model, sync: bool):
    """Under DDP, all-reduce gradients only on the last micro-batch of a step."""
    import contextlib

    if not sync and hasattr(model, "no_sync"):
        return model.no_sync()
    return contextlib.nullcontext()


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()}


def _postfix(metrics: dict) -> dict:
    shown = {"loss": f"{metrics['loss']:.4f}", "tok/s": f"{metrics['tokens_per_s']:.0f}"}
    if "mfu" in metrics:
        shown["mfu"] = f"{100 * metrics['mfu']:.1f}%"
    return shown


def _sharded(model: nn.Module) -> nn.Module | None:
    """The FSDP2 model under any compile wrapper, or None when the model is not sharded."""
    model = getattr(model, "_orig_mod", model)
    return model if is_sharded(model) else None


def _save(ckpt: Checkpointing, model, optimizer, batches, runtime: Runtime, step: int, result: TrainResult,
          spikes: SpikeDetector):
    sharded = _sharded(model)
    if not runtime.is_main and sharded is None:
        return
    state = {"step": step, "skipped_steps": result.skipped_steps, "rollbacks": result.rollbacks,
             "lr_scale": result.lr_scale, "rolled_back_steps": sorted(result.rolled_back_steps),
             "spikes": spikes.state_dict()}
    batches_state = batches.state_dict() if hasattr(batches, "state_dict") else None
    save_checkpoint(ckpt.path, ckpt.save_model, optimizer, state, batches_state, sharded)


def _resume(ckpt: Checkpointing | None, model, optimizer, batches, runtime: Runtime, result: TrainResult,
            spikes: SpikeDetector) -> None:
    """Everything as the checkpoint left it: weights, optimizer, RNG, data position, and
    the loop's own state (step, skip and rollback counts, LR scale, the spike window)."""
    found = find_checkpoint(ckpt.path) if ckpt else None
    if found is None:
        runtime.print("resume: no checkpoint found; starting from step 0")
        return
    ckpt.load_model(found)
    state, batches_state = load_trainer_state(found, optimizer, _sharded(model))
    if batches_state is not None and hasattr(batches, "load_state_dict"):
        batches.load_state_dict(batches_state)
    result.step, result.skipped_steps = int(state["step"]), state.get("skipped_steps", 0)
    result.rollbacks, result.lr_scale = state.get("rollbacks", 0), state.get("lr_scale", 1.0)
    result.rolled_back_steps = set(state.get("rolled_back_steps", ()))
    if "spikes" in state:
        spikes.load_state_dict(state["spikes"])
    runtime.print(f"resumed from {found} at step {result.step}")


def _rollback(ckpt: Checkpointing, model, optimizer, batches, runtime: Runtime, result: TrainResult,
              spikes: SpikeDetector, step: int, loss: float, loop: LoopConfig, log: MetricsLog) -> int:
    """Answer a spike at `step` by reloading the last checkpoint with the learning rate scaled
    by loop.spike_lr_factor; return the step to continue from. The data replays from the
    checkpoint; a step that spikes again after its rollback is skipped, so the run moves on
    (as is a spike before the first checkpoint)."""
    threshold = spikes.threshold()
    done_steps = len(result.losses)
    lr_scale = result.lr_scale * loop.spike_lr_factor
    rolled_back = result.rolled_back_steps | {step}
    _resume(ckpt, model, optimizer, batches, runtime, result, spikes)
    result.losses = result.losses[:max(0, done_steps - (step - result.step))]
    result.lr_scale, result.rolled_back_steps, result.rollbacks = lr_scale, rolled_back, result.rollbacks + 1
    runtime.print(f"step {step}: loss spike {loss:.4f} > {threshold:.4f} (mean + {loop.spike_threshold_std:g} "
                  f"std of the last {loop.spike_window_steps} steps); rolled back to step {result.step}, "
                  f"learning rate × {lr_scale:g} from here on")
    log.write(step + 1, {"spike/loss": loss, "spike/threshold": threshold,
                         "spike/rolled_back_to_step": result.step, "spike/lr_scale": lr_scale})
    return result.step
