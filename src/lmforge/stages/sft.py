"""`lmforge sft`: supervised fine-tuning on chat data — full, LoRA, Adapter or Prompt Tuning.

    lmforge sft configs/sft_tiny.yaml                        # the demo: our pretrained model
    lmforge sft configs/sft_smollm2_lora.yaml --lora.r 16    # a real model, LoRA
    lmforge sft configs/sft_tiny.yaml --peft adapter         # Houlsby adapters

config -> model (ours, an HF directory, a .gguf or a hub name) -> chat-contract pre-flight
-> PEFT (freezes the base) -> chat batches (labels only on assistant turns) -> the one
`train()` with `lm_objective`. SFT is not a loop of its own: it is next-token prediction
with masked labels. The run directory receives model/ (a full HF checkpoint, or for PEFT
the adapter in PEFT's format + tokenizer), merged/ (LoRA merged into the base, loadable by
anything), metrics, report.md and summary.json (trainable parameters, peak memory).
"""

from __future__ import annotations

import json
import random
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from lmforge.config import ConfigError
from lmforge.data.chat import ChatReadStats, read_conversations
from lmforge.data.sft import ChatBatches, iter_chat_eval_batches, tokenize_conversations
from lmforge.errors import InputError
from lmforge.eval.loss import evaluate_loss, token_byte_lengths
from lmforge.model.peft import (AdapterConfig, LoRAConfig, PeftMethod, PromptTuningConfig,
                                apply_peft, count_parameters, unwrap)
from lmforge.report import plot_series, record_run, write_report
from lmforge.runtime import Runtime
from lmforge.stages.common import RunOptions, task_evaluators
from lmforge.stages.check import check_chat_contract, generation_stop_ids
from lmforge.model.load import load_pretrained
from lmforge.model.quantize import Scheme
from lmforge.stages.policy import export_merged, quantize_base, policy_checkpointing
from lmforge.tokenizer.chat import ChatTemplateError
from lmforge.train.loop import LoopConfig, Periodic, train
from lmforge.train.metrics import MetricsLog, read_metrics
from lmforge.train.objectives.lm import lm_objective
from lmforge.train.optim import OptimConfig, build_optimizer
from lmforge.train.parallel import Parallel, check_parallel, checkpoint_activations, wrap_model


@dataclass
class ChatDataConfig:
    train: list[str] = field(default_factory=lambda: ["data/chat/train.jsonl"])  # chat JSONL files/dirs
    val: list[str] = field(default_factory=list)  # held-out chat files (default: split off train)
    val_fraction: float = 0.05  # share of train held out when `val` is empty
    seq_len: int = 256  # max tokens per row (longer conversations are cut, and counted)
    batch_size: int = 16  # rows per micro-batch
    pack: bool = False  # concatenate conversations per row, each attending only to itself
    fixed_shape: bool = False  # pad every batch to seq_len (static shapes for compile)
    train_on: Literal["all", "last"] = "all"  # which assistant turns carry loss
    on_error: Literal["raise", "skip"] = "raise"  # malformed records: fail or count and skip


@dataclass
class SFTEvalConfig:
    every_steps: int = 50  # validation loss cadence
    max_batches: int = 4  # validation batches per evaluation
    sample_questions: list[str] = field(default_factory=lambda: ["What is 3 + 4?", "Hi, how are you?"])
    sample_tokens: int = 48  # max new tokens per sample answer
    sample_temperature: float = 0.0  # 0 = greedy


@dataclass
class SFTConfig(RunOptions):
    run_dir: str = "runs/sft"  # where the model, metrics and report go
    model: str = "runs/demo/pretrain/model"  # model dir, .gguf file or hub name to fine-tune
    peft: PeftMethod = "none"  # none (full fine-tuning) | lora | adapter | prompt
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    quantize: Scheme = "none"  # QLoRA: int8 | int4 frozen base under the PEFT method (needs peft != none)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    prompt: PromptTuningConfig = field(default_factory=PromptTuningConfig)
    data: ChatDataConfig = field(default_factory=ChatDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    eval: SFTEvalConfig = field(default_factory=SFTEvalConfig)
    activation_checkpointing: bool = False  # recompute each layer in backward (less memory)
    export_merged: bool = True  # LoRA: also write the merged model to run_dir/merged
    check: bool = True  # run the chat-contract pre-flight (lmforge check) first
    parallel: Parallel = "ddp"  # with several processes (torchrun): ddp (whole replicas) | fsdp (FSDP2 shards)

    def __post_init__(self):
        check_parallel(self)


def sft(cfg: SFTConfig):
    if cfg.data.pack and cfg.peft == "prompt":  # virtual tokens would need their own mask rows
        raise ConfigError("data.pack does not combine with peft=prompt; turn one off")
    rt = Runtime.setup(cfg.device, cfg.dtype, cfg.seed)
    run_dir = Path(cfg.run_dir)
    model, tok = load_pretrained(cfg.model, rt.device)
    model = quantize_base(model, cfg.quantize, cfg.peft)
    train_convs, val_convs, read_stats = _read_chat_data(cfg.data, cfg.seed)
    if cfg.check:
        _preflight(tok, train_convs, cfg.model)
    examples, stats = tokenize_conversations(tok, train_convs, cfg.data.seq_len, cfg.data.train_on)
    val_examples, _ = tokenize_conversations(tok, val_convs, cfg.data.seq_len, cfg.data.train_on)
    rt.print(f"chat data: {stats.summary()}; {read_stats.skipped} malformed records skipped; "
             f"{len(val_examples)} validation conversations")

    init_ids = tok.encode(cfg.prompt.init_text) if cfg.prompt.init_text else None
    model = apply_peft(model, cfg.peft, cfg.lora, cfg.adapter, cfg.prompt, init_ids).to(rt.device)
    if cfg.activation_checkpointing:
        checkpoint_activations(unwrap(model))
    trainable, total = count_parameters(model)
    rt.print(f"model: {total / 1e6:.2f}M parameters, {trainable / 1e6:.3f}M trainable "
             f"({100 * trainable / total:.2f}%, peft={cfg.peft})")
    record_run(run_dir, cfg, rt, data_files=[Path(p) for p in cfg.data.train if Path(p).is_file()])

    batches = ChatBatches(examples, cfg.data.batch_size, cfg.data.seq_len, tok.pad_id or 0,
                          seed=cfg.seed, pack=cfg.data.pack, fixed_shape=cfg.data.fixed_shape,
                          rank=rt.rank, world_size=rt.world_size)
    evaluators = []
    if val_examples:
        token_bytes = token_byte_lengths(tok, unwrap(model).config.vocab_size)
        evaluators.append(Periodic(cfg.eval.every_steps, lambda step: evaluate_loss(
            model, iter_chat_eval_batches(val_examples, cfg.data.batch_size, tok.pad_id or 0,
                                          cfg.eval.max_batches), token_bytes, rt)))
    evaluators += task_evaluators(cfg.eval_tasks, model, tok, cfg.eval.every_steps, chat=True)
    before = sample_answers(model, tok, cfg.eval)
    log = MetricsLog(run_dir, cfg.tensorboard, cfg.wandb_project or None, rt.is_main)
    train_model = wrap_model(model, rt, cfg.compile, cfg.parallel)  # before the optimizer: FSDP2 shards in place
    optimizer = build_optimizer(model, cfg.optim, rt.device, unwrap(model).config.hidden_size)
    if rt.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(rt.device)
    base = str(Path(cfg.model).resolve()) if Path(cfg.model).exists() else cfg.model
    result = train(train_model, lm_objective, batches, optimizer,
                   loop=cfg.loop, optim=cfg.optim, runtime=rt, log=log,
                   checkpoint=policy_checkpointing(model, tok, run_dir / "model", cfg.peft, base),
                   evaluators=evaluators, resume=cfg.resume)
    log.close()
    peak_mb = peak_memory_mb(rt.device)
    after = sample_answers(model, tok, cfg.eval)
    for question, answer in zip(cfg.eval.sample_questions, after):
        rt.print(f"Q: {question!r} -> A: {answer!r}")
    if rt.is_main and cfg.peft == "lora" and cfg.export_merged:
        export_merged(model, tok, run_dir / "merged", cfg.model)
    if rt.is_main:
        summary = {"step": result.step, "final_loss": result.losses[-1] if result.losses else None,
                   "peft": cfg.peft, "trainable_params": trainable, "total_params": total,
                   "peak_memory_mb": peak_mb, "memory_kind": _memory_kind(rt.device),
                   "data": vars(stats), "skipped_records": read_stats.skipped,
                   "samples_before": dict(zip(cfg.eval.sample_questions, before)),
                   "samples_after": dict(zip(cfg.eval.sample_questions, after))}
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        _write_sft_report(run_dir, cfg, summary)
    return result


@torch.no_grad()
def sample_answers(model, tok, ev: SFTEvalConfig) -> list[str]:
    from lmforge.infer.chat import ChatSession
    from lmforge.infer.engine import Sampling

    was_training = model.training
    answers = []
    for question in ev.sample_questions:
        session = ChatSession(model, tok, sampling=Sampling(temperature=ev.sample_temperature),
                              max_new_tokens=ev.sample_tokens, seed=0)
        answers.append(session.send(question))
    model.train(was_training)
    return answers


def peak_memory_mb(device: torch.device) -> float:
    """GPU: peak allocated by torch. CPU: the process's peak resident set (all of it)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_kind(device: torch.device) -> str:
    return "cuda max_memory_allocated" if device.type == "cuda" else "process peak RSS"


def _read_chat_data(data: ChatDataConfig, seed: int):
    stats = ChatReadStats()
    train_convs = read_conversations(data.train, data.on_error, stats)
    if not train_convs:
        raise InputError("no conversations to train on (empty files?)", ", ".join(data.train))
    if data.val:
        return train_convs, read_conversations(data.val, data.on_error, stats), stats
    shuffled = list(train_convs)
    random.Random(seed).shuffle(shuffled)
    n_val = int(len(shuffled) * data.val_fraction)
    return shuffled[n_val:], shuffled[:n_val], stats


def _preflight(tok, conversations: list, model_source: str) -> None:
    from lmforge.stages.check import SAMPLE_CONVERSATIONS

    model_dir = Path(model_source) if Path(model_source).is_dir() else None
    report = check_chat_contract(tok, SAMPLE_CONVERSATIONS + conversations[:20],
                                 generation_stop_ids(model_dir))
    if not report.ok:
        raise ChatTemplateError("chat-contract pre-flight failed (lmforge check explains):\n  "
                                + "\n  ".join(report.problems))


def _write_sft_report(run_dir: Path, cfg: SFTConfig, summary: dict) -> None:
    rows = read_metrics(run_dir / "metrics.jsonl")
    train_rows = [r for r in rows if "train/loss" in r]
    val_rows = [r for r in rows if "val/loss" in r]
    data = summary["data"]
    lines = [f"- base model: {cfg.model}; method: {cfg.peft}",
             f"- trainable parameters: {summary['trainable_params']:,} of "
             f"{summary['total_params']:,} ({100 * summary['trainable_params'] / summary['total_params']:.2f}%)",
             f"- peak memory: {summary['peak_memory_mb']:.0f} MB ({summary['memory_kind']})",
             f"- steps: {summary['step']}, final train loss {summary['final_loss']}",
             f"- data: {data['examples']} conversations, {data['trained_tokens']:,} trained tokens, "
             f"{data['truncated']} truncated, {data['dropped_no_target']} dropped, "
             f"{summary['skipped_records']} malformed skipped",
             "", "| question | before | after |", "|---|---|---|"]
    for q in summary["samples_after"]:
        cell = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731
        lines.append(f"| {cell(q)} | {cell(summary['samples_before'][q])} | "
                     f"{cell(summary['samples_after'][q])} |")
    series = {"train": ([r["step"] for r in train_rows], [r["train/loss"] for r in train_rows]),
              "val": ([r["step"] for r in val_rows], [r["val/loss"] for r in val_rows])}
    write_report(run_dir, "SFT report", lines, {"loss.png": plot_series(series, "step", "loss")})
