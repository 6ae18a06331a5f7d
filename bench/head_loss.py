"""The output head + cross-entropy: the usual logits path vs lmforge's fused, chunked one.

    python bench/head_loss.py                          # SmolLM2's head, 16 x 1024 tokens (GPU)
    python bench/head_loss.py --tokens 4096            # a CPU-sized run
    python bench/head_loss.py --chunk_rows 512 2048    # try other chunk sizes

One forward + backward of mean cross-entropy over `tokens` rows of hidden size `hidden`
against a (vocab x hidden) head, in bf16 autocast on a GPU (fp32 on CPU). Each variant runs
in its own process so its peak memory is its own: CUDA max_memory_allocated above what
the inputs take, or on CPU the growth of the process's peak RSS over what imports and
inputs took. A process times `--steps` steps after one warm-up step (ms per step = their
mean); `--repeats` rounds of one process per variant, interleaved (logits, fused, fused
compiled, logits, ...), give each variant's median and min/max. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch
import torch.nn.functional as F
from common import Meta, add_repeats, interleave, run_json, summary


def run(variant: str, tokens: int, hidden: int, vocab: int, chunk_rows: int, steps: int, device: str) -> dict:
    from lmforge.train.head_loss import linear_cross_entropy

    dev = torch.device(device)
    g = torch.Generator(device=dev).manual_seed(0)
    h = torch.randn(tokens, hidden, device=dev, generator=g, requires_grad=True)
    w = (0.02 * torch.randn(vocab, hidden, device=dev, generator=g)).requires_grad_()
    y = torch.randint(0, vocab, (tokens,), device=dev, generator=g)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")

    def step():
        with autocast:
            if variant == "logits":
                loss = F.cross_entropy((h @ w.T).float(), y)
            else:
                loss = linear_cross_entropy(h, w, y, chunk_rows=chunk_rows, compiled=variant == "fused_compiled")
        loss.backward()
        h.grad = w.grad = None
        return loss

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the peak is monotonic: take it first
    step()  # warm-up (and compile)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync()
    ms = 1000 * (time.perf_counter() - t0) / steps
    peak = ((torch.cuda.max_memory_allocated(dev) - base) if dev.type == "cuda"
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024) / 2**20
    return {"variant": variant, "chunk_rows": chunk_rows if variant != "logits" else None,
            "ms_per_step": round(ms, 2), "extra_peak_mb": round(peak, 1), "loss": round(float(loss), 5)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=16 * 1024)
    p.add_argument("--hidden", type=int, default=576)
    p.add_argument("--vocab", type=int, default=49152)
    p.add_argument("--chunk_rows", type=int, nargs="+", default=[0], help="0 = the default size")
    p.add_argument("--steps", type=int, default=5, help="timed steps per process (after one warm-up step)")
    add_repeats(p)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # internal: variant chunk_rows
    args = p.parse_args()
    if args.one:
        print(json.dumps(run(args.one[0], args.tokens, args.hidden, args.vocab, int(args.one[1]) or None,
                             args.steps, args.device)))
        return
    meta = Meta(["torch"])
    variants = [("logits", 0)] + [(v, c) for c in args.chunk_rows for v in ("fused", "fused_compiled")]

    def one(variant, rows):
        return lambda: run_json([sys.executable, __file__, "--one", variant, str(rows), "--tokens",
                                 str(args.tokens), "--hidden", str(args.hidden), "--vocab", str(args.vocab),
                                 "--steps", str(args.steps), "--device", args.device])

    runs = interleave({f"{v}:{c}": one(v, c) for v, c in variants}, args.repeats)
    results = []
    for (variant, rows), variant_runs in zip(variants, runs.values()):
        ok = [r for r in variant_runs if "ms_per_step" in r]
        if not ok:
            results.append({"variant": variant, "error": variant_runs[0]["error"]})
            continue
        results.append({"variant": variant, "chunk_rows": ok[0]["chunk_rows"],
                        "ms_per_step": summary([r["ms_per_step"] for r in ok], 1),
                        "extra_peak_mb": summary([r["extra_peak_mb"] for r in ok], 1),
                        "loss": ok[0]["loss"], "errors": len(variant_runs) - len(ok)})
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(meta.dump({"bench": "head_loss", "device": device, "torch": torch.__version__,
                     "tokens": args.tokens, "hidden": args.hidden, "vocab": args.vocab,
                     "steps_per_process": args.steps, "repeats": args.repeats, "results": results}))


if __name__ == "__main__":
    main()
