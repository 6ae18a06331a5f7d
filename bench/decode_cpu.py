"""Decoding a real model on the CPU: lmforge fp32 / int8 / int4 beside transformers and llama.cpp.

    python bench/decode_cpu.py                       # SmolLM2-135M-Instruct (scripts/fetch_smollm2.sh)
    python bench/decode_cpu.py --threads 2 --new_tokens 64 --batch 32 --repeats 3

One run, one model, one prompt, one thread count for every side:
- **batch 1**, greedy, `--new_tokens` new tokens with no early stop. Each side is timed from
  the first new token to the last (`decode_tokens_per_s`: the per-token cost a chatting user
  waits on) and end to end with the prompt's prefill (`tokens_per_s`).
  Sides: lmforge fp32, int8, int4 (`--quantize`; int4 imported from the GGUF's own Q4_1
  blocks when `--gguf` is given), transformers' `generate` (fp32), and, when
  llama-cpp-python is installed (`pip install llama-cpp-python`, a ~20-minute source build
  on 2 cores), llama.cpp on F32, F16 and Q8_0 files written by lmforge's GGUF export of the
  same weights, and on the shipped Q4_1 file.
- **batch `--batch`**: lmforge fp32 / int8 / int4 vs transformers `generate`, end to end.
- **quality**: perplexity of each lmforge variant on held-out text (`--text`), and how many
  greedy answers to `PROMPTS` are unchanged from fp32 (first `--answer_tokens` tokens).

SmolLM2's float weights here are the Q4_1 file's values (the fetch dequantizes it), so int4
is exact for its layers and "fp32" means those weights in fp32 on every side. Sides are
interleaved per round (`--repeats`); medians with min/max. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import time
from pathlib import Path

import torch
from common import ROOT, Meta, add_repeats, interleave, ratio, summary

from lmforge.infer.engine import Sampling, generate
from lmforge.model.load import load_pretrained
from lmforge.model.quantize import weight_bytes
from lmforge.tokenizer.chat import render_prompt

PROMPTS = [
    "What is the capital of France?", "Give me three tips for staying healthy.",
    "Explain what a neural network is in one sentence.", "Write a haiku about the sea.",
    "How many days are there in a leap year?", "What is 12 times 7?",
    "Translate 'good morning' into Spanish.", "Name a famous painting by Leonardo da Vinci.",
    "Why is the sky blue?", "What is the boiling point of water in Celsius?",
    "Suggest a name for a pet cat.", "What does a CPU do?",
    "List the primary colors.", "Who wrote Romeo and Juliet?",
    "What is photosynthesis?", "How do I make a cup of tea?",
]
QUESTION = "Write a short story about a robot who learns to paint."


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=str(ROOT / "runs/models/smollm2/hf"))
    p.add_argument("--gguf", default=str(ROOT / "runs/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
                   help="the shipped GGUF: llama.cpp's Q4_1 side and lmforge's int4 import ('' = none)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--text", default=str(ROOT / "data/corpus/en_sotu.jsonl.gz"))
    p.add_argument("--text_tokens", type=int, default=4096)
    p.add_argument("--answer_tokens", type=int, default=32)
    p.add_argument("--llama_cpp", choices=["auto", "off"], default="auto")
    add_repeats(p)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    meta = Meta(["torch", "transformers", "llama_cpp_python", "gguf"])

    float_model, tok = load_pretrained(args.model)
    gguf = Path(args.gguf) if args.gguf else None
    int4_source = str(gguf) if gguf and gguf.exists() else args.model
    models = {"lmforge_fp32": float_model,
              "lmforge_int8": load_pretrained(args.model, quantize="int8")[0],
              "lmforge_int4": load_pretrained(int4_source, quantize="int4")[0]}
    for m in models.values():
        m.eval()
    prompt = render_prompt(tok, [{"role": "user", "content": QUESTION}])
    n = args.new_tokens
    results = {"bench": "decode_cpu", "model": args.model, "threads": args.threads, "new_tokens": n,
               "prompt_tokens": len(prompt), "batch": args.batch, "repeats": args.repeats,
               "int4_source": int4_source,
               "weight_mb": {k: round(weight_bytes(m) / 2**20, 1) for k, m in models.items()}}

    sides = {name: (lambda m=m: lmforge_run(m, [prompt], n)) for name, m in models.items()}
    hf = transformers_model(args.model)
    sides["transformers_fp32"] = lambda: transformers_run(hf, [prompt], n)
    llama_files = llama_cpp_files(args, float_model, tok, gguf) if args.llama_cpp == "auto" else {}
    for name, path in llama_files.items():
        sides[f"llama_cpp_{name}"] = llama_cpp_side(path, prompt, n, args.threads)
    results["llama_cpp"] = ({k: str(v) for k, v in llama_files.items()} if llama_files
                            else "not installed (pip install llama-cpp-python)")
    results["batch1"] = measure(sides, args.repeats)
    base = results["batch1"]
    results["batch1_vs"] = {
        f"{ours}_vs_{theirs}": ratio(base[ours]["decode_tokens_per_s"], base[theirs]["decode_tokens_per_s"])
        for ours, theirs in [("lmforge_fp32", "transformers_fp32"), ("lmforge_fp32", "llama_cpp_f32"),
                             ("lmforge_int8", "llama_cpp_q8_0"), ("lmforge_int4", "llama_cpp_q4_1")]
        if ours in base and theirs in base}

    prompts = [render_prompt(tok, [{"role": "user", "content": q}]) for q in (PROMPTS * 4)[:args.batch]]
    batch_sides = {name: (lambda m=m: lmforge_run(m, prompts, n)) for name, m in models.items()}
    batch_sides["transformers_fp32"] = lambda: transformers_run(hf, prompts, n, tok.pad_id or 0)
    results[f"batch{args.batch}"] = measure(batch_sides, args.repeats)
    b = results[f"batch{args.batch}"]
    results[f"batch{args.batch}_vs_transformers"] = {
        k: ratio(b[k]["tokens_per_s"], b["transformers_fp32"]["tokens_per_s"]) for k in models}

    results["quality"] = quality(models, tok, args)
    print(meta.dump(results))


def measure(sides: dict, repeats: int) -> dict:
    for fn in sides.values():
        fn()  # warm-up: allocator, kernel layouts (int4 packs on first use), llama.cpp's mmap
    runs = interleave(sides, repeats)
    return {name: {key: summary([r[key] for r in rs], 1) for key in rs[0]} for name, rs in runs.items()}


def speeds(rows: int, new: int, start: float, first: float, last: float) -> dict:
    return {"tokens_per_s": rows * new / (last - start),
            "decode_tokens_per_s": rows * (new - 1) / (last - first)}


def lmforge_run(model, prompts, n: int) -> dict:
    stamps = []
    start = time.perf_counter()
    generate(model, prompts, n, Sampling(temperature=0),
             on_token=lambda row, t: row == 0 and stamps.append(time.perf_counter()))
    return speeds(len(prompts), n, start, stamps[0], stamps[-1])


def transformers_model(path: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def transformers_run(hf, prompts, n: int, pad_id: int = 0) -> dict:
    """`generate` greedy for exactly n tokens; a logits processor stamps each new token."""
    stamps = []

    def stamp(input_ids, scores):
        stamps.append(time.perf_counter())
        return scores

    width = max(map(len, prompts))
    ids = torch.tensor([[pad_id] * (width - len(q)) + q for q in prompts])
    mask = torch.tensor([[0] * (width - len(q)) + [1] * len(q) for q in prompts])
    start = time.perf_counter()
    with torch.no_grad():
        hf.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                    logits_processor=[stamp], pad_token_id=pad_id)
    return speeds(len(prompts), n, start, stamps[0], time.perf_counter())


def llama_cpp_files(args, model, tok, gguf: Path | None) -> dict[str, Path]:
    """F32 / F16 / Q8_0 files of the same weights (lmforge's exporter) and the shipped Q4_1."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return {}
    from lmforge.model.gguf_export import export_gguf

    out = ROOT / "runs/bench-data/decode_cpu"
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for kind in ("f32", "f16", "q8_0"):
        path = out / f"model-{kind}.gguf"
        if not path.exists():
            export_gguf(model, tok, path, kind)
        files[kind] = path
    if gguf and gguf.exists():
        files["q4_1"] = gguf
    return files


def llama_cpp_side(path: Path, prompt: list[int], n: int, threads: int):
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=512, n_threads=threads, n_threads_batch=threads,
                n_batch=512, verbose=False)

    def run() -> dict:
        llm.reset()
        stamps = []
        start = time.perf_counter()
        for _ in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
            stamps.append(time.perf_counter())
            if len(stamps) == n:
                break
        return speeds(1, n, start, stamps[0], stamps[-1])

    return run


@torch.no_grad()
def quality(models: dict, tok, args) -> dict:
    """Perplexity on held-out text, and greedy answers unchanged from fp32."""
    with gzip.open(args.text, "rt") as f:
        text = "\n\n".join(json.loads(line)["text"] for line in f)
    ids = tok.encode(text[-200_000:])[-args.text_tokens:]
    out = {"text": str(Path(args.text).relative_to(ROOT)), "text_tokens": len(ids)}
    windows = [ids[i:i + 512] for i in range(0, len(ids) - 1, 512)]
    answers = {}
    for name, model in models.items():
        nll, count = 0.0, 0
        for w in windows:
            x = torch.tensor([w])
            logits = model(x)[0, :-1].float()
            nll += torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum").item()
            count += len(w) - 1
        out[f"{name}_perplexity"] = round(math.exp(nll / count), 4)
        prompts = [render_prompt(tok, [{"role": "user", "content": q}]) for q in PROMPTS]
        answers[name] = generate(model, prompts, args.answer_tokens, Sampling(temperature=0)).tokens
    fp32 = out["lmforge_fp32_perplexity"]
    for name in models:
        if name != "lmforge_fp32":
            out[f"{name}_perplexity_increase"] = round(out[f"{name}_perplexity"] / fp32 - 1, 5)
            same = sum(a == b for a, b in zip(answers[name], answers["lmforge_fp32"]))
            out[f"{name}_answers_unchanged"] = f"{same}/{len(PROMPTS)}"
    return out


if __name__ == "__main__":
    main()
