"""The runs small experiments are made of: bundled English and practice arithmetic as
documents, documents -> shards, a short pretraining (from
scratch or from a model), a short SFT and GRPO, and greedy answers to text prompts."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from lmforge.config import from_dict
from lmforge.data.documents import ReadStats, read_documents
from lmforge.infer.engine import generate
from lmforge.rewards.tasks import arithmetic_key, in_split
from lmforge.stages.grpo import GRPOConfig, grpo
from lmforge.stages.pretrain import PretrainConfig, pretrain
from lmforge.stages.sft import SFTConfig, sft
from lmforge.stages.tokenize import TokenizeConfig, tokenize
from lmforge.synth.stage import write_jsonl


def english_passages(paths: list[str], chars: int) -> list[dict]:
    """The first `chars` characters of the bundled English documents, in 2,000-character passages."""
    passages, total = [], 0
    for path in paths:
        for doc in read_documents(path, "text", "raise", ReadStats()):
            for start in range(0, len(doc["text"]), 2000):
                if total < chars:
                    passages.append({"id": f"en{len(passages)}", "text": doc["text"][start:start + 2000]})
                    total += len(passages[-1]["text"])
    return passages


def arithmetic_docs(n: int, max_operand: int, write: Callable[[int, str, int, int], str], prefix: str) -> list[dict]:
    """n lines `write(a, op, b, i)` about "a ± b", 20 to a document. Starts run past the task's
    range (and below 0, where subtraction goes); an in-range one is a problem, so it is drawn
    only from the training split."""
    rng = random.Random(0)
    lines = []
    while len(lines) < n:
        a, op, b = rng.randint(-max_operand, 2 * max_operand), rng.choice("+-"), rng.randint(0, max_operand + 2)
        if 0 <= a <= max_operand and b <= max_operand and not in_split(arithmetic_key(a, op, b), "train"):
            continue
        lines.append(write(a, op, b, len(lines)))
    return [{"id": f"{prefix}{i}", "text": "\n".join(lines[i:i + 20])} for i in range(0, len(lines), 20)]


def tokenize_docs(data: Path, name: str, docs: list[dict]) -> Path:
    """data/NAME.jsonl and its shards data/shards_NAME (at least ~5 documents held out)."""
    write_jsonl(data / f"{name}.jsonl", docs)
    tokenize(TokenizeConfig(input=[str(data / f"{name}.jsonl")], tokenizer=str(data / "tokenizer"),
                            output=str(data / f"shards_{name}"), val_fraction=max(0.05, 5 / len(docs))))
    return data / f"shards_{name}"


def train_small(run_dir: Path, shards: Path, seed: int, steps: int, depth: int, seq_len: int, batch_size: int,
                sample_prompt: str, init_from: Path | None = None) -> Path:
    """`lmforge pretrain` for `steps` steps (continuing from init_from when given); returns
    the model directory."""
    pretrain(from_dict(PretrainConfig, {
        "run_dir": str(run_dir), "depth": depth, "seed": seed, "tensorboard": False, "init_from": str(init_from or ""),
        "data": {"shards": str(shards), "seq_len": seq_len, "batch_size": batch_size},
        "optim": {"warmup_steps": min(20, steps // 5)},
        "loop": {"max_steps": steps, "log_every_steps": 10, "progress": False},
        "eval": {"every_steps": steps, "max_batches": 4, "sample_prompts": [sample_prompt], "sample_tokens": 8}}))
    return run_dir / "model"


def sft_small(run_dir: Path, model: Path, chat_file: Path, seed: int, steps: int, seq_len: int, batch_size: int,
              sample_question: str, lr: float = 1e-3, val_fraction: float = 0.05, eval_tasks: list[str] = (),
              eval_every_steps: int = 0) -> Path:
    """`lmforge sft` (full fine-tuning, packed rows, the demo's learning rate) for `steps`
    steps on one chat JSONL file, scoring `eval_tasks` every `eval_every_steps` (into
    metrics.jsonl); returns the model directory."""
    sft(from_dict(SFTConfig, {
        "run_dir": str(run_dir), "model": str(model), "seed": seed, "tensorboard": False,
        "eval_tasks": [str(t) for t in eval_tasks],
        "data": {"train": [str(chat_file)], "seq_len": seq_len, "batch_size": batch_size, "pack": True,
                 "val_fraction": val_fraction},
        "optim": {"lr": lr, "weight_decay": 0.0, "schedule": "cosine", "warmup_steps": min(20, steps // 5)},
        "loop": {"max_steps": steps, "log_every_steps": 10, "progress": False},
        "eval": {"every_steps": eval_every_steps or steps, "sample_questions": [sample_question],
                 "sample_tokens": 48}}))
    return run_dir / "model"


def grpo_small(run_dir: Path, model: Path, seed: int, settings: dict) -> dict:
    """`lmforge grpo` from `model` with `settings` (the stage's own config fields), without a
    progress bar or TensorBoard; returns the stage's summary (held-out accuracy before/after)."""
    loop = {"log_every_steps": 1, "progress": False, **settings.get("loop", {})}
    return grpo(from_dict(GRPOConfig, {"run_dir": str(run_dir), "model": str(model), "seed": seed,
                                       "tensorboard": False, **settings, "loop": loop}))


def first_lines(model, tok, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy continuation of each text prompt (after BOS), up to its first newline."""
    start = tok.bos_id if tok.bos_id is not None else tok.eos_id
    ids = [[start, *tok.encode(p)] for p in prompts]
    completions = generate(model, ids, max_new_tokens=max_new_tokens, pad_id=tok.pad_id or 0).tokens
    return [tok.decode(c, skip_special=True).split("\n")[0] for c in completions]
