"""GRPO benchmark: held-out accuracy before/after and the step-time breakdown, as JSON.

    python bench/grpo.py                                   # CPU smoke run: a random tiny model
    python bench/grpo.py --model runs/models/smollm2/hf --task word --steps 100 \\
        --prompts 16 --group 8 --max_new_tokens 256 --lr 1e-6    # H100: SmolLM2-135M-Instruct

Runs the `lmforge grpo` stage itself (so the numbers describe what users run) and prints
one JSON object: accuracy before/after on held-out problems, rollout throughput, the share
of step time spent generating, the device, and bench/common.py's metadata (revision, load
average before/after, versions, command). One long training run: no repeats.
Record results in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import Meta

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def tiny_model_dir(out: Path) -> str:
    """A random 2-layer model with a small BPE tokenizer: the pipeline without the skill."""
    from lmforge.model.transformer import ModelConfig, Transformer
    from lmforge.rewards.tasks import arithmetic_problems
    from lmforge.stages.common import export_model
    from lmforge.tokenizer import Tokenizer, train_bpe

    texts = [p["messages"][0]["content"] + " " + p["solution"] for p in arithmetic_problems(500, split="all")]
    tok = Tokenizer.from_trained(train_bpe(texts * 4, vocab_size=400, show_progress=False))
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=448, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                    num_attention_heads=2, num_key_value_heads=2, head_dim=32,
                                    max_position_embeddings=512))
    export_model(model, tok, out)
    return str(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="", help="model dir / .gguf (default: a random tiny model)")
    ap.add_argument("--task", default="arithmetic", help="arithmetic | word | reasoning_gym:gsm_symbolic")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=4, help="prompts per step")
    ap.add_argument("--group", type=int, default=4, help="completions per prompt")
    ap.add_argument("--micro_batch", type=int, default=0, help="completions per training micro-batch (0 = all)")
    ap.add_argument("--max_new_tokens", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=1.0, help="rollout sampling temperature")
    ap.add_argument("--eval_problems", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--kl_coef", type=float, default=0.0)
    ap.add_argument("--peft", default="none", choices=["none", "lora"])
    ap.add_argument("--compile", action="store_true", help="compiled decode step for rollouts and eval")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--run_dir", default="")
    args = ap.parse_args()
    meta = Meta(["torch", "transformers", "peft", "reasoning-gym"])

    from lmforge.config import from_dict
    from lmforge.stages.grpo import GRPOConfig, grpo

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or tiny_model_dir(Path(tmp) / "tiny")
        cfg = from_dict(GRPOConfig, {
            "run_dir": args.run_dir or str(Path(tmp) / "run"), "model": model, "peft": args.peft,
            "task": {"name": args.task, "train_problems": max(64, args.steps * args.prompts),
                     "eval_problems": args.eval_problems, "eval_max_new_tokens": args.max_new_tokens},
            "rollout": {"group_size": args.group, "prompts_per_batch": args.prompts,
                        "max_new_tokens": args.max_new_tokens, "compile": args.compile,
                        "temperature": args.temperature,
                        "micro_batch_size": args.micro_batch},
            "kl_coef": args.kl_coef, "optim": {"lr": args.lr},
            "loop": {"max_steps": args.steps, "progress": False, "eval_every_steps": 10**9,
                     "log_every_steps": 1},
            "device": args.device, "dtype": args.dtype, "tensorboard": False})
        t0 = time.perf_counter()
        summary = grpo(cfg)
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for line in (Path(cfg.run_dir) / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train/loss" in r]
    completions = args.steps * args.prompts * args.group
    gen_tokens = sum(r["train/completion_tokens"] for r in train_rows) * args.prompts * args.group
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    print(meta.dump({
        "bench": "grpo", "model": args.model or "random-tiny", "task": args.task, "device": device,
        "steps": args.steps, "prompts_per_step": args.prompts, "compile_decode": args.compile, "group_size": args.group,
        "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "peft": args.peft,
        "lr": args.lr,
        "accuracy_before": summary["accuracy_before"], "accuracy_after": summary["accuracy_after"],
        "eval_problems": summary["eval_problems"],
        "mean_step_seconds": summary["mean_step_seconds"], "generate_share": summary["generate_share"],
        "rollout_tokens_per_s": gen_tokens / max(1e-9, summary["generate_seconds_total"]),
        "completions": completions, "wall_seconds": wall,
        "final_reward_mean": summary["final_reward_mean"]}))


if __name__ == "__main__":
    main()
