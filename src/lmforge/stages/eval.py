"""`lmforge eval MODEL --task T [--task T2 ...] --output DIR`: score a model on tasks.

    lmforge eval runs/demo/sft/model --task data/eval/compare_test.jsonl --output runs/demo/eval/sft
    lmforge eval runs/smollm2 --task data/eval/moby_cloze.jsonl --task humaneval --samples 10 --pass_k 1 10
    lmforge eval runs/demo/pretrain/model --task data/corpus_val.txt --chat false
    lmforge eval runs/demo/grpo/model --task prompts.jsonl --against runs/demo/sft/model --judge runs/smollm2

MODEL is anything `load_pretrained` opens (model dirs, HF dirs, GGUF files, adapter dirs).
A task is a built-in name, a canonical JSONL file, a YAML task file or a text file (bits
per byte); see `lmforge.eval.tasks`. DIR receives results.json (every task's metrics, the
model, lmforge's version and the seconds taken) and TASK.jsonl per task with one row per
example: each choice's summed log-likelihood (multiple choice), or the completion, the
extracted answer and whether it matched (generative), or both answers and the judge's two
verdicts (pairwise: MODEL is A, --against is B; win rate = A's wins + half its ties).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Literal

import torch

from lmforge.model.quantize import Scheme
from lmforge.eval.run import EvalOptions, evaluate_task
from lmforge.errors import InputError
from lmforge.eval.tasks import load_task
from lmforge.model.load import load_pretrained
from lmforge.runtime import Runtime
from lmforge.synth.backend import open_backend


@dataclass
class EvalConfig:
    model: str = ""  # model directory, .gguf file, adapter directory or hub name
    task: list[str] = field(default_factory=list)  # task names / files (repeat --task)
    output: str = "runs/eval"  # results.json and TASK.jsonl go here
    chat: Literal["auto", True, False] = "auto"  # generative prompts: chat template (true) or
    #   few-shot text (false, for base models); auto = chat when the tokenizer has a template
    limit: int = 0  # evaluate only the first N examples of each task (0 = all)
    max_new_tokens: int = 0  # generative tasks: answer length cap (0 = each task's own)
    batch_size: int = 32  # requests per forward pass
    max_len: int = 1024  # bits per byte: tokens per window
    samples: int = 1  # code: completions per problem
    temperature: float = 0.0  # code: sampling temperature (use > 0 with samples > 1)
    pass_k: list[int] = field(default_factory=lambda: [1])  # code: report pass@k for these k
    against: str = ""  # pairwise tasks: the model MODEL is compared with
    judge: str = ""  # pairwise tasks: the judge, a model lmforge loads or (with judge_url) an endpoint's model name
    judge_url: str = ""  # an OpenAI-compatible endpoint for the judge (http://host:port/v1)
    judge_key_env: str = "OPENAI_API_KEY"  # environment variable holding the endpoint's API key
    answer_tokens: int = 256  # pairwise tasks: longest answer each model gives
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"  # weights dtype: float32 | bfloat16
    quantize: Scheme = "none"  # weight-only quantization for inference: none | int8 | int4


def evaluate(cfg: EvalConfig) -> dict:
    if not cfg.model or not cfg.task:
        raise InputError("usage: lmforge eval MODEL --task TASK [--task TASK ...] [--output DIR]")
    tasks = [load_task(t) for t in cfg.task]  # a bad task file fails before the model loads
    rt = Runtime.setup(cfg.device, "float32", cfg.seed)
    model, tok = load_pretrained(cfg.model, rt.device, getattr(torch, cfg.dtype),
                                  quantize=cfg.quantize)
    chat = tok.chat_template is not None if cfg.chat == "auto" else cfg.chat
    options = EvalOptions(chat=chat, batch_size=cfg.batch_size, max_len=cfg.max_len, samples=cfg.samples,
                          temperature=cfg.temperature, pass_k=tuple(cfg.pass_k), seed=cfg.seed,
                          answer_tokens=cfg.answer_tokens)
    if any(t.kind == "pairwise" for t in tasks):
        if not cfg.against or not cfg.judge:
            raise InputError("pairwise tasks need --against MODEL and --judge MODEL (or --judge_url URL)")
        options.against = open_backend(cfg.against, device=rt.device)
        options.judge = open_backend(cfg.judge, cfg.judge_url, cfg.judge_key_env, device=rt.device)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    results = {"model": cfg.model, "lmforge_version": metadata.version("lmforge"), "chat": chat,
               "tasks": {}}
    for task in tasks:
        if cfg.limit:
            task.examples = task.examples[:cfg.limit]
        if cfg.max_new_tokens:
            task.max_new_tokens = cfg.max_new_tokens
        start = time.perf_counter()
        metrics, rows = evaluate_task(model, tok, task, options)
        seconds = time.perf_counter() - start
        results["tasks"][task.name] = {"kind": task.kind, "source": task.source, **metrics,
                                       "seconds": round(seconds, 2)}
        with open(out / f"{task.name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
        rt.print(f"{task.name} ({task.kind}, {len(rows)} examples, {seconds:.1f} s): {shown}")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    rt.print(f"results: {out / 'results.json'}")
    return results
