"""DDP vs FSDP2 on 2 CPU processes (gloo): tokens/s and memory per process, d12 shape.

    python bench/fsdp_cpu.py                        # d12: 12 layers x 768, vocab 32768, ~110M parameters
    python bench/fsdp_cpu.py --depth 4 --steps 3    # a quick look

Each side is the real training step (`lmforge.train.loop.train`: AdamW, clipping, logging
off) on random tokens, 2 processes x 1 thread, `--batch` sequences of `--seq_len` tokens per
rank per step. Per process: peak resident set (`ru_maxrss`, which includes torch itself:
the `baseline_rss_mb` row is a process that only built the model), and the bytes of
parameters + gradients + AdamW state it holds (local shards under FSDP2; the FSDP2 side
builds the model on the meta device and allocates only its shards, as `lmforge pretrain
--parallel fsdp` does). tokens/s is both
ranks' tokens over the median step time after `--warmup` steps. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from common import ROOT, Meta

sys.path.insert(0, str(ROOT / "src"))

from lmforge.model.transformer import ModelConfig, Transformer  # noqa: E402
from lmforge.runtime import Runtime  # noqa: E402
from lmforge.train.loop import LoopConfig, train  # noqa: E402
from lmforge.train.metrics import MetricsLog  # noqa: E402
from lmforge.train.objectives.lm import lm_objective  # noqa: E402
from lmforge.train.optim import OptimConfig, build_optimizer  # noqa: E402
from lmforge.train.parallel import wrap_model  # noqa: E402


def shape(depth: int, vocab: int) -> ModelConfig:
    width = 64 * depth
    return ModelConfig(vocab_size=vocab, hidden_size=width, intermediate_size=-(-8 * width // 3 // 128) * 128,
                       num_hidden_layers=depth, num_attention_heads=width // 64, num_key_value_heads=width // 64,
                       head_dim=64, max_position_embeddings=1024)


def batches(cfg: ModelConfig, batch: int, seq_len: int, rank: int):
    g = torch.Generator().manual_seed(rank)
    while True:
        ids = torch.randint(0, cfg.vocab_size, (batch, seq_len + 1), generator=g)
        yield {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}


def run(rank: int, world: int, args, parallel: str, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    rt = Runtime.setup("cpu", "float32", seed=0)
    cfg = shape(args.depth, args.vocab)
    torch.manual_seed(0)
    with torch.device("meta" if parallel == "fsdp" else "cpu"):  # as `lmforge pretrain` builds it
        model = Transformer(cfg)
    if parallel == "none":  # the floor: a process that holds the model and nothing else
        result = {"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    else:
        wrapped = wrap_model(model, rt, parallel=parallel)
        optim = OptimConfig(lr=1e-4, warmup_steps=0)
        opt = build_optimizer(model, optim, rt.device)
        times = []
        loop = LoopConfig(max_steps=args.warmup + args.steps, progress=False, log_every_steps=1)
        source = batches(cfg, args.batch, args.seq_len, rank)

        def timed():
            while True:
                times.append(time.perf_counter())
                yield next(source)
        train(wrapped, lm_objective, timed(), opt, loop=loop, optim=optim, runtime=rt,
              log=MetricsLog(out, enabled=False))
        times.append(time.perf_counter())
        local = lambda t: t.to_local() if hasattr(t, "to_local") else t  # noqa: E731
        held = sum(local(p).numel() * 4 * 2 for p in model.parameters())  # weights + gradients
        held += sum(local(v).numel() * v.element_size() for o in opt.optimizers for s in o.state.values()
                    for v in s.values() if torch.is_tensor(v) and v.dim() > 0)
        steps = [b - a for a, b in zip(times[args.warmup:], times[args.warmup + 1:])]
        result = {"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "held_mb": held / 2**20, "step_s": statistics.median(steps),
                  "tokens_per_s": world * args.batch * args.seq_len / statistics.median(steps)}
    Path(out, f"{parallel}_{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq_len", type=int, default=256)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    args = p.parse_args()
    meta = Meta(["torch"])
    results = {}
    with tempfile.TemporaryDirectory() as out:
        for port, parallel in ((29561, "none"), (29562, "ddp"), (29563, "fsdp")):
            mp.spawn(run, args=(2, args, parallel, port, out), nprocs=2, join=True)
            ranks = [json.loads(Path(out, f"{parallel}_{r}.json").read_text()) for r in range(2)]
            results[parallel] = {k: round(max(r[k] for r in ranks), 3) for k in ranks[0]}
    n = Transformer(shape(args.depth, args.vocab)).num_params()
    results["baseline_rss_mb"] = results.pop("none")["rss_mb"]
    results["fsdp_vs_ddp"] = {k: round(results["fsdp"][k] / results["ddp"][k], 3)
                              for k in ("rss_mb", "held_mb", "tokens_per_s")}
    print(meta.dump({"parameters": n, "shape": vars(shape(args.depth, args.vocab)), "world_size": 2,
                     "threads_per_process": 1, "args": vars(args), **results}))


if __name__ == "__main__":
    main()
