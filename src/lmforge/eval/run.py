"""Run one task on one model: the runner behind `lmforge eval` and every periodic evaluator.

    metrics, rows = evaluate_task(model, tok, load_task("data/eval/x.jsonl"), EvalOptions())
    evaluator = task_evaluator(model, tok, ["data/eval/x.jsonl"], EvalOptions())   # for train()

Tasks build requests (`eval/tasks.py`), the kind's module executes them on the model in
length-sorted batches (multiple choice shares each context's forward pass among its
choices; generation goes through the KV-cache engine), and metrics are plain functions of
the per-example rows. `rows` is what `lmforge eval` writes to TASK.jsonl.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lmforge.eval.accuracy import greedy_accuracy
from lmforge.eval.generative import answer_reward, extract, fill_template, render_prompts
from lmforge.eval.tasks import Task, load_task
from lmforge.stages.common import stop_ids


@dataclass
class EvalOptions:
    chat: bool = True  # generative prompts through the chat template (False: few-shot text)
    batch_size: int = 32  # requests per forward pass
    max_len: int = 1024  # bits per byte: tokens per window
    samples: int = 1  # code: completions per problem (pass@k needs samples >= k)
    temperature: float = 0.0  # code: sampling temperature when samples > 1
    pass_k: tuple[int, ...] = (1,)  # code: the k of pass@k
    seed: int = 0
    answer_tokens: int = 256  # pairwise: longest answer
    against: object = None  # pairwise: the other model's back end (lmforge.synth.backend)
    judge: object = None  # pairwise: the judge's back end


def evaluate_task(model, tok, task: Task, options: EvalOptions) -> tuple[dict, list[dict]]:
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return _RUNNERS[task.kind](model, tok, task, options)
    finally:
        model.train(was_training)


def task_evaluator(model, tok, specs: list[str], options: EvalOptions):
    """A `Periodic` evaluator for the training loop: fn(step) -> {"eval/TASK/metric": value}."""
    tasks = [load_task(s) for s in specs]  # load (and validate) once, before training starts

    def evaluate(step: int) -> dict:
        out = {}
        for task in tasks:
            metrics, _ = evaluate_task(model, tok, task, options)
            out.update({f"eval/{task.name}/{k}": v for k, v in metrics.items()
                        if isinstance(v, (int, float))})
        return out

    return evaluate


def _generative(model, tok, task: Task, options: EvalOptions) -> tuple[dict, list[dict]]:
    prompts = render_prompts(tok, task, options.chat, options.seed)
    result = greedy_accuracy(model, prompts, task.examples, lambda ids: tok.decode(ids, skip_special=True),
                             answer_reward(task.extract, task.match), task.max_new_tokens,
                             options.batch_size, stop_ids=set(stop_ids(tok)), pad_id=tok.pad_id or 0)
    rows = [{"prompt": r["prompt"], "answer": r["answer"], "completion": c,
             "extracted": extract(c, task.extract), "correct": bool(s)}
            for r, c, s in zip(task.examples, result["completions"], result["scores"])]
    return {"exact_match": result["accuracy"], "exact_match_stderr": result["stderr"], "n": result["n"]}, rows


def _bits_per_byte(model, tok, task: Task, options: EvalOptions) -> tuple[dict, list[dict]]:
    """Summed cross-entropy in bits over the raw bytes of the scored tokens. The text is cut
    into windows of max_len + 1 tokens that overlap by one, so every token but the first is
    scored once, with the context of its own window."""
    from lmforge.eval.loss import token_byte_lengths
    from lmforge.train.head_loss import model_token_logprobs

    token_bytes = token_byte_lengths(tok, model.config.vocab_size)
    device = next(model.parameters()).device
    rows, total_nats, total_bytes, total_tokens = [], 0.0, 0, 0
    for record in task.examples:
        ids = torch.tensor(tok.encode(record["text"]))
        windows = [ids[i:i + options.max_len + 1] for i in range(0, max(1, len(ids) - 1), options.max_len)]
        for w in windows:
            if len(w) < 2:
                continue
            x, y = w[:-1][None].to(device), w[1:][None].to(device)
            nats = -float(model_token_logprobs(model, x, y).sum())
            total_nats, total_bytes = total_nats + nats, total_bytes + int(token_bytes[w[1:]].sum())
            total_tokens += len(w) - 1
        rows.append({"tokens": len(ids), "bytes": len(record["text"].encode("utf-8"))})
    if total_tokens == 0:
        raise ValueError(f"task {task.name}: the text is shorter than two tokens")
    return {"bits_per_byte": total_nats / math.log(2) / max(1, total_bytes),
            "loss": total_nats / total_tokens, "tokens": total_tokens, "bytes": total_bytes}, rows


def _multiple_choice(model, tok, task: Task, options: EvalOptions) -> tuple[dict, list[dict]]:
    from lmforge.eval.multiple_choice import multiple_choice_metrics, score_multiple_choice

    examples = [{**r, "context": fill_template(task.template, r, "context")} for r in task.examples]
    # On CPU, several choices packed per example make small batches fastest (bench/eval_harness.py).
    rows = score_multiple_choice(model, tok, examples, batch_size=min(options.batch_size, 8))
    return multiple_choice_metrics(rows), rows


def _code(model, tok, task: Task, options: EvalOptions) -> tuple[dict, list[dict]]:
    from lmforge.eval.code import evaluate_model_on_code

    return evaluate_model_on_code(model, tok, task, options)


def _pairwise(model, tok, task: Task, options: EvalOptions) -> tuple[dict, list[dict]]:
    from lmforge.eval.judge import pairwise_compare
    from lmforge.synth.backend import LocalBackend

    if options.against is None or options.judge is None:
        raise ValueError(f"task {task.name} is pairwise: give --against MODEL and --judge MODEL (or --judge_url)")
    conversations = [[{"role": "user", "content": fill_template(task.template, r)}] for r in task.examples]
    ours = LocalBackend(model, tok, options.batch_size, options.seed).chat(conversations, options.answer_tokens)
    theirs = options.against.chat(conversations, options.answer_tokens)
    return pairwise_compare([c[0]["content"] for c in conversations], ours, theirs, options.judge)


_RUNNERS = {"generative": _generative, "pairwise": _pairwise, "bpb": _bits_per_byte, "multiple_choice": _multiple_choice,
            "code": _code}
