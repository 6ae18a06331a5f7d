"""Pretraining throughput and MFU through the real training step (lmforge's one loop).

    python bench/pretrain_mfu.py --depth 20 --seq_len 2048 --batch_size 16 --compile
    python bench/pretrain_mfu.py --preset tiny          # the CPU demo shape
    python bench/pretrain_mfu.py --depth 12 --compare transformers   # and HF Llama, same loop

Random tokens (vocab 32768 unless --vocab), so data loading is not measured. The step
includes the optimizer, clipping, accumulation and logging: it is `lmforge.train.loop.train`.
Each run is its own process (fresh model, its own peak memory) and reports the median
tokens/s of its steps after the warm-up steps; `--repeats` runs per side, interleaved
(lmforge, transformers, lmforge, ...) when `--compare transformers`, which applies the same
flags (--compile, --optimizer, shape) to both. Prints one JSON object: per side the median
and min/max over runs (bench/common.py), and the ratio of medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch
from common import Meta, add_repeats, interleave, ratio, run_json, summary

from lmforge.model.transformer import Transformer
from lmforge.runtime import Runtime
from lmforge.stages.pretrain import PretrainConfig, apply_depth_preset
from lmforge.train.loop import LoopConfig, train
from lmforge.train.metrics import MetricsLog
from lmforge.train.objectives.lm import lm_objective
from lmforge.train.optim import build_optimizer
from lmforge.train.parallel import wrap_model


class RandomTokens:
    def __init__(self, vocab: int, batch_size: int, seq_len: int, device):
        self.shape, self.vocab, self.device = (batch_size, seq_len + 1), vocab, device

    def __iter__(self):
        return self

    def __next__(self):
        x = torch.randint(0, self.vocab, self.shape, device=self.device)
        return {"input_ids": x[:, :-1], "labels": x[:, 1:]}


def hf_objective(model, batch):
    """Same loss as lm_objective, through transformers' LlamaForCausalLM."""
    logits = model(input_ids=batch["input_ids"]).logits
    loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten())
    return loss, {"tokens": batch["labels"].numel()}


def build(args, rt: Runtime):
    cfg = PretrainConfig(depth=args.depth)
    cfg.data.seq_len = args.seq_len
    cfg.optim.name = args.optimizer
    apply_depth_preset(cfg, args.vocab)
    if args.compare != "transformers":
        return cfg, Transformer(cfg.model).to(rt.device), lm_objective
    if args.compare == "transformers":
        from transformers import LlamaConfig, LlamaForCausalLM

        from lmforge.model.hub import model_config_to_hf

        hf_cfg = {k: v for k, v in model_config_to_hf(cfg.model).items()
                  if k not in ("architectures", "model_type", "torch_dtype")}
        model = LlamaForCausalLM(LlamaConfig(**hf_cfg, attn_implementation="sdpa")).to(rt.device)
        objective = hf_objective
    return cfg, model, objective


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", choices=["tiny"], default=None)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--seq_len", type=int, default=2048)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--grad_accum_steps", type=int, default=1)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup_steps", type=int, default=5, help="steps left out of the timing")
    p.add_argument("--optimizer", choices=["adamw", "muon"], default="adamw")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--compare", choices=["transformers"], default=None,
                   help="also run transformers' LlamaForCausalLM (same shape, loop and flags), interleaved")
    p.add_argument("--device", default="auto")
    add_repeats(p)
    p.add_argument("--one", choices=["lmforge", "transformers"], help=argparse.SUPPRESS)  # internal
    args = p.parse_args()
    if args.preset == "tiny":  # configs/tiny.yaml's shape
        args.depth, args.seq_len, args.batch_size, args.vocab = 4, 256, 16, 8192
        args.steps, args.warmup_steps = min(args.steps, 20), 3
    if args.one:
        print(json.dumps(run_one(args, args.one)))
        return

    meta = Meta(["torch", "transformers"])
    sides = ["lmforge"] + ([args.compare] if args.compare else [])
    cmd = [sys.executable, __file__, *sys.argv[1:]]
    runs = interleave({side: (lambda side=side: run_json(cmd + ["--one", side])) for side in sides},
                      args.repeats)
    result = {"bench": "pretrain", "depth": args.depth, "seq_len": args.seq_len,
              "batch_size": args.batch_size, "grad_accum_steps": args.grad_accum_steps,
              "steps": args.steps, "warmup_steps": args.warmup_steps, "repeats": args.repeats,
              "sides": {}}
    for side, side_runs in runs.items():
        ok = [r for r in side_runs if "tokens_per_s" in r]
        if not ok:
            result["sides"][side] = {"error": side_runs[0].get("error")}
            continue
        first = ok[0]
        result["sides"][side] = {
            "flags": {"compile": args.compile, "optimizer": args.optimizer},
            "params_M": first["params_M"],
            "tokens_per_s": summary([r["tokens_per_s"] for r in ok], 0),
            "mfu": summary([r["mfu"] for r in ok], 4) if first["mfu"] is not None else None,
            "peak_memory_GB": max(r["peak_memory_GB"] for r in ok) if first["peak_memory_GB"] is not None else None,
            "final_loss": [r["final_loss"] for r in ok], "errors": len(side_runs) - len(ok)}
        result.update({k: first[k] for k in ("device", "dtype", "cpu_threads") if k in first})
    # the headline: lmforge's median (and the comparison's ratio of medians)
    ours = result["sides"].get("lmforge", {})
    result["tokens_per_s"] = (ours.get("tokens_per_s") or {}).get("median")
    result["mfu"] = (ours.get("mfu") or {}).get("median")
    if args.compare:
        theirs = result["sides"].get(args.compare, {})
        result[f"speed_vs_{args.compare}"] = ratio(ours.get("tokens_per_s"), theirs.get("tokens_per_s"))
    print(meta.dump(result))


def run_one(args, side: str) -> dict:
    """One training run of one side in this process: median tokens/s after the warm-up steps."""
    args.compare = None if side == "lmforge" else side
    rt = Runtime.setup(args.device, "auto", seed=0)
    cfg, model, objective = build(args, rt)
    opt = build_optimizer(model, cfg.optim, rt.device, cfg.model.hidden_size)
    log = MetricsLog(".", enabled=False)
    rows: list[dict] = []
    log.sinks.append(lambda step, m: rows.append(m))
    cfg.loop = LoopConfig(max_steps=args.steps, grad_accum_steps=args.grad_accum_steps,
                          log_every_steps=1, eval_every_steps=10**9, progress=False)
    with torch.device("meta"):  # the FLOPs count of this shape, whichever implementation runs
        flops_per_token = Transformer(cfg.model).flops_per_token(args.seq_len)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    train(wrap_model(model, rt, args.compile), objective,
          RandomTokens(args.vocab, args.batch_size, args.seq_len, rt.device), opt,
          loop=cfg.loop, optim=cfg.optim, runtime=rt, log=log, flops_per_token=flops_per_token)
    timed = rows[args.warmup_steps:]
    tps = statistics.median(r["train/tokens_per_s"] for r in timed)
    peak = rt.peak_flops()
    return {
        "model": side, "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "optimizer": args.optimizer, "compile": args.compile, "tokens_per_s": round(tps),
        "mfu": round(flops_per_token * tps / peak, 4) if peak else None,
        "peak_memory_GB": round(torch.cuda.max_memory_allocated() / 1e9, 2)
        if torch.cuda.is_available() else None,
        "final_loss": round(rows[-1]["train/loss"], 4), **rt.describe(),
    }


if __name__ == "__main__":
    main()
