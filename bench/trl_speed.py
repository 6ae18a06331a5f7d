"""LoRA DPO and reward-model training, lmforge vs TRL: optimizer steps/s and peak memory (CPU).

    python bench/trl_speed.py                                   # SmolLM2-135M-Instruct, fp32
    python bench/trl_speed.py --tasks dpo --pairs 4 --prompt_len 64 --response_len 64 --steps 5

Both sides start from the same checkpoint (scripts/fetch_smollm2.sh) and train on the same
synthetic pairs: random token ids (never a special token), every prompt `--prompt_len` and
every response `--response_len` tokens long, so no batch holds padding and both sides do the
same work. Held equal: pairs per batch, sequence length, LoRA (rank, alpha, dropout 0, the
seven linear layers of every block), AdamW (lr, betas, eps, no weight decay, foreach),
gradient clipping at 1.0, fp32, gradient checkpointing off, the reference of LoRA DPO (the
base model with the adapter switched off, run every step; neither side precomputes).

- lmforge: what `lmforge dpo --peft lora` and `lmforge rm --peft lora` build (stages/dpo.py,
  stages/rm.py): `load_policy` with LoRA, `make_reference(model, "adapter")` and
  `dpo_objective`, or `RewardModel` and `reward_objective`; `PreferenceBatches`,
  `build_optimizer`, `wrap_model` and the one loop, `train()`. Only the stage's data reading,
  held-out evaluation, checkpoint and report are left out.
- TRL: `DPOTrainer` / `RewardTrainer` given a peft model (`get_peft_model` with the same
  LoRA; task SEQ_CLS for the reward model, whose new score head is trained on both sides)
  and the same AdamW through `optimizers=`. Its DPO reference is then the adapter switched
  off, as lmforge's. TRL's DPO tokenizes text in `__init__`; here it gets the ids directly
  (its `_prepare_dataset` is skipped), which changes nothing inside a training step.
  Both sides log the loss every step (`logging_steps=1`; lmforge: `log_every_steps=1`).

A step is one optimizer step. steps/s = `--steps` over the time from the end of the last
warm-up step to the end of the last step (lmforge: the loop's metrics writes at each step's
end; TRL: `on_step_end`). Peak memory is the process's peak RSS above its RSS once the model,
LoRA, optimizer and data are built, every weight has been read once (transformers maps the
safetensors file, so its weights become resident only when first touched) and freed heap is
handed back to the OS (`extra_peak_mb`; the kernel's high-water mark is reset there through
/proc/self/clear_refs, so loading the checkpoint does not count); the whole-process peak is
reported beside it. Each run is a fresh process; sides alternate within each of `--repeats`
rounds. Goal (issue 11): lmforge at least 1.3x TRL's steps/s at no more peak memory. Prints
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import Meta, add_repeats, interleave, ratio, run_json, summary

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = ROOT / "runs" / "models" / "smollm2" / "hf"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SIDES = ["lmforge", "trl"]
TASKS = ["dpo", "rm"]


def synthetic_pairs(vocab_size: int, n: int, prompt_len: int, response_len: int, seed: int = 0) -> list[dict]:
    """n pairs of random ids in [3, vocab): SmolLM2's special tokens (0-2, pad 2) never occur."""
    g = torch.Generator().manual_seed(seed)
    draw = lambda k: torch.randint(3, vocab_size, (k,), generator=g).tolist()  # noqa: E731
    return [{"prompt_ids": draw(prompt_len), "chosen_ids": draw(response_len), "rejected_ids": draw(response_len)}
            for _ in range(n)]


class StepClock:
    """A MetricsLog stand-in for train(): the time at which each step's train metrics arrive."""

    def __init__(self):
        self.times, self.losses = [], []

    def write(self, step: int, metrics: dict) -> None:
        if "train/loss" in metrics:
            self.times.append(time.perf_counter())
            self.losses.append(metrics["train/loss"])

    def close(self) -> None:
        pass


def build_lmforge(task: str, args, pairs: list[dict]):
    """(run, clock): `run()` trains warmup + steps optimizer steps as the stages do."""
    from lmforge.data.preference import PreferenceBatches, RenderedPair, collate_pairs, collate_shared_prompt
    from lmforge.model.peft import LoRAConfig
    from lmforge.model.reward import RewardModel
    from lmforge.runtime import Runtime
    from lmforge.stages.policy import load_policy, make_reference
    from lmforge.train.loop import LoopConfig, train
    from lmforge.train.objectives.dpo import dpo_objective
    from lmforge.train.objectives.reward import reward_objective
    from lmforge.train.optim import OptimConfig, build_optimizer
    from lmforge.train.parallel import wrap_model

    rt = Runtime.setup("cpu", "float32", args.seed)
    lora = LoRAConfig(r=args.rank, alpha=args.alpha, dropout=0.0, target_modules=TARGETS)
    model, tok = load_policy(args.model, "", "lora", lora, rt)
    pad_id = tok.pad_id or 0
    mask = [False] * args.prompt_len + [True] * args.response_len  # the response is scored
    rendered = [RenderedPair(p["prompt_ids"] + p["chosen_ids"], mask, p["prompt_ids"] + p["rejected_ids"], mask)
                for p in pairs]
    if task == "dpo":
        objective = dpo_objective(args.beta, "sigmoid", make_reference(model, "adapter"))
        collate = collate_pairs
    else:
        torch.manual_seed(args.seed)
        model = RewardModel(model, heads=1, pad_id=pad_id)
        objective, collate = reward_objective(), collate_shared_prompt
    batches = PreferenceBatches(rendered, args.pairs, pad_id, args.seed, collate=collate)
    optim = OptimConfig(lr=args.lr, weight_decay=0.0, beta1=0.9, beta2=0.999, eps=1e-8, grad_clip=1.0,
                        schedule="constant", warmup_steps=0)
    optimizer = build_optimizer(model, optim, rt.device, model.config.hidden_size)
    loop = LoopConfig(max_steps=args.warmup + args.steps, log_every_steps=1, eval_every_steps=10**9, progress=False)
    clock = StepClock()
    wrapped = wrap_model(model, rt, False)
    run = lambda: train(wrapped, objective, batches, optimizer, loop=loop, optim=optim,  # noqa: E731
                        runtime=rt, log=clock)
    return run, clock, sum(p.numel() for p in model.parameters() if p.requires_grad), model


def build_trl(task: str, args, pairs: list[dict], out_dir: str):
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                              TrainerCallback)
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    class Clock(TrainerCallback):
        def __init__(self):
            self.times, self.losses = [], []

        def on_step_end(self, *_, **__):
            self.times.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **__):
            if logs and "loss" in logs:
                self.losses.append(logs["loss"])

    tok = AutoTokenizer.from_pretrained(args.model)
    common = dict(output_dir=out_dir, per_device_train_batch_size=args.pairs, max_steps=args.warmup + args.steps,
                  learning_rate=args.lr, lr_scheduler_type="constant", max_grad_norm=1.0, bf16=False, fp16=False,
                  use_cpu=True, gradient_checkpointing=False, logging_steps=1, save_strategy="no", report_to=[],
                  disable_tqdm=True, seed=args.seed, dataloader_num_workers=0, disable_dropout=True)
    peft_config = LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=TARGETS,
                             task_type="CAUSAL_LM" if task == "dpo" else "SEQ_CLS")
    torch.manual_seed(args.seed)
    if task == "dpo":
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    else:  # the score head is new (random) and trained: peft's SEQ_CLS task keeps it trainable
        model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1, dtype=torch.float32)
        model.config.pad_token_id = tok.pad_token_id
    model = get_peft_model(model, peft_config)  # as TRL does with peft_config=; here so the optimizer can see it
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, betas=(0.9, 0.999),
                                  eps=1e-8, weight_decay=0.0, foreach=True)
    if task == "dpo":
        class PretokenizedDPOTrainer(DPOTrainer):
            def _prepare_dataset(self, dataset, *_, **__):
                return dataset  # already prompt_ids / chosen_ids / rejected_ids

        config = DPOConfig(**common, beta=args.beta, loss_type=["sigmoid"], precompute_ref_log_probs=False,
                           max_length=None)
        trainer = PretokenizedDPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(pairs),
                                         processing_class=tok, optimizers=(optimizer, None))
    else:
        rows = [{"chosen_ids": p["prompt_ids"] + p["chosen_ids"], "rejected_ids": p["prompt_ids"] + p["rejected_ids"]}
                for p in pairs]
        config = RewardConfig(**common, max_length=None, center_rewards_coefficient=None)
        trainer = RewardTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                                processing_class=tok, optimizers=(optimizer, None))
    clock = Clock()
    trainer.add_callback(clock)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)

    return trainer.train, clock, trainable, trainer.model


def run_one(side: str, task: str, args) -> dict:
    torch.manual_seed(args.seed)
    vocab = json.loads((Path(args.model) / "config.json").read_text())["vocab_size"]
    pairs = synthetic_pairs(vocab, args.pairs * (args.warmup + args.steps), args.prompt_len, args.response_len,
                            args.seed)
    with tempfile.TemporaryDirectory() as out_dir:
        build = build_lmforge if side == "lmforge" else (lambda *a: build_trl(*a, out_dir))
        run, clock, trainable, model = build(task, args, pairs)
        _make_resident(model)
        _release_free_heap()
        rss_built = _rss_mb()
        _reset_peak_rss()
        run()
        peak = _peak_rss_mb()
    times = clock.times
    seconds = times[-1] - times[args.warmup - 1] if args.warmup else times[-1] - times[0]
    steps = args.steps if args.warmup else args.steps - 1
    return {"side": side, "task": task, "steps_per_s": round(steps / seconds, 4),
            "extra_peak_mb": round(peak - rss_built, 1), "process_peak_rss_mb": round(peak, 1),
            "rss_after_build_mb": round(rss_built, 1), "trainable_params": trainable,
            "loss": [round(x, 4) for x in clock.losses], "steps_timed": len(times)}


def _rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def _peak_rss_mb() -> float:
    return _status_kb("VmHWM") / 1024


def _status_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


@torch.no_grad()
def _make_resident(model) -> None:
    """Read every weight once. transformers maps safetensors files into memory and a page
    becomes resident (RSS) when first read, i.e. during the first training step: without
    this, TRL's peak would count its own weights (~0.5 GB) as training memory."""
    for t in [*model.parameters(), *model.buffers()]:
        t.sum()


def _release_free_heap() -> None:
    """Hand memory freed while loading back to the OS (glibc keeps it otherwise), so the
    baseline counts live memory only and training cannot reuse a hidden reserve."""
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak_rss() -> None:
    """VmHWM := current RSS (Linux >= 4.0), so the peak counts from here."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(SMOLLM2), help="a Llama HF directory (default: SmolLM2)")
    parser.add_argument("--tasks", nargs="+", default=TASKS, choices=TASKS)
    parser.add_argument("--pairs", type=int, default=4, help="preference pairs per batch (2x sequences)")
    parser.add_argument("--prompt_len", type=int, default=64)
    parser.add_argument("--response_len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=2, help="optimizer steps before the timing starts")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    add_repeats(parser)
    parser.add_argument("--one", nargs=2, metavar=("SIDE", "TASK"), help=argparse.SUPPRESS)  # internal
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one, args)))
        return
    if not Path(args.model, "config.json").exists():
        sys.exit(f"{args.model}: no model (bash scripts/fetch_smollm2.sh)")
    meta = Meta(["torch", "transformers", "peft", "trl", "accelerate"])
    cmd = [sys.executable, __file__, "--model", args.model, "--pairs", str(args.pairs), "--prompt_len",
           str(args.prompt_len), "--response_len", str(args.response_len), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--rank", str(args.rank), "--alpha", str(args.alpha), "--lr",
           str(args.lr), "--beta", str(args.beta), "--seed", str(args.seed)]
    sides = {f"{task}/{side}": (lambda side=side, task=task: run_json(cmd + ["--one", side, task]))
             for task in args.tasks for side in SIDES}
    runs = interleave(sides, args.repeats)
    results, ratios = {}, {}
    for name, side_runs in runs.items():
        ok = [r for r in side_runs if "steps_per_s" in r]
        results[name] = {"errors": len(side_runs) - len(ok)}
        if not ok:
            results[name]["error"] = side_runs[0]["error"]
            continue
        results[name].update(trainable_params=ok[0]["trainable_params"], loss=ok[0]["loss"],
                             steps_per_s=summary([r["steps_per_s"] for r in ok], 4),
                             extra_peak_mb=summary([r["extra_peak_mb"] for r in ok], 1),
                             process_peak_rss_mb=summary([r["process_peak_rss_mb"] for r in ok], 1),
                             rss_after_build_mb=summary([r["rss_after_build_mb"] for r in ok], 1))
    for task in args.tasks:
        ours, theirs = results.get(f"{task}/lmforge", {}), results.get(f"{task}/trl", {})
        ratios[f"{task}_speed_lmforge_vs_trl"] = ratio(ours.get("steps_per_s"), theirs.get("steps_per_s"))
        ratios[f"{task}_memory_lmforge_vs_trl"] = ratio(ours.get("extra_peak_mb"), theirs.get("extra_peak_mb"))
    meta.add(model=args.model, precision="fp32", device="cpu", threads=torch.get_num_threads())
    print(meta.dump({"pairs_per_batch": args.pairs, "sequence_tokens": args.prompt_len + args.response_len,
                     "lora": {"r": args.rank, "alpha": args.alpha, "dropout": 0.0, "target_modules": TARGETS},
                     "optimizer": "AdamW(lr, betas 0.9/0.999, eps 1e-8, no weight decay, foreach), clip 1.0",
                     "gradient_checkpointing": False, "steps": args.steps, "warmup": args.warmup,
                     "repeats": args.repeats, "results": results, "ratios": ratios}))


if __name__ == "__main__":
    main()
