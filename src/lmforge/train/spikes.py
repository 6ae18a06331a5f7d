"""Loss-spike detection for the training loop (`loop.spike_action: skip | rollback`).

    spikes = SpikeDetector(threshold_std=6.0, window_steps=50)
    if spikes.is_spike(loss): ...            # judged against the accepted losses before it
    else: spikes.accept(loss)

A spike is a loss more than `threshold_std` standard deviations above the mean of the last
`window_steps` accepted losses; nothing is judged until the window is full (the warm-up,
when a falling loss makes every statistic stale). The standard deviation is floored at 1%
of the mean so a flat plateau's jitter is not a spike. Large runs report such spikes and
recover by skipping batches or restarting from a checkpoint with a lower learning rate
(PaLM, Chowdhery et al. 2022 §5.1; OPT-175B's logbook, Zhang et al. 2022). The window is
part of the checkpoint, so a resumed run judges exactly as the uninterrupted one.
"""

from __future__ import annotations

import math
from collections import deque


class SpikeDetector:
    def __init__(self, threshold_std: float, window_steps: int):
        self.threshold_std = threshold_std
        self.window: deque[float] = deque(maxlen=window_steps)

    def threshold(self) -> float:
        """The loss above which a step is a spike (inf during the warm-up)."""
        if len(self.window) < self.window.maxlen:
            return math.inf
        mean = sum(self.window) / len(self.window)
        std = math.sqrt(sum((x - mean) ** 2 for x in self.window) / len(self.window))
        return mean + self.threshold_std * max(std, 0.01 * abs(mean))

    def is_spike(self, loss: float) -> bool:
        return math.isfinite(loss) and loss > self.threshold()

    def accept(self, loss: float) -> None:
        self.window.append(loss)

    def state_dict(self) -> dict:
        return {"window": list(self.window)}

    def load_state_dict(self, state: dict) -> None:
        self.window.clear()
        self.window.extend(state["window"])
