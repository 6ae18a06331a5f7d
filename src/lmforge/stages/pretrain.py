"""`lmforge pretrain`: token shards -> base model.

    lmforge pretrain configs/tiny.yaml --loop.max_steps 300

config -> model -> batches -> objective -> train(); everything algorithmic lives in
train/loop.py and train/objectives/lm.py. The run directory receives config.yaml,
run.json, metrics.jsonl, tensorboard/, model/ (an HF checkpoint + trainer_state/) and
report.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmforge.config import require
from lmforge.data.loader import PackedBatches, TokenShards, iter_eval_batches
from lmforge.errors import InputError
from lmforge.eval.loss import evaluate_loss, token_byte_lengths
from lmforge.infer.engine import Sampling, generate
from lmforge.model.hub import load_model
from lmforge.model.transformer import ModelConfig, Transformer
from lmforge.report import plot_series, record_run, write_report
from lmforge.runtime import Runtime
from lmforge.stages.common import RunOptions, model_checkpointing, stop_ids, task_evaluators
from lmforge.tokenizer import Tokenizer
from lmforge.train.loop import LoopConfig, Periodic, train
from lmforge.train.metrics import MetricsLog, read_metrics
from lmforge.train.objectives.lm import lm_objective
from lmforge.train.optim import OptimConfig, build_optimizer, default_lr
from lmforge.train.parallel import Parallel, check_parallel, is_sharded, wrap_model


@dataclass
class DataConfig:
    shards: str = "runs/demo/shards"  # directory written by `lmforge tokenize`
    seq_len: int = 256  # tokens per training sequence
    batch_size: int = 16  # sequences per micro-batch (per rank)

    def __post_init__(self):
        require(self.seq_len >= 1, "seq_len", ">= 1", self.seq_len)
        require(self.batch_size >= 1, "batch_size", ">= 1", self.batch_size)


@dataclass
class EvalConfig:
    every_steps: int = 100  # validation loss / bpb cadence
    max_batches: int = 8  # validation batches per evaluation
    sample_every_steps: int = 0  # print samples every N steps (0 = before and after only)
    sample_prompts: list[str] = field(default_factory=lambda: ["The", "Call me"])
    sample_tokens: int = 40  # new tokens per sample
    sample_temperature: float = 0.8


@dataclass
class PretrainConfig(RunOptions):
    run_dir: str = "runs/pretrain"  # where the model, metrics and report go
    depth: int = 4  # the one dial: derives width, heads, MLP and LR (0 = use model.* as given)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tokenizer: str = ""  # tokenizer dir (default: the one recorded in the shards' index)
    init_from: str = ""  # continue from an existing model directory
    parallel: Parallel = "ddp"  # with several processes (torchrun): ddp (whole replicas) | fsdp (FSDP2 shards)

    def __post_init__(self):
        check_parallel(self)


def apply_depth_preset(cfg: PretrainConfig, vocab_size: int) -> None:
    """nanochat's dial: width 64·depth; head dim 64 below d=768, 128 from there; SwiGLU
    hidden ≈ 8/3·width rounded up to 128; AdamW LR ∝ 1/sqrt(width)."""
    m = cfg.model
    m.vocab_size = -(-vocab_size // 64) * 64  # multiple of 64 for fast matmuls
    if cfg.depth <= 0:
        return
    m.num_hidden_layers = cfg.depth
    m.hidden_size = 64 * cfg.depth
    m.head_dim = 128 if m.hidden_size >= 768 else 64
    m.num_attention_heads = m.num_key_value_heads = m.hidden_size // m.head_dim
    m.intermediate_size = -(-(8 * m.hidden_size // 3) // 128) * 128
    m.max_position_embeddings = max(m.max_position_embeddings, cfg.data.seq_len)
    if cfg.optim.lr is None:
        cfg.optim.lr = default_lr(m.hidden_size)


def pretrain(cfg: PretrainConfig):
    rt = Runtime.setup(cfg.device, cfg.dtype, cfg.seed)
    run_dir = Path(cfg.run_dir)
    train_shards = TokenShards(cfg.data.shards, "train")
    val_shards = TokenShards(cfg.data.shards, "val")
    if len(val_shards.window_starts(cfg.data.seq_len)[1]) == 0:  # fail now, not at the first evaluation
        raise InputError(f"the validation split holds {val_shards.num_tokens} tokens, fewer than one window of "
                         f"{cfg.data.seq_len + 1}; re-run `lmforge tokenize` with a larger --val_fraction",
                         str(val_shards.directory / "index.json"))
    # `lmforge tokenize` keeps a copy of its tokenizer beside the shards.
    tok = Tokenizer.from_dir(cfg.tokenizer or train_shards.directory / train_shards.index["tokenizer"]["copy"])
    apply_depth_preset(cfg, tok.vocab_size)
    sharded = cfg.parallel == "fsdp" and rt.world_size > 1
    if cfg.init_from:
        model = load_model(cfg.init_from).to(rt.device)
    elif sharded:  # on the meta device: FSDP2 allocates and initialises only each rank's shards
        with torch.device("meta"):
            model = Transformer(cfg.model)
    else:
        model = Transformer(cfg.model).to(rt.device)
    cfg.model = model.config
    train_model = wrap_model(model, rt, cfg.compile, cfg.parallel)  # before the optimizer: FSDP2 shards in place
    record_run(run_dir, cfg, rt, data_files=[train_shards.directory / "index.json"])
    rt.print(f"model: {model.num_params() / 1e6:.2f}M parameters "
             f"({cfg.model.num_hidden_layers} layers × {cfg.model.hidden_size}, "
             f"{cfg.model.num_attention_heads} heads), lr {cfg.optim.lr:.2e}, "
             f"{cfg.data.batch_size}×{cfg.data.seq_len}×{cfg.loop.grad_accum_steps} tokens/step")

    batches = PackedBatches(train_shards, cfg.data.batch_size, cfg.data.seq_len, seed=cfg.seed,
                            rank=rt.rank, world_size=rt.world_size)
    token_bytes = token_byte_lengths(tok, cfg.model.vocab_size)
    validate = lambda step: evaluate_loss(  # noqa: E731
        model, iter_eval_batches(val_shards, cfg.data.batch_size, cfg.data.seq_len,
                                 cfg.eval.max_batches), token_bytes, rt)
    show_samples = lambda step: _print_samples(model, tok, cfg.eval, rt, f"step {step}")  # noqa: E731
    evaluators = [Periodic(cfg.eval.every_steps, validate)]
    if cfg.eval.sample_every_steps:
        evaluators.append(Periodic(cfg.eval.sample_every_steps, show_samples))
    evaluators += task_evaluators(cfg.eval_tasks, model, tok, cfg.eval.every_steps, chat=False)

    show_samples(0)
    log = MetricsLog(run_dir, cfg.tensorboard, cfg.wandb_project or None, rt.is_main)
    optimizer = build_optimizer(model, cfg.optim, rt.device, cfg.model.hidden_size)
    result = train(train_model, lm_objective, batches, optimizer,
                   loop=cfg.loop, optim=cfg.optim, runtime=rt, log=log,
                   checkpoint=model_checkpointing(model, tok, run_dir / "model"),
                   evaluators=evaluators,
                   flops_per_token=model.flops_per_token(cfg.data.seq_len), resume=cfg.resume)
    log.close()
    show_samples(result.step)
    if rt.is_main:
        _write_pretrain_report(run_dir, cfg, model, result)
    return result


def _print_samples(model, tok, ev: EvalConfig, rt: Runtime, label: str) -> dict:
    if not rt.is_main and not is_sharded(model):  # a sharded model's forward needs every rank
        return {}
    prompts = [([tok.bos_id] if tok.bos_id is not None else []) + tok.encode(p)
               for p in ev.sample_prompts]
    model.eval()
    gen = generate(model, prompts, ev.sample_tokens, Sampling(temperature=ev.sample_temperature),
                   stop_ids=stop_ids(tok), seed=0, pad_id=tok.pad_id or 0)
    rt.print(f"--- samples ({label}) ---")
    for prompt, out in zip(ev.sample_prompts, gen.tokens):
        rt.print(f"{prompt!r} -> {prompt + tok.decode(out, skip_special=True)!r}")
    return {}


def _write_pretrain_report(run_dir: Path, cfg: PretrainConfig, model, result) -> None:
    rows = read_metrics(run_dir / "metrics.jsonl")
    train_rows = [r for r in rows if "train/loss" in r]
    val_rows = [r for r in rows if "val/loss" in r]
    last_val = val_rows[-1] if val_rows else {}
    tps = [r["train/tokens_per_s"] for r in train_rows[1:]] or [0]
    lines = [f"- model: {model.num_params() / 1e6:.2f}M parameters, depth {cfg.depth}",
             f"- steps: {result.step} ({result.skipped_steps} skipped)",
             f"- final train loss: {result.losses[-1]:.4f}" if result.losses else "- no steps run",
             f"- validation loss {last_val.get('val/loss', float('nan')):.4f}, "
             f"bits/byte {last_val.get('val/bpb', float('nan')):.4f}",
             f"- median throughput: {sorted(tps)[len(tps) // 2]:.0f} tokens/s",
             f"- model directory: {run_dir / 'model'} (Hugging Face format)"]
    series = {"train": ([r["step"] for r in train_rows], [r["train/loss"] for r in train_rows]),
              "val": ([r["step"] for r in val_rows], [r["val/loss"] for r in val_rows])}
    write_report(run_dir, "Pretraining report", lines,
                 {"loss.png": plot_series(series, "step", "loss")})
    (run_dir / "summary.json").write_text(json.dumps(
        {"step": result.step, "final_loss": result.losses[-1] if result.losses else None,
         **last_val}, indent=2) + "\n")
