"""Decoding throughput of lmforge's KV-cache engine, beside transformers' `generate`.

    python bench/generate.py --depth 20 --batch_sizes 1 64        # the issue's GPU shape
    python bench/generate.py --depth 4 --vocab 8192 --batch_sizes 1 8 --new_tokens 64  # CPU

Random weights, 128-token random prompts, greedy decoding with no early stop, so every
row produces exactly --new_tokens tokens. Also checks that the engine's greedy output
equals decoding by repeated full forward passes (no cache) on a short run, and counts
the operators each implementation dispatches per generated token in eager mode (about
its kernel launches per token on a GPU). Throughput is timed `--repeats` times per side and
batch size, interleaved (lmforge, transformers, lmforge, ...) after one warm-up each; the
JSON keeps `lmforge_tokens_per_s_b{B}` / `transformers_tokens_per_s_b{B}` as the medians,
with min/max per side in `runs` and the ratio of medians in `speed_vs_transformers_b{B}`.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import Meta, add_repeats, interleave, ratio, summary

from lmforge.infer.engine import Sampling, generate
from lmforge.model.transformer import Transformer
from lmforge.runtime import Runtime
from lmforge.stages.pretrain import PretrainConfig, apply_depth_preset


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def greedy_matches_no_cache(model, vocab: int, device, steps: int = 16, compile: bool = False) -> bool:
    prompt = torch.randint(0, vocab, (1, 32), generator=torch.Generator().manual_seed(1)).tolist()
    fast = generate(model, prompt, steps, Sampling(temperature=0), compile=compile).tokens[0]
    seq = list(prompt[0])
    with torch.no_grad():
        for _ in range(steps):
            seq.append(int(model(torch.tensor([seq], device=device))[0, -1].argmax()))
    return fast == seq[32:]


def ops_per_token(generate_n) -> float:
    """Operators dispatched per generated token in eager mode, views excluded: about the
    kernels a GPU launches per token, the host cost that bounds small-batch decoding.
    Measured as (ops for 33 new tokens - ops for 1) / 32, so the prefill cancels out."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += not func.is_view
            return func(*args, **(kwargs or {}))

    counts = []
    for n in (1, 33):
        with Count() as c:
            generate_n(n)
        counts.append(c.n)
    return (counts[1] - counts[0]) / 32


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--prompt_tokens", type=int, default=128)
    p.add_argument("--new_tokens", type=int, default=256)
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 64])
    p.add_argument("--dtype", default="auto", help="weights dtype: auto = bf16 on GPU, fp32 on CPU")
    p.add_argument("--compare", choices=["transformers", "none"], default="transformers")
    p.add_argument("--compile", action="store_true", help="compiled decode step (CUDA graphs on GPU)")
    p.add_argument("--device", default="auto")
    add_repeats(p)
    args = p.parse_args()
    meta = Meta(["torch", "transformers"])

    rt = Runtime.setup(args.device, args.dtype, seed=0)
    cfg = PretrainConfig(depth=args.depth)
    apply_depth_preset(cfg, args.vocab)
    model = Transformer(cfg.model).to(rt.device).eval()
    hf = _hf_twin(model).to(rt.dtype) if args.compare == "transformers" else None
    model.to(rt.dtype)
    results = {"bench": "generate", "depth": args.depth, "compile": args.compile, "prompt_tokens": args.prompt_tokens,
               "new_tokens": args.new_tokens, "repeats": args.repeats, **rt.describe(),
               "flags": {"lmforge": {"compile": args.compile},
                         "transformers": {"compile": False, "note": "generate() eager, as shipped"}},
               "greedy_equals_no_cache": greedy_matches_no_cache(model, args.vocab, rt.device, compile=args.compile)}
    prompt = torch.randint(0, args.vocab, (1, args.prompt_tokens)).tolist()
    results["lmforge_eager_ops_per_token"] = ops_per_token(
        lambda n: generate(model, prompt, n, Sampling(temperature=0)))
    if hf is not None:
        ids = torch.tensor(prompt, device=rt.device)
        results["transformers_ops_per_token"] = ops_per_token(
            lambda n: hf.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False))
    results["runs"] = {}
    for bs in args.batch_sizes:
        prompts = torch.randint(0, args.vocab, (bs, args.prompt_tokens)).tolist()
        run = lambda: generate(model, prompts, args.new_tokens, Sampling(temperature=0),  # noqa: E731
                               compile=args.compile)
        sides = {"lmforge": run}
        if hf is not None:
            ids = torch.tensor(prompts, device=rt.device)
            sides["transformers"] = lambda: hf.generate(ids, max_new_tokens=args.new_tokens,  # noqa: E731
                                                        min_new_tokens=args.new_tokens, do_sample=False)
        for fn in sides.values():
            fn()  # warm-up (allocator, kernels, compile)
        timed_sides = {name: (lambda fn=fn: bs * args.new_tokens / timed(fn, rt.device))
                       for name, fn in sides.items()}
        for name, values in interleave(timed_sides, args.repeats).items():
            stats = summary(values, 1)
            results["runs"][f"{name}_b{bs}"] = stats
            results[f"{name}_tokens_per_s_b{bs}"] = stats["median"]
        if hf is not None:
            results[f"speed_vs_transformers_b{bs}"] = ratio(results["runs"][f"lmforge_b{bs}"],
                                                           results["runs"][f"transformers_b{bs}"])
    print(meta.dump(results, indent=None))


def _hf_twin(model):
    """transformers' LlamaForCausalLM with the same weights."""
    import tempfile

    from transformers import AutoModelForCausalLM

    from lmforge.model.hub import save_model

    with tempfile.TemporaryDirectory() as d:
        save_model(model, d)
        twin = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    return twin.to(next(model.parameters()).device).eval()
if __name__ == "__main__":
    main()
