"""`lmforge label`: choose which answers to show a labeller, and learn from the labels as they come.

    lmforge label --model runs/demo/sft/model --labeller reward:math --task arithmetic
    lmforge label --model M --prompts prompts.jsonl --labeller judge:runs/big/model --selector double_ts
    lmforge rm --model M --data runs/label/pairs.jsonl --ensemble 4     # train on what was labelled

For each prompt the policy samples `answers` answers; an ensemble reward model (k heads on
one trunk: a mean and a spread per answer) scores them; a selector picks two (double
Thompson sampling, Dwaracherla et al. 2024; or `random`, or `max_spread` for comparison,
`train/pair_selection.py`); a labeller says which is better (a gold reward, an AI judge, a
person: `rewards/labellers.py`); the pair is appended to `output`, a preference JSONL file
that `lmforge rm` and `lmforge dpo` read. Every `refit_every` labels the reward model is
refit on every pair in that file, warm-started, with `lmforge rm`'s objective and loop
(by default its heads only, on the fixed trunk, as in the paper).

The label file is the state: a restarted run skips prompts already in it (and those it
skipped before, listed in run_dir/skipped.jsonl), loads the reward model of the last refit
(run_dir/reward_model, with refit.json saying how many labels it saw) and carries on. Answers
and selections are seeded per prompt, so the continued run labels what an uninterrupted
one would have.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from lmforge.config import ConfigError
from lmforge.data.preference import (PreferencePair, parse_prompt, read_preferences, read_records, render_pairs,
                                     render_response)
from lmforge.data.splits import text_key
from lmforge.eval.accuracy import complete
from lmforge.infer.engine import Sampling
from lmforge.model.peft import LoRAConfig
from lmforge.model.reward import RewardModel, is_reward_model, load_reward_model
from lmforge.report import record_run, write_report
from lmforge.rewards.labellers import open_labeller
from lmforge.rewards.tasks import make_problems
from lmforge.runtime import Runtime
from lmforge.stages.common import stop_ids
from lmforge.stages.policy import load_policy
from lmforge.stages.rm import export_reward_model, fit_reward_model
from lmforge.tokenizer.chat import render_prompt
from lmforge.train.loop import LoopConfig
from lmforge.train.metrics import MetricsLog
from lmforge.train.optim import OptimConfig
from lmforge.train.pair_selection import SELECTORS


@dataclass
class LabelConfig:
    run_dir: str = "runs/label"  # reward model, skipped prompts, metrics and report go here
    output: str = ""  # preference JSONL the labelled pairs append to (default: run_dir/pairs.jsonl)
    model: str = ""  # the policy that answers: a model directory (usually the SFT model)
    tokenizer: str = ""  # tokenizer dir (default: the model dir)
    prompts: list[str] = field(default_factory=list)  # JSONL: {"prompt"|"messages", + fields a reward reads}
    task: str = "arithmetic"  # without prompt files: generated problems (arithmetic | compare | word)
    max_prompts: int = 64  # prompts to go through (0 = every prompt in the files)
    on_error: Literal["raise", "skip"] = "raise"  # malformed prompt records: fail, or count and skip
    answers: int = 8  # answers sampled per prompt (duplicates count once)
    max_new_tokens: int = 64  # length cap of each answer
    temperature: float = 1.0  # sampling temperature of the answers (> 0: they must differ)
    top_p: float = 1.0  # nucleus sampling of the answers (1 = off)
    selector: Literal["double_ts", "random", "max_spread"] = "double_ts"  # which pair a labeller sees
    labeller: str = "reward:math"  # reward:NAME | reward:module:function | judge:MODEL | human | module:factory
    judge_url: str = ""  # with judge:MODEL, an OpenAI-compatible endpoint serving MODEL
    reward_model: str = ""  # a reward model to start from (`lmforge rm --ensemble k`); empty: new heads
    trunk: str = ""  # the trunk new heads sit on (default: the policy model)
    ensemble: int = 4  # heads of a new reward model: its posterior samples
    freeze_trunk: bool = True  # refit the heads only, on a fixed representation (cheap; as the paper)
    refit_every: int = 16  # labels between refits of the reward model
    max_len: int = 256  # tokens per rendered prompt + answer
    batch_size: int = 8  # pairs per refit micro-batch
    margin: float = 0.0  # Bradley–Terry margin
    refit_steps: int = 40  # optimizer steps per refit (AdamW, constant LR, a fresh optimizer each time)
    lr: float = 1e-3  # refit learning rate
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # autocast dtype: auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16
    seed: int = 0  # the heads' prior; with each prompt's index, its answers and selection
    tensorboard: bool = False  # also write refit metrics for TensorBoard


def label(cfg: LabelConfig) -> dict:
    rt = Runtime.setup(cfg.device, cfg.dtype, cfg.seed)
    labeller = open_labeller(cfg.labeller, cfg.judge_url, rt.device)  # bad input fails before the policy loads
    if cfg.answers < 2:
        raise ConfigError(f"answers={cfg.answers}: a pair needs at least 2 answers per prompt")
    examples = read_prompts(cfg)
    run_dir = Path(cfg.run_dir)
    output = Path(cfg.output or run_dir / "pairs.jsonl")
    labelled = read_preferences(output) if output.exists() else []
    done = {prompt_key(p.prompt) for p in labelled} | _skipped_keys(run_dir)
    todo = [(i, e) for i, e in enumerate(examples) if prompt_key(e["messages"]) not in done]
    rt.print(f"label: {len(examples)} prompts, {len(examples) - len(todo)} done before; {len(labelled)} pairs "
             f"in {output}; selector {cfg.selector}, labeller {cfg.labeller}")
    policy, tok = load_policy(cfg.model, cfg.tokenizer, "none", LoRAConfig(), rt)
    rm = open_reward_model(cfg, rt, tok.pad_id or 0)
    if cfg.selector != "random" and rm.heads < 2:
        raise ConfigError(f"selector {cfg.selector} reads the ensemble's disagreement: it needs a reward model "
                          f"with 2 or more heads (--ensemble), this one has {rm.heads}")
    record_run(run_dir, cfg, rt)
    refitter = Refitter(rm, tok, cfg, rt, run_dir)
    refitter.catch_up(labelled)
    counts = {"labelled": 0, "skipped": 0}
    for index, example in todo:
        outcome = choose_and_label(example, cfg.seed * 1_000_003 + index, policy, tok, rm, labeller, cfg)
        if isinstance(outcome, str):
            _skip(run_dir, example, outcome, counts)
            continue
        append_pair(output, outcome, {"selector": cfg.selector, "labeller": cfg.labeller})
        labelled.append(outcome)
        counts["labelled"] += 1
        refitter.catch_up(labelled)
    refitter.log.close()
    summary = {**counts, "pairs_in_file": len(labelled), "refits": refitter.refits,
               "labels_at_last_refit": refitter.labels, "output": str(output)}
    rt.print(f"label: {counts['labelled']} labelled, {counts['skipped']} skipped; {len(labelled)} pairs in "
             f"{output}; reward model refit {refitter.refits} time(s) (last on {refitter.labels} labels)")
    if rt.is_main:
        _write_label_report(run_dir, cfg, summary)
    return summary


def choose_and_label(example: dict, seed: int, policy, tok, rm: RewardModel, labeller,
                     cfg: LabelConfig) -> PreferencePair | str:
    """Sample answers, select a pair, ask the labeller: the labelled pair, or why there is none."""
    answers = sample_answers(policy, tok, example["messages"], cfg, seed)
    if len(answers) < 2:
        return "fewer than 2 distinct answers"
    seqs = render_answers(tok, example["messages"], answers, cfg.max_len)
    if seqs is None:
        return f"prompt longer than max_len={cfg.max_len}"
    i, j = SELECTORS[cfg.selector](score_sequences(rm, seqs), torch.Generator().manual_seed(seed))
    verdict = labeller.label(example, answers[i], answers[j])
    if verdict is None:
        return "no preference"
    chosen, rejected = (answers[i], answers[j]) if verdict == 0 else (answers[j], answers[i])
    return PreferencePair(example["messages"], {"role": "assistant", "content": chosen},
                          {"role": "assistant", "content": rejected})


def read_prompts(cfg: LabelConfig) -> list[dict]:
    """Prompt records ({"messages", ...}) from the files, or generated `task` problems."""
    if cfg.prompts:
        parse = lambda r: {**r, "messages": parse_prompt(r)}  # noqa: E731
        examples = [e for path in cfg.prompts for e in read_records(path, parse, cfg.on_error, "prompt")]
    else:
        try:
            examples = make_problems(cfg.task, cfg.max_prompts or 64, cfg.seed, "train")
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return examples[:cfg.max_prompts] if cfg.max_prompts else examples


def prompt_key(messages: list[dict]) -> str:
    """Prompts equal up to case, spacing and punctuation are one (as `data.preference.prompt_key`)."""
    return text_key(" ".join(m["content"] for m in messages))


def open_reward_model(cfg: LabelConfig, rt: Runtime, pad_id: int) -> RewardModel:
    """The last refit's model (a restarted run), else `reward_model`, else new heads on `trunk`."""
    saved = Path(cfg.run_dir) / "reward_model"
    if is_reward_model(saved) or cfg.reward_model:
        rm = load_reward_model(saved if is_reward_model(saved) else cfg.reward_model, rt.device)
    else:
        trunk, _ = load_policy(cfg.trunk or cfg.model, cfg.tokenizer, "none", LoRAConfig(), rt)
        torch.manual_seed(cfg.seed)  # the heads' initialisation: each head a different prior sample
        rm = RewardModel(trunk, cfg.ensemble, pad_id).to(rt.device)
    if cfg.freeze_trunk:
        rm.trunk.requires_grad_(False)
    return rm.eval()


def sample_answers(policy, tok, messages: list[dict], cfg: LabelConfig, seed: int) -> list[str]:
    """`cfg.answers` samples for one prompt; empty and repeated answers dropped."""
    stops = set(stop_ids(tok))
    decode = lambda ids: tok.decode([t for t in ids if t not in stops], skip_special=True).strip()  # noqa: E731
    answers = complete(policy, [render_prompt(tok, messages)] * cfg.answers, decode, cfg.max_new_tokens,
                       batch_size=cfg.answers, sampling=Sampling(cfg.temperature, top_p=cfg.top_p),
                       stop_ids=stops, pad_id=tok.pad_id or 0, seed=seed)
    return [a for a in dict.fromkeys(answers) if a]


def render_answers(tok, messages: list[dict], answers: list[str], max_len: int) -> list[list[int]] | None:
    """Token ids of prompt + each answer through the chat template, cut at max_len; None when
    the prompt alone fills max_len (no answer left to score)."""
    seqs = [render_response(tok, messages, {"role": "assistant", "content": a}, max_len) for a in answers]
    return None if any(s is None for s in seqs) else [ids for ids, _ in seqs]


@torch.no_grad()
def score_sequences(rm: RewardModel, seqs: list[list[int]]) -> torch.Tensor:
    """(N, heads) scores, each read at its sequence's last token."""
    ids = torch.full((len(seqs), max(map(len, seqs))), rm.pad_id, dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, :len(seq)] = torch.tensor(seq)
    return rm(ids.to(next(rm.parameters()).device)).cpu()


def append_pair(path: Path, pair: PreferencePair, extra: dict) -> None:
    """One preference record, flushed at once: a killed run loses no label."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"messages": pair.prompt, "chosen": pair.chosen["content"], "rejected": pair.rejected["content"], **extra}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


class Refitter:
    """Refits the reward model on the first multiple of `refit_every` labels it has not yet
    seen, warm-started, and saves it with the count (so a restart knows where it stands)."""

    def __init__(self, rm: RewardModel, tok, cfg: LabelConfig, rt: Runtime, run_dir: Path):
        self.rm, self.tok, self.cfg, self.rt, self.run_dir = rm, tok, cfg, rt, run_dir
        state = run_dir / "refit.json"
        last = json.loads(state.read_text()) if state.exists() else {"labels": 0, "refits": 0}
        self.labels, self.refits = last["labels"], last["refits"]
        self.log = MetricsLog(run_dir, cfg.tensorboard, None, rt.is_main)

    def catch_up(self, pairs: list[PreferencePair]) -> None:
        due = len(pairs) // self.cfg.refit_every * self.cfg.refit_every
        if due <= self.labels:
            return
        cfg = self.cfg
        rendered = render_pairs(self.tok, pairs[:due], cfg.max_len)
        optim = OptimConfig(lr=cfg.lr, warmup_steps=0, weight_decay=0.0, schedule="constant")
        loop = LoopConfig(max_steps=cfg.refit_steps, log_every_steps=cfg.refit_steps, eval_every_steps=10 ** 9,
                          progress=False)
        result = fit_reward_model(self.rm, rendered, cfg.batch_size, cfg.margin, cfg.seed, optim, loop, self.rt,
                                  _RefitLog(self.log, self.refits * cfg.refit_steps, due))
        self.rm.eval()
        self.labels, self.refits = due, self.refits + 1
        if self.rt.is_main:
            export_reward_model(self.rm, self.tok, self.run_dir / "reward_model")
            (self.run_dir / "refit.json").write_text(json.dumps({"labels": due, "refits": self.refits}) + "\n")
        self.rt.print(f"refit {self.refits} on {due} labels: train accuracy "
                      f"{result.last_metrics.get('accuracy', float('nan')):.3f}")


class _RefitLog:
    """One metrics.jsonl across refits: steps count on from the previous refit's."""

    def __init__(self, log: MetricsLog, offset_steps: int, labels: int):
        self.log, self.offset_steps, self.labels = log, offset_steps, labels

    def write(self, step: int, metrics: dict) -> None:
        self.log.write(self.offset_steps + step, {**metrics, "labels": self.labels})


def _skipped_keys(run_dir: Path) -> set[str]:
    path = run_dir / "skipped.jsonl"
    if not path.exists():
        return set()
    return {prompt_key(json.loads(line)["messages"]) for line in path.open(encoding="utf-8") if line.strip()}


def _skip(run_dir: Path, example: dict, reason: str, counts: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "skipped.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"messages": example["messages"], "reason": reason}, ensure_ascii=False) + "\n")
    counts["skipped"] += 1


def _write_label_report(run_dir: Path, cfg: LabelConfig, summary: dict) -> None:
    lines = [f"- policy: {cfg.model}; {cfg.answers} answers per prompt (temperature {cfg.temperature})",
             f"- selector: {cfg.selector}; labeller: {cfg.labeller}",
             f"- this run: {summary['labelled']} pairs labelled, {summary['skipped']} prompts skipped "
             "(no preference, or fewer than 2 distinct answers; see skipped.jsonl)",
             f"- {summary['pairs_in_file']} pairs in {summary['output']} (`lmforge rm --data` reads it)",
             f"- reward model ({run_dir / 'reward_model'}): refit {summary['refits']} time(s), "
             f"last on {summary['labels_at_last_refit']} labels, every {cfg.refit_every}"]
    write_report(run_dir, "Labelling report", lines)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
