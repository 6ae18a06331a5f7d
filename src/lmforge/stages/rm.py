"""`lmforge rm`: preference pairs -> a reward model (a score head on a transformer trunk).

    lmforge rm configs/rm_tiny.yaml --model runs/demo/sft/model
    lmforge rm --model M --data prefs.jsonl --peft lora --ensemble 4 --freeze_trunk true

config -> trunk (full or LoRA) + score head(s) -> PreferenceBatches of one row per pair (the
prompt once, both answers after it) -> Bradley–Terry objective -> train(). The run directory
receives model/ (a transformers `LlamaForSequenceClassification` directory:
`AutoModelForSequenceClassification` loads it and gives the same scores), metrics.jsonl,
summary.json and report.md with held-out accuracy and margin before and after, next to the
baseline a reward model must beat: the trunk's own language-model preference (length-normalised
likelihood of chosen vs rejected).
With `ensemble: k` the k heads share the trunk and each trains on its own bootstrap of the
pairs; their spread is the reward model's uncertainty (`lmforge label` uses it).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import torch
from safetensors.torch import load_file, save_file

from lmforge.data.preference import (PreferenceBatches, RenderedPair, collate_shared_prompt, hold_out_pairs,
                                     read_pair_files, render_pairs)
from lmforge.eval.preference import likelihood_preference, reward_model_preference
from lmforge.model.hub import read_safetensors
from lmforge.model.peft import LoRAConfig, merge_and_unload
from lmforge.model.quantize import Scheme
from lmforge.model.reward import RewardModel, save_reward_model
from lmforge.report import plot_series, record_run, write_report
from lmforge.runtime import Runtime
from lmforge.stages.common import RunOptions
from lmforge.stages.policy import Peft, load_policy
from lmforge.train.loop import Checkpointing, LoopConfig, Periodic, TrainResult, train
from lmforge.train.metrics import MetricsLog, read_metrics
from lmforge.train.objectives.reward import bootstrap_masks, reward_objective
from lmforge.train.optim import OptimConfig, build_optimizer
from lmforge.train.parallel import (Parallel, check_parallel, full_state_dict, is_sharded, load_full_state_dict,
                                    wrap_model, writes_files)


@dataclass
class RMConfig(RunOptions):
    run_dir: str = "runs/rm"  # where the reward model, metrics and report go
    model: str = ""  # the trunk to start from: a model directory (usually the SFT model)
    tokenizer: str = ""  # tokenizer dir (default: the model dir)
    data: list[str] = field(default_factory=lambda: ["data/preference/arithmetic_pairs.jsonl"])  # JSONL files
    on_error: Literal["raise", "skip"] = "raise"  # malformed records: fail, or count and skip
    max_len: int = 256  # tokens per rendered side (longer ones are cut)
    eval_data: list[str] = field(default_factory=list)  # held-out pair files (a dev file while tuning)
    eval_percent: int = 10  # without eval_data: share of prompts held out (by a hash of the prompt)
    batch_size: int = 8  # pairs per micro-batch
    margin: float = 0.0  # Bradley–Terry margin: -log σ(r_c - r_r - margin)
    ensemble: int = 1  # score heads on the one trunk, each on its own bootstrap of the pairs
    freeze_trunk: bool = False  # train the heads only (a cheap ensemble on a fixed representation)
    peft: Peft = "none"  # none = full fine-tuning of the trunk | lora
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    quantize: Scheme = "none"  # QLoRA: int8 | int4 frozen trunk under LoRA (needs peft != none)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5, warmup_steps=10, weight_decay=0.0))
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=100, eval_every_steps=50))
    parallel: Parallel = "ddp"  # with several processes (torchrun): ddp (whole replicas) | fsdp (FSDP2 shards)

    def __post_init__(self):
        check_parallel(self)


def reward_model(cfg: RMConfig):
    rt = Runtime.setup(cfg.device, cfg.dtype, cfg.seed)
    run_dir = Path(cfg.run_dir)
    trunk, tok = load_policy(cfg.model, cfg.tokenizer, cfg.peft, cfg.lora, rt, cfg.quantize)
    pad_id = tok.pad_id or 0
    train_pairs, held_out = hold_out_pairs(read_pair_files(cfg.data, cfg.on_error),
                                           read_pair_files(cfg.eval_data, cfg.on_error) if cfg.eval_data else None,
                                           cfg.eval_percent)
    train_pairs, held_out = render_pairs(tok, train_pairs, cfg.max_len), render_pairs(tok, held_out, cfg.max_len)
    record_run(run_dir, cfg, rt, data_files=[Path(p) for p in cfg.data + cfg.eval_data])
    baseline = likelihood_preference(trunk, held_out, pad_id, cfg.batch_size)
    torch.manual_seed(cfg.seed)  # the head's initialisation
    rm = RewardModel(trunk, cfg.ensemble, pad_id).to(rt.device)
    if cfg.freeze_trunk:
        rm.trunk.requires_grad_(False)
    evaluate = lambda step: {f"eval/{k}": v for k, v in  # noqa: E731
                             reward_model_preference(rm, held_out, pad_id, cfg.batch_size).items()}
    before = evaluate(0)
    rt.print(f"rm: {len(train_pairs)} train / {len(held_out)} held-out pairs, {cfg.ensemble} head(s), "
             f"peft: {cfg.peft}; held-out accuracy of the trunk's own likelihood: {_pm(baseline)}, "
             f"of the untrained head: {_pm(before, 'eval/')}")
    log = MetricsLog(run_dir, cfg.tensorboard, cfg.wandb_project or None, rt.is_main)
    result = fit_reward_model(rm, train_pairs, cfg.batch_size, cfg.margin, cfg.seed, cfg.optim, cfg.loop, rt, log,
                              compile=cfg.compile, parallel=cfg.parallel,
                              checkpoint=reward_checkpointing(rm, tok, run_dir / "model", cfg.peft),
                              evaluators=([Periodic(cfg.loop.eval_every_steps, evaluate)]
                                          if held_out and cfg.loop.eval_every_steps < cfg.loop.max_steps else []),
                              resume=cfg.resume)
    log.close()
    after = evaluate(result.step)
    rt.print(f"held-out accuracy of the reward model: {_pm(after, 'eval/')} (untrained head {_pm(before, 'eval/')}, "
             f"trunk's likelihood {_pm(baseline)})")
    if rt.is_main or is_sharded(rm):  # a sharded model is gathered by every rank
        export_reward_model(rm, tok, run_dir / "model")
    if rt.is_main:
        _write_rm_report(run_dir, cfg, result, baseline, before, after,
                         {"train": len(train_pairs), "held_out": len(held_out)})
    return result


def fit_reward_model(rm: RewardModel, pairs: list[RenderedPair], batch_size: int, margin: float, seed: int,
                     optim: OptimConfig, loop: LoopConfig, rt: Runtime, log: MetricsLog, compile: bool = False,
                     parallel: Parallel = "ddp", checkpoint: Checkpointing | None = None,
                     evaluators: Sequence[Periodic] = (), resume: bool = False) -> TrainResult:
    """Bradley–Terry training of `rm` on rendered pairs through the one loop, each head on its
    own bootstrap of the pairs (`lmforge rm`, and `lmforge label` refitting as labels arrive)."""
    batches = PreferenceBatches(pairs, batch_size, rm.pad_id, seed, rt.rank, rt.world_size, collate=collate_shared_prompt)
    objective = reward_objective(margin, bootstrap_masks(len(pairs), rm.heads, seed))
    train_model = wrap_model(rm, rt, compile, parallel)  # before the optimizer: FSDP2 shards in place
    optimizer = build_optimizer(rm, optim, rt.device, rm.config.hidden_size)
    return train(train_model, objective, batches, optimizer, loop=loop, optim=optim, runtime=rt,
                 log=log, checkpoint=checkpoint, evaluators=evaluators, resume=resume)


def _pm(metrics: dict, prefix: str = "") -> str:
    """Accuracy ± its standard error over held-out pairs."""
    if f"{prefix}accuracy" not in metrics:
        return "n/a (no held-out pairs)"
    p, n = metrics[f"{prefix}accuracy"], metrics[f"{prefix}pairs"]
    return f"{p:.3f} ± {(p * (1 - p) / max(1, n - 1)) ** 0.5:.3f}"


def export_reward_model(rm: RewardModel, tok, out_dir: Path) -> None:
    """The transformers directory; a LoRA trunk is merged into a copy first. A model sharded
    by FSDP2 is gathered first: every rank calls this, rank 0 writes."""
    if any(p.requires_grad for n, p in rm.named_parameters() if "lora_" in n):
        rm = copy.deepcopy(rm)
        rm.trunk = merge_and_unload(rm.trunk)
    state = full_state_dict(rm)
    if writes_files(rm):
        save_reward_model(rm, out_dir, tok, state)


def reward_checkpointing(rm: RewardModel, tok, path: Path, peft: str) -> Checkpointing:
    """The exported model; with LoRA also the trainable tensors (adapters + heads), which is
    what a resumed run loads back (a merged trunk cannot be un-merged)."""
    trainable = lambda: {n: p.detach().contiguous().cpu() for n, p in rm.named_parameters()  # noqa: E731
                         if p.requires_grad}

    def save(d: Path) -> None:
        export_reward_model(rm, tok, d)
        if peft != "none":
            save_file(trainable(), str(Path(d) / "trainable.safetensors"))

    def load(d: Path) -> None:
        if peft != "none":
            rm.load_state_dict(load_file(str(Path(d) / "trainable.safetensors")), strict=False)
            return
        state = read_safetensors(Path(d))
        state = {"score.weight": state.pop("score.weight"), **{"trunk." + k: v for k, v in state.items()}}
        if rm.config.tie_word_embeddings:
            state["trunk.lm_head.weight"] = state["trunk.model.embed_tokens.weight"]
        load_full_state_dict(rm, state, strict=False)  # an untied LM head is not in a classifier

    return Checkpointing(path=Path(path), save_model=save, load_model=load)


def _write_rm_report(run_dir: Path, cfg: RMConfig, result, baseline: dict, before: dict, after: dict,
                     pairs: dict) -> None:
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "train/loss" in r]
    steps = [r["step"] for r in rows]
    lines = [f"- trunk: {cfg.model} ({cfg.peft}{', frozen' if cfg.freeze_trunk else ''}), "
             f"{cfg.ensemble} head(s), margin {cfg.margin}",
             f"- steps: {result.step} ({result.skipped_steps} skipped); pairs {pairs['train']} train, "
             f"{pairs['held_out']} held out",
             f"- **held-out accuracy: {_pm(before, 'eval/')} (untrained head) -> {_pm(after, 'eval/')}**; "
             f"the trunk's own likelihood preference: {_pm(baseline)}",
             f"- held-out margin (chosen - rejected score): {before.get('eval/margin', float('nan')):.3f} -> "
             f"{after.get('eval/margin', float('nan')):.3f}",
             f"- model directory: {run_dir / 'model'} (transformers AutoModelForSequenceClassification)"]
    if cfg.ensemble > 1:
        lines.append(f"- ensemble spread (std over heads): {after.get('eval/spread', float('nan')):.3f}")
    plots = {"loss.png": plot_series({"train": (steps, [r["train/loss"] for r in rows])}, "step", "Bradley–Terry loss"),
             "accuracy.png": plot_series({"train": (steps, [r["train/accuracy"] for r in rows])},
                                         "step", "pair accuracy")}
    write_report(run_dir, "Reward model report", lines, plots)
    (run_dir / "summary.json").write_text(json.dumps(
        {"step": result.step, "final_loss": result.losses[-1] if result.losses else None, "pairs": pairs,
         "likelihood_baseline": baseline, "before": before, "after": after,
         "lora": asdict(cfg.lora) if cfg.peft == "lora" else None}, indent=2) + "\n")
