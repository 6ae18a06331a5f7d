"""Metric sinks chosen once at setup: JSONL always, TensorBoard and W&B when asked for.

    log = MetricsLog(run_dir, tensorboard=True)
    log.write(step, {"train/loss": 3.2, "train/tokens_per_s": 1.2e4})
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


class MetricsLog:
    def __init__(self, run_dir: Path, tensorboard: bool = True, wandb_project: str | None = None,
                 enabled: bool = True, config: dict | None = None):
        self.sinks = []
        if not enabled:  # non-zero ranks log nothing
            return
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "metrics.jsonl"
        self.jsonl = open(self.path, "a", buffering=1)
        self.sinks.append(self._write_jsonl)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            self.sinks.append(self._write_tensorboard)
        if wandb_project:
            import wandb  # optional: only imported when a project is given

            self.wandb = wandb.init(project=wandb_project, dir=str(run_dir), config=config)
            self.sinks.append(lambda step, m: self.wandb.log(m, step=step))

    def rewind(self, step: int) -> None:
        """Forget what was logged after `step`: a resumed run logs those steps again, so the
        log reads as the uninterrupted run (a line cut short by a kill is dropped too)."""
        if hasattr(self, "jsonl"):
            self.jsonl.close()
            kept = [line for line in self.path.read_text(errors="replace").splitlines(keepends=True)
                    if _step_of(line) is not None and _step_of(line) <= step]
            partial = self.path.with_name(self.path.name + ".partial")
            partial.write_text("".join(kept))
            os.replace(partial, self.path)
            self.jsonl = open(self.path, "a", buffering=1)
        if hasattr(self, "tb"):  # TensorBoard hides events from purge_step on
            from torch.utils.tensorboard import SummaryWriter

            self.tb.close()
            self.tb = SummaryWriter(self.tb.log_dir, purge_step=step + 1)

    def write(self, step: int, metrics: dict) -> None:
        for sink in self.sinks:
            sink(step, metrics)

    def _write_jsonl(self, step: int, metrics: dict) -> None:
        self.jsonl.write(json.dumps({"step": step, "time": round(time.time(), 3), **metrics}) + "\n")

    def _write_tensorboard(self, step: int, metrics: dict) -> None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)):
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if hasattr(self, "jsonl"):
            self.jsonl.close()
        if hasattr(self, "tb"):
            self.tb.close()
        if hasattr(self, "wandb"):
            self.wandb.finish()


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
