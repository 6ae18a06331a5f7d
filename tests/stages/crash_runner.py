"""Run `lmforge ARGS` and kill -9 the process at a chosen moment: a real SIGKILL, so no
cleanup, no `finally`, no flushed buffers, exactly what an OOM killer or a lost node does.

    python tests/stages/crash_runner.py step=5 -- sft --model ... --loop.save_every_steps 2
    python tests/stages/crash_runner.py save=2:weights -- pretrain ...

step=N          dies as the loop starts optimizer step N+1 (N steps done, counted across
                every train() call of the process, so SPIN's iterations add up)
save=N:weights  dies inside the N-th checkpoint save, halfway through the model file in the
                temporary directory (no trainer state written yet)
save=N:rename   dies inside the N-th save between its renames: the previous checkpoint moved
                aside to `<name>.old`, the new one not yet in place
unit=N          (curate) dies inside the N-th work unit's commit: its records and signatures
                renamed into place, its completion marker not yet written

The hooks wrap lmforge's functions from outside; lmforge itself carries no test switches.
"""

from __future__ import annotations

import os
import pathlib
import signal
import sys


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_at_step(n: int) -> None:
    import lmforge.train.loop as loop

    inner, calls = loop._accumulate_gradients, [0]

    def counted(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n + 1:
            die()
        return inner(*args, **kwargs)

    loop._accumulate_gradients = counted


def kill_in_save(n: int, where: str) -> None:
    import lmforge.train.loop as loop

    inner, calls = loop.save_checkpoint, [0]

    def counted(path, save_model, *args, **kwargs):
        calls[0] += 1
        if calls[0] == n and where == "weights":
            return inner(path, lambda d: (save_model(d), _truncate_largest_file(d), die()), *args, **kwargs)
        if calls[0] == n and where == "rename":
            rename = pathlib.Path.rename
            pathlib.Path.rename = lambda self, target: (rename(self, target), die())
        return inner(path, save_model, *args, **kwargs)

    loop.save_checkpoint = counted


def kill_in_unit_commit(n: int) -> None:
    import lmforge.curate.units as units

    inner, calls = units._write_atomic, [0]

    def counted(path, text):
        if path.name.endswith(".done.json"):
            calls[0] += 1
            if calls[0] == n:
                die()
        return inner(path, text)

    units._write_atomic = counted


def _truncate_largest_file(directory) -> None:
    largest = max(pathlib.Path(directory).rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else -1)
    with open(largest, "r+b") as f:
        f.truncate(largest.stat().st_size // 2)


def run(fault: str, argv: list[str], threads: int = 0) -> None:
    if threads:  # as many as the uninterrupted run used: reductions add up in the same order
        import torch

        torch.set_num_threads(threads)
    kind, _, spec = fault.partition("=")
    if kind == "step":
        kill_at_step(int(spec))
    elif kind == "unit":
        kill_in_unit_commit(int(spec))
    else:
        count, _, where = spec.partition(":")
        kill_in_save(int(count), where)
    from lmforge.cli import main

    raise SystemExit(main(argv))  # the exit code of the process, whoever runs it


if __name__ == "__main__":
    fault, sep, *args = sys.argv[1:]
    assert sep == "--", "usage: crash_runner.py FAULT -- lmforge args"
    run(fault, args)
