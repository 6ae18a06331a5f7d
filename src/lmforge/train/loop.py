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
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from lmforge.runtime import Runtime
from lmforge.train.checkpoint import find_checkpoint, load_trainer_state, save_checkpoint
from lmforge.train.metrics import MetricsLog
from lmforge.train.optim import OptimConfig, lr_multiplier, set_lr

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
    skipped_steps: int = 0
    last_metrics: dict = field(default_factory=dict)


class TrainingDiverged(RuntimeError):
    pass


def train(model: nn.Module, objective: Objective, batches: Iterator[dict], optimizer: Any, *,
          loop: LoopConfig, optim: OptimConfig, runtime: Runtime, log: MetricsLog,
          checkpoint: Checkpointing | None = None, evaluators: Sequence[Periodic] = (),
          flops_per_token: float | None = None, resume: bool = False) -> TrainResult:
    start_step = _resume(checkpoint, optimizer, batches, runtime) if resume else 0
    params = [p for p in model.parameters() if p.requires_grad]
    peak_flops = runtime.peak_flops()
    result = TrainResult(step=start_step)
    bar = tqdm(total=loop.max_steps, initial=start_step, disable=not (loop.progress and runtime.is_main),
               dynamic_ncols=True, unit="step")
    bad_in_a_row = 0
    model.train()
    for step in range(start_step, loop.max_steps):
        t0 = time.perf_counter()
        set_lr(optimizer, lr_multiplier(step, loop.max_steps, optim))
        loss, metrics = _accumulate_gradients(model, objective, batches, loop.grad_accum_steps, runtime)
        grad_norm = _clip(params, optim.grad_clip) if math.isfinite(loss) else float("nan")
        if math.isfinite(loss) and math.isfinite(grad_norm):
            optimizer.step()
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
            _save(checkpoint, optimizer, batches, runtime, done, result)
        result.step, result.last_metrics = done, metrics
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


def _save(ckpt: Checkpointing, optimizer, batches, runtime: Runtime, step: int, result: TrainResult):
    if not runtime.is_main:
        return
    state = {"step": step, "skipped_steps": result.skipped_steps}
    batches_state = batches.state_dict() if hasattr(batches, "state_dict") else None
    save_checkpoint(ckpt.path, ckpt.save_model, optimizer, state, batches_state)


def _resume(ckpt: Checkpointing | None, optimizer, batches, runtime: Runtime) -> int:
    found = find_checkpoint(ckpt.path) if ckpt else None
    if found is None:
        runtime.print("resume: no checkpoint found; starting from step 0")
        return 0
    ckpt.load_model(found)
    state, batches_state = load_trainer_state(found, optimizer)
    if batches_state is not None and hasattr(batches, "load_state_dict"):
        batches.load_state_dict(batches_state)
    runtime.print(f"resumed from {found} at step {state['step']}")
    return int(state["step"])
