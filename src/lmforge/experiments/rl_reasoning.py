"""`lmforge experiment rl-reasoning`: does RL with a verifiable reward raise held-out accuracy
and lengthen the reasoning? (DeepSeek-AI 2025, "DeepSeek-R1": GRPO with an accuracy and a
`<think>` format reward; accuracy and response length both grow over the RL steps.)

    lmforge experiment rl-reasoning            # 3 seeds × 2 arms, ~14 minutes on 2 cores
    lmforge experiment rl-reasoning --quick    # 1 seed, a smoke run

Everything is made here. A tiny model is pretrained on bundled English and on worked counts
("5 + 3: 5 is 0, 6 is 1, 7 is 2, 8 is 3, so 8."), from starts beyond the task's range too;
a count that is one of the task's problems is drawn from the training split only. A short
SFT (the "cold start") teaches the chat answer format on `sft_problems` training-split
questions "What is 5 + 3?", each answered in one of two ways, half and half: **direct**
("<think>5 + 3 = 8.</think> The answer is 8.") or **step by step**, counting
("<think>5 + 3: 5 is 0, ..., so 8.</think> The answer is 8."). Neither is favoured: RL is free
to move the policy towards the short answers or the long ones, and is rewarded for
correctness (plus format in one arm), never for length. The held-out problems are the test
split of `rewards.tasks` (by canonical key): no pretraining, SFT or GRPO text holds one.

Two arms from the same SFT model per seed: **GRPO + format** (math reward + `think_format`,
as R1) and **GRPO, accuracy only** (the math reward alone). Held-out greedy accuracy and mean
answer length (tokens) are logged every `eval_every_steps`. Verdicts, paired by seed: accuracy
after − before (the SFT model is the baseline that could win), length after − before, and
format arm − accuracy-only arm.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.config import require
from lmforge.eval.accuracy import greedy_accuracy, mean
from lmforge.experiments.runs import (arithmetic_docs, english_passages, grpo_small, sft_small, tokenize_docs,
                                      train_small)
from lmforge.experiments.verdict import fmt, mean_se, verdict
from lmforge.model.hub import load_model
from lmforge.report import plot_series, write_report
from lmforge.rewards.tasks import arithmetic_problems, make_problems
from lmforge.stages.common import stop_ids
from lmforge.stages.tokenizer import TokenizerTrainConfig, train_tokenizer
from lmforge.synth.stage import write_jsonl
from lmforge.tokenizer import Tokenizer
from lmforge.tokenizer.chat import render_prompt
from lmforge.train.metrics import read_metrics

ARMS = {"grpo + format": (["math", "think_format"], [1.0, 0.2]),  # arm -> (rewards, weights)
        "grpo, accuracy only": (["math"], [1.0])}
TASK = "arithmetic"


@dataclass
class RLReasoningExperimentConfig:
    output: str = "runs/experiments/rl-reasoning"  # report.md, results.json, every run under it
    corpus: list[str] = field(default_factory=lambda: ["data/corpus/en_moby_dick.jsonl.gz"])
    english_chars: int = 50_000  # bundled English in the pretraining corpus
    counting_lines: int = 4000  # worked counts "a ± b: a is 0, ..." in the pretraining corpus
    max_operand: int = 10  # problems "a ± b" with a, b in 0..max_operand (counts of up to 11 steps)
    sft_problems: int = 120  # training-split questions in the SFT cold start (GRPO draws from all)
    seeds: int = 3
    steps: int = 600  # pretraining steps
    sft_steps: int = 200
    grpo_steps: int = 40
    eval_every_steps: int = 10  # held-out accuracy and length, over the GRPO steps
    prompts_per_batch: int = 16  # GRPO: prompts × group_size completions a step
    group_size: int = 8
    lr: float = 1e-4  # GRPO learning rate (3e-4: KL past 0.5 within 5 steps, accuracy fell)
    kl_coef: float = 0.05
    depth: int = 2  # model size (width 64·depth)
    seq_len: int = 128
    batch_size: int = 16
    vocab_size: int = 512
    quick: bool = False  # 1 seed, 60 + 20 + 4 steps: a smoke run, not evidence

    def __post_init__(self):
        for name in ("seeds", "steps", "sft_steps", "grpo_steps", "sft_problems", "eval_every_steps"):
            require(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))
        if self.quick:
            self.seeds, self.steps, self.sft_steps, self.grpo_steps, self.eval_every_steps = 1, 60, 20, 4, 2
            self.prompts_per_batch, self.group_size, self.english_chars, self.counting_lines = 4, 4, 20_000, 600

    @property
    def max_new_tokens(self) -> int:  # the longest trace (max_operand + 1 counting steps) with room to spare
        return 24 + 8 * (self.max_operand + 1)


def counting_trace(a: int, op: str, b: int) -> str:
    """"5 + 3: 5 is 0, 6 is 1, 7 is 2, 8 is 3, so 8." (counting down for -): each step one
    successor or predecessor and a counter that says when to stop; no other problem is written."""
    step = 1 if op == "+" else -1
    return f"{a} {op} {b}: " + ", ".join(f"{a + step * k} is {k}" for k in range(b + 1)) + f", so {a + step * b}."


def answer(problem: dict, step_by_step: bool) -> str:
    expression = problem["solution"].split(" = ")[0]  # "5 + 3"
    a, op, b = expression.split(" ")
    think = counting_trace(int(a), op, int(b)) if step_by_step else problem["solution"]
    return f"<think>{think}</think> The answer is {problem['answer']}."


def is_step_by_step(completion: str) -> bool:
    return " is 0" in completion.partition("</think>")[0]  # the counter starts at 0; a direct answer has none


def run_rl_reasoning(cfg: RLReasoningExperimentConfig) -> dict:
    out = Path(cfg.output)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    sft_problems = _distinct(arithmetic_problems(20 * cfg.sft_problems, seed=0, split="train",
                                                 max_operand=cfg.max_operand), cfg.sft_problems)
    modes = [random.Random(f"mode{i}").random() < 0.5 for i in range(len(sft_problems))]  # fixed, whatever the seed
    sft_chats = [{"messages": [*p["messages"], {"role": "assistant", "content": answer(p, m)}]}
                 for p, m in zip(sft_problems, modes)]
    write_jsonl(data / "sft.jsonl", sft_chats)
    # worked counts are the only arithmetic pretraining sees
    pretraining = english_passages(cfg.corpus, cfg.english_chars) + arithmetic_docs(
        cfg.counting_lines, cfg.max_operand, lambda a, op, b, _: counting_trace(a, op, b), "count")
    write_jsonl(data / "tokenizer_text.jsonl",
                pretraining + [{"id": f"sft{i}", "text": c["messages"][-1]["content"]} for i, c in enumerate(sft_chats)])
    train_tokenizer(TokenizerTrainConfig(input=[str(data / "tokenizer_text.jsonl")], output=str(data / "tokenizer"),
                                         vocab_size=cfg.vocab_size))
    shards = tokenize_docs(data, "pretrain", pretraining)
    test = make_problems(TASK, 100, 1, "test", cfg.max_operand)  # what the GRPO stage holds out (eval_seed 1)

    runs = {"sft": [], **{arm: [] for arm in ARMS}}
    for seed in range(cfg.seeds):
        run = out / f"seed{seed}"
        base = train_small(run / "pretrain", shards, seed, cfg.steps, cfg.depth, cfg.seq_len, cfg.batch_size,
                           "count up from 5:")
        cold = sft_small(run / "sft", base, data / "sft.jsonl", seed, cfg.sft_steps, cfg.max_new_tokens + 32,
                         cfg.batch_size, "What is 5 + 3?")
        runs["sft"].append({"seed": seed, **_held_out(cold, test, cfg.max_new_tokens)})
        for arm, (rewards, weights) in ARMS.items():
            arm_dir = run / _slug(arm)
            summary = grpo_small(arm_dir, cold, seed, _grpo_settings(cfg, rewards, weights))
            runs[arm].append({"seed": seed, **_held_out(arm_dir / "model", test, cfg.max_new_tokens),
                              "stage_accuracy": (summary["accuracy_before"], summary["accuracy_after"]),
                              "curve": _curve(arm_dir, summary)})
            print(f"rl-reasoning {arm} seed {seed}: held-out accuracy {runs['sft'][-1]['accuracy']:.3f} -> "
                  f"{runs[arm][-1]['accuracy']:.3f}, answer tokens {runs['sft'][-1]['completion_tokens']:.1f} -> "
                  f"{runs[arm][-1]['completion_tokens']:.1f}")
    results = _summarise(cfg, runs, len(test))
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    _write_report(out, cfg, results, runs)
    print(f"experiment rl-reasoning: {results['verdict']['accuracy']}; {results['verdict']['length']} "
          f"-> {out / 'report.md'}")
    return results


def _distinct(problems: list[dict], n: int) -> list[dict]:
    """The first n problems with distinct questions."""
    seen, out = set(), []
    for p in problems:
        if p["messages"][-1]["content"] not in seen and len(out) < n:
            seen.add(p["messages"][-1]["content"])
            out.append(p)
    return out


def _grpo_settings(cfg: RLReasoningExperimentConfig, rewards: list[str], weights: list[float]) -> dict:
    return {"task": {"name": TASK, "train_problems": 2000, "eval_problems": 100, "max_operand": cfg.max_operand,
                     "eval_max_new_tokens": cfg.max_new_tokens},
            "rewards": rewards, "reward_weights": weights, "kl_coef": cfg.kl_coef,
            # An answer cut off before <|im_end|> earns nothing, so a longer trace must still finish.
            "rollout": {"group_size": cfg.group_size, "prompts_per_batch": cfg.prompts_per_batch,
                        "max_new_tokens": cfg.max_new_tokens, "temperature": 1.0, "score_truncated": False},
            "optim": {"lr": cfg.lr, "warmup_steps": 0, "weight_decay": 0.0, "schedule": "constant"},
            "loop": {"max_steps": cfg.grpo_steps, "eval_every_steps": cfg.eval_every_steps}}


def _held_out(model_dir: Path, test: list[dict], max_new_tokens: int) -> dict:
    """Greedy answers to the held-out problems: accuracy, mean length in tokens, and the share
    that count step by step."""
    model = load_model(model_dir).eval()
    tok = Tokenizer.from_dir(model_dir)
    prompts = [render_prompt(tok, p["messages"]) for p in test]
    result = greedy_accuracy(model, prompts, test, lambda ids: tok.decode(ids, skip_special=True),
                             max_new_tokens=max_new_tokens, stop_ids=set(stop_ids(tok)), pad_id=tok.pad_id or 0)
    completions = result["completions"]
    return {"accuracy": result["accuracy"], "completion_tokens": mean([len(tok.encode(c)) for c in completions]),
            "step_by_step_share": mean([float(is_step_by_step(c)) for c in completions]),
            "samples": [s["completion"] for s in result["samples"][:3]]}


def _curve(run_dir: Path, summary: dict) -> list[tuple[int, float, float]]:
    """(step, held-out accuracy, held-out answer tokens) from step 0 (the SFT model) on."""
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "eval/accuracy" in r]
    return [(0, summary["accuracy_before"], summary["completion_tokens_before"])] + [
        (r["step"], r["eval/accuracy"], r["eval/completion_tokens"]) for r in rows]


def _summarise(cfg, runs: dict, n_test: int) -> dict:
    metrics = ("accuracy", "completion_tokens", "step_by_step_share")
    per = {name: {k: mean_se([r[k] for r in rs]) for k in metrics} for name, rs in runs.items()}
    fmt_arm, plain_arm = ARMS
    paired = lambda a, b, k: mean_se([x[k] - y[k] for x, y in zip(runs[a], runs[b])])  # noqa: E731
    diffs = {"accuracy_after_minus_before": paired(fmt_arm, "sft", "accuracy"),
             "tokens_after_minus_before": paired(fmt_arm, "sft", "completion_tokens"),
             "accuracy_only_arm_after_minus_before": paired(plain_arm, "sft", "accuracy"),
             "accuracy_format_minus_accuracy_only": paired(fmt_arm, plain_arm, "accuracy")}
    return {"settings": {**vars(cfg), "max_new_tokens": cfg.max_new_tokens}, "held_out_problems": n_test,
            "per_model": per, "paired": diffs,
            "verdict": {"accuracy": verdict(diffs["accuracy_after_minus_before"], "GRPO raised held-out accuracy",
                                            "GRPO lowered held-out accuracy"),
                        "length": verdict(diffs["tokens_after_minus_before"], "GRPO lengthened the held-out answers",
                                          "GRPO shortened the held-out answers"),
                        "format_reward": verdict(diffs["accuracy_format_minus_accuracy_only"],
                                                 "the think-format reward added held-out accuracy",
                                                 "GRPO without the format reward was more accurate")},
            "runs": runs}


def _write_report(out: Path, cfg, results: dict, runs: dict) -> None:
    per, paired, v = results["per_model"], results["paired"], results["verdict"]
    lines = [f"Claim (DeepSeek-R1): RL with verifiable rewards raises accuracy and lengthens the reasoning. "
             f"{cfg.seeds} seed(s); depth {cfg.depth}, {cfg.steps} pretraining steps, {cfg.sft_steps} SFT steps on "
             f"{cfg.sft_problems} questions (half answered directly, half by counting), then {cfg.grpo_steps} GRPO "
             f"steps × {cfg.prompts_per_batch} × {cfg.group_size} completions (lr {cfg.lr}, KL {cfg.kl_coef}); "
             f"\"What is a ± b?\", a, b ≤ {cfg.max_operand}; {results['held_out_problems']} held-out (test-split) "
             "problems, greedy.", "",
             "| model | held-out accuracy | answer length (tokens) | share counting step by step |",
             "|---|---:|---:|---:|"]
    lines += [f"| {name} | {fmt(per[name]['accuracy'])} | {fmt(per[name]['completion_tokens'])} | "
              f"{fmt(per[name]['step_by_step_share'])} |" for name in per]
    lines += ["", f"- **accuracy** (GRPO + format − SFT: {fmt(paired['accuracy_after_minus_before'])}): {v['accuracy']}",
              f"- **length** (GRPO + format − SFT, tokens: {fmt(paired['tokens_after_minus_before'])}): {v['length']}",
              f"- **format reward** (GRPO + format − GRPO accuracy only: "
              f"{fmt(paired['accuracy_format_minus_accuracy_only'])}; the accuracy-only arm's own gain "
              f"{fmt(paired['accuracy_only_arm_after_minus_before'])}): {v['format_reward']}",
              "", "± is the standard error over seeds; verdicts are paired by seed. The SFT model is step 0 of "
              "both arms.", "", f"Held-out answers after GRPO + format (seed 0): "
              + "; ".join(f"`{s}`" for s in runs[next(iter(ARMS))][0]["samples"])]
    curves = {arm: [r["curve"] for r in runs[arm]] for arm in ARMS}
    mean_curve = lambda arm, i: ([c[0] for c in curves[arm][0]],  # noqa: E731
                                 [mean([run[j][i] for run in curves[arm]]) for j in range(len(curves[arm][0]))])
    write_report(out, "Experiment: RL with verifiable rewards (DeepSeek-R1)", lines, {
        "accuracy.png": plot_series({arm: mean_curve(arm, 1) for arm in ARMS}, "GRPO step",
                                    "held-out accuracy (mean over seeds)"),
        "length.png": plot_series({arm: mean_curve(arm, 2) for arm in ARMS}, "GRPO step",
                                  "held-out answer tokens (mean over seeds)")})


def _slug(name: str) -> str:
    return name.replace(" + ", "_").replace(", ", "_").replace(" ", "_")
