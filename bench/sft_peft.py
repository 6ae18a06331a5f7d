"""Fine-tuning throughput and peak memory: ours (full, LoRA) vs transformers (+ peft).

    python bench/sft_peft.py                 # GPU: SmolLM2-135M shape, batch 16 x 1024, bf16
    python bench/sft_peft.py --small         # CPU smoke run: 4 layers, batch 2 x 128
    python bench/sft_peft.py --modes ours_lora peft_lora --steps 20
    python bench/sft_peft.py --small --modes ours_lora ours_qlora_int8 ours_qlora_int4   # QLoRA

Random weights and tokens on SmolLM2-135M's shape (30 layers, d=576, 9/3 heads, vocab
49,152, tied). One step = forward + cross-entropy + backward + AdamW; ours computes the loss through
the SFT stage's objective (the fused, chunked head: train/head_loss.py). Each mode runs in
its own process, so peak memory is its own: on CUDA max_memory_allocated; on CPU
`extra_peak_mb` = the process's peak RSS minus its RSS once imports, model, optimizer and
inputs are built (so the libraries' import footprints, which differ, do not count), with
the whole-process peak and that baseline beside it. LoRA: r=16 on all linear
layers of attention and MLP; ours keeps no gradients for frozen weights (nor (tokens x vocab)
logits, through the fused head); peft runs with its defaults. ours_qlora_int8/_int4 are
ours_lora on a base quantized by lmforge.model.quantize (QLoRA; the tied head stays float).
--compile and --checkpoint apply to every mode: ours through torch.compile and
train.parallel.checkpoint_activations, transformers/peft through torch.compile of the HF
model and gradient_checkpointing_enable() (non-reentrant); each result states its flags.
`--repeats` rounds of one process per mode, interleaved (ours_full, ours_lora, hf_full,
peft_lora, ours_full, ...): medians and min/max per mode, ratios of medians.
Goal on one H100: ours_lora >= 1.5x peft_lora tokens/s at <= 0.75x its peak memory, and
ours_full at least as fast as hf_full. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch
import torch.nn.functional as F
from common import Meta, add_repeats, interleave, ratio, run_json, summary

MODES = ["ours_full", "ours_lora", "hf_full", "peft_lora"]
QLORA = ["ours_qlora_int8", "ours_qlora_int4"]  # LoRA on a frozen int8 / int4 base (opt in)
SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, head_dim=64,
               max_position_embeddings=8192, rope_theta=100000.0, tie_word_embeddings=True)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build(mode: str, shape: dict, device: torch.device, compile: bool, checkpoint: bool):
    if mode.startswith("ours"):
        from lmforge.model.peft import LoRAConfig, apply_peft
        from lmforge.model.transformer import ModelConfig, Transformer
        from lmforge.train.parallel import checkpoint_activations

        model = Transformer(ModelConfig(**shape)).to(device)
        if mode.startswith("ours_qlora"):
            from lmforge.model.quantize import quantize

            model = quantize(model, mode.rsplit("_", 1)[-1], head="none")  # as the sft stage does
        if mode != "ours_full":
            model = apply_peft(model, "lora", lora=LoRAConfig(r=16, alpha=32, target_modules=TARGETS))
        if checkpoint:
            checkpoint_activations(model)
        from lmforge.train.objectives.lm import lm_objective

        compiled = torch.compile(model) if compile else model
        # The SFT stage's own objective: the fused head, no (tokens x vocab) logits kept.
        return model, lambda x, y: lm_objective(compiled, {"input_ids": x, "labels": y})[0]
    import transformers

    config = transformers.LlamaConfig(**shape, attn_implementation="sdpa")
    model = transformers.LlamaForCausalLM(config).to(device)
    if checkpoint:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if mode == "peft_lora":
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS))
    model.train()  # HF models come in eval mode, where gradient checkpointing is off
    compiled = torch.compile(model) if compile else model
    return model, lambda x, y: F.cross_entropy(compiled(input_ids=x).logits.float().flatten(0, 1), y.flatten())


def run_mode(mode: str, shape: dict, batch: int, seq: int, steps: int, warmup: int, device: str,
             compile: bool = False, checkpoint: bool = False) -> dict:
    dev = torch.device(device)
    torch.manual_seed(0)
    model, loss_fn = build(mode, shape, dev, compile, checkpoint)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, **({"fused": True} if dev.type == "cuda" else {}))
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    x = torch.randint(0, shape["vocab_size"], (batch, seq + 1), device=dev)
    rss_built = _rss_mb()  # imports, model, optimizer (its state comes at step 1), inputs
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for step in range(warmup + steps):
        if step == warmup:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with autocast:
            loss = loss_fn(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
        memory = {"peak_memory_mb": round(peak, 1)}
    else:
        memory = {"peak_memory_mb": round(peak_rss - rss_built, 1), "extra_peak_mb": round(peak_rss - rss_built, 1),
                  "process_peak_rss_mb": round(peak_rss, 1), "rss_after_build_mb": round(rss_built, 1)}
    flags = {"compile": compile, "activation_checkpointing": checkpoint}
    return {"mode": mode, "tokens_per_s": round(batch * seq * steps / seconds, 1), **memory,
            "trainable_params": sum(p.numel() for p in params), "loss": round(float(loss), 4),
            "flags": flags}


def _rss_mb() -> float:
    """Resident memory now (not the peak), in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="CPU-sized: 4 layers, batch 2 x 128")
    parser.add_argument("--modes", nargs="+", default=MODES, choices=MODES + QLORA)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--seq", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (every mode)")
    parser.add_argument("--checkpoint", action="store_true", help="activation checkpointing (every mode)")
    add_repeats(parser)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one mode, print JSON
    args = parser.parse_args()
    shape = dict(SMOLLM2, num_hidden_layers=4) if args.small else dict(SMOLLM2)
    batch = args.batch or (2 if args.small else 16)
    seq = args.seq or (128 if args.small else 1024)
    steps = args.steps or (3 if args.small else 10)
    if args.one:
        print(json.dumps(run_mode(args.one, shape, batch, seq, steps, args.warmup, args.device,
                                  args.compile, args.checkpoint)))
        return
    meta = Meta(["torch", "transformers", "peft"])
    cmd = [sys.executable, __file__, "--batch", str(batch), "--seq", str(seq), "--steps", str(steps),
           "--warmup", str(args.warmup), "--device", args.device]
    cmd += [f for f, on in (("--small", args.small), ("--compile", args.compile),
                            ("--checkpoint", args.checkpoint)) if on]
    # a process per run: peak memory is the mode's own
    runs = interleave({mode: (lambda mode=mode: run_json(cmd + ["--one", mode])) for mode in args.modes},
                      args.repeats)
    results = {}
    for mode, mode_runs in runs.items():
        ok = [r for r in mode_runs if "tokens_per_s" in r]
        if not ok:
            results[mode] = {"error": mode_runs[0]["error"]}
            continue
        results[mode] = {"flags": ok[0]["flags"], "trainable_params": ok[0]["trainable_params"],
                         "tokens_per_s": summary([r["tokens_per_s"] for r in ok], 1),
                         "peak_memory_mb": summary([r["peak_memory_mb"] for r in ok], 1),
                         "loss": ok[0]["loss"], "errors": len(mode_runs) - len(ok)}
        if "process_peak_rss_mb" in ok[0]:
            results[mode]["process_peak_rss_mb"] = summary([r["process_peak_rss_mb"] for r in ok], 1)
            results[mode]["rss_after_build_mb"] = summary([r["rss_after_build_mb"] for r in ok], 1)
    ratios = {}
    for ours, theirs, name in (("ours_lora", "peft_lora", "lora_{}_vs_peft"), ("ours_full", "hf_full", "full_{}_vs_transformers")):
        if "tokens_per_s" in results.get(ours, {}) and "tokens_per_s" in results.get(theirs, {}):
            assert results[ours]["flags"] == results[theirs]["flags"], "sides ran with different flags"
            ratios[name.format("speed")] = ratio(results[ours]["tokens_per_s"], results[theirs]["tokens_per_s"])
            ratios[name.format("memory")] = ratio(results[ours]["peak_memory_mb"], results[theirs]["peak_memory_mb"])
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    memory = ("CUDA max_memory_allocated" if device != "cpu" else
              "peak RSS minus RSS after imports, model, optimizer and inputs (extra_peak_mb)")
    print(meta.dump({"device": device, "torch": torch.__version__, "batch": batch, "seq": seq,
                     "compile": args.compile, "activation_checkpointing": args.checkpoint,
                     "layers": shape["num_hidden_layers"], "steps": steps, "repeats": args.repeats,
                     "peak_memory": memory, "results": results, "ratios": ratios}))


if __name__ == "__main__":
    main()
