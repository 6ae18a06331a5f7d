"""Pieces every training stage shares: how a model is checkpointed, which tokens stop it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lmforge.model.hub import read_safetensors, save_model
from lmforge.train.loop import Checkpointing, Periodic
from lmforge.train.parallel import full_state_dict, load_full_state_dict, writes_files

@dataclass
class RunOptions:
    """Fields every training stage's config shares (its config class inherits them)."""

    resume: bool = False  # continue this run exactly from its last checkpoint
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # autocast dtype: auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16
    compile: bool = False  # torch.compile the model
    seed: int = 0
    tensorboard: bool = True  # also write metrics for TensorBoard
    wandb_project: str = ""  # log to Weights & Biases when set (wandb must be installed)
    eval_tasks: list[str] = field(default_factory=list)  # `lmforge eval` tasks scored with the periodic evaluation


def task_evaluators(specs: list[str], model, tok, every_steps: int, chat: bool) -> list[Periodic]:
    """`lmforge eval`'s tasks as evaluators of the loop: their metrics land in metrics.jsonl as
    eval/TASK/METRIC, the same numbers `lmforge eval` prints for the saved model."""
    if not specs:
        return []
    from lmforge.eval.run import EvalOptions, task_evaluator

    return [Periodic(every_steps, task_evaluator(model, tok, specs, EvalOptions(chat=chat)))]


# End-of-document and end-of-turn tokens across our tokenizer and common imported ones.
STOP_TOKENS = ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "</s>")


def stop_ids(tok) -> list[int]:
    ids = {tok.token_to_id(t) for t in STOP_TOKENS}
    if tok.eos_id is not None:
        ids.add(tok.eos_id)
    return sorted(i for i in ids if i is not None)


def export_model(model, tok, out_dir: Path) -> None:
    """A complete HF model directory: weights, config, generation config, tokenizer. A model
    sharded by FSDP2 is gathered first: every rank calls this, rank 0 writes."""
    state = full_state_dict(model)
    if not writes_files(model):
        return
    save_model(model, out_dir, bos_token_id=tok.bos_id, eos_token_ids=stop_ids(tok),
               pad_token_id=tok.pad_id, state=state)
    tok.save(out_dir)


def model_checkpointing(model, tok, path: Path) -> Checkpointing:
    def restore(src: Path) -> None:
        state = read_safetensors(Path(src))
        if model.config.tie_word_embeddings:  # HF files omit the tied head
            state["lm_head.weight"] = state["model.embed_tokens.weight"]
        load_full_state_dict(model, state)

    return Checkpointing(path=Path(path), save_model=lambda d: export_model(model, tok, d),
                         load_model=restore)
