"""What every experiment reports: mean ± standard error over seeds, and a verdict on a
paired difference between two arms that could have come out either way."""

from __future__ import annotations

from lmforge.eval.accuracy import mean, stderr


def mean_se(values: list[float]) -> tuple[float, float]:
    return mean(values), stderr(values)  # stderr: nan for one seed


def verdict(paired: tuple[float, float], better: str, worse: str) -> str:
    """`better` when the paired mean is above 2 standard errors, `worse` when below -2, else
    not reproduced; one seed gives no verdict."""
    m, se = paired
    if se != se:
        return f"one seed only (difference {m:+.4f}): no verdict"
    if m > 2 * se:
        return f"{better} (by {m:.4f} ± {se:.4f}, > 2 SE): reproduced"
    if m < -2 * se:
        return f"{worse} (by {-m:.4f} ± {se:.4f}): the opposite of the claim"
    return f"no difference beyond noise ({m:+.4f} ± {se:.4f}): not reproduced at this scale"


def fmt(m: tuple[float, float]) -> str:
    """"0.1234 ± 0.0056", or the mean alone for one seed."""
    return f"{m[0]:.4f} ± {m[1]:.4f}" if m[1] == m[1] else f"{m[0]:.4f}"
