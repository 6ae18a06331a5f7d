"""`lmforge experiment long-sft`: does a small set of long SFT examples beat a random set of
the same size, and the whole pool, at the same training budget? (Zhou et al. 2023, "LIMA";
Zhao et al. 2024, "Long Is More for Alignment": the k longest responses of a pool are a
strong, cheap selection.)

    lmforge experiment long-sft            # 4 seeds × 3 arms, ~13 minutes on 2 cores
    lmforge experiment long-sft --quick    # 1 seed, a smoke run

Everything is made here. The pool is what a crowd of annotators might write for the
training-split questions "What is a ± b?" (a, b ≤ `max_operand`), each asked
`answers_per_question` times, each answer in one of three styles: **terse** ("5 + 3 = 8."), **worked**, counting
step by step ("5 + 3: 5 is 0, 6 is 1, 7 is 2, 8 is 3, so 8.", as in `rl-reasoning`), or
**chatty**, the terse answer padded with pleasantries ("Sure, happy to help! 5 + 3 = 8. ...").
A fixed share `error_rate` of every style is wrong (off by one; a worked one miscounts), so
length is not made to go with correctness: only with work shown, or with padding. The pool is
the same for every seed. One tiny base model is pretrained (seed 0) on a little bundled
English and on terse and worked lines in equal numbers (training-split problems, and
starts beyond the task's range), so neither answer form is new to it; each seed fine-tunes
it, as LIMA fine-tunes one LLaMA.

Three arms, SFT from the same base with the same steps, batch and packed rows (the same
tokens): **longest-k** (`lmforge data select --method longest`), **random-k**
(`--method random`, seeded by the run's seed) and **all** (the whole pool). Measured on the
held-out test-split questions (no stage trains on one), greedy: exact match of the final
number (`eval.generative.answer_reward`), and pairwise judging (`eval.judge.pairwise_compare`,
both orders) of longest-k against random-k and against all. The judge is a rule the
experiment defines (it reads the reference answer: the correct final number wins, then, of two
right answers, the one without a false step; two wrong answers tie; length earns nothing),
and, when a judge model is present at `judge_model` (SmolLM2-135M-Instruct by default),
that model too, on the first `model_judge_prompts` questions. Verdicts are paired by seed: longest − random and
longest − all exact match, and the judged win rate of longest-k minus 0.5.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.config import require
from lmforge.eval.accuracy import greedy_accuracy, mean
from lmforge.eval.generative import answer_reward
from lmforge.eval.judge import pairwise_compare
from lmforge.experiments.rl_reasoning import counting_trace, is_step_by_step
from lmforge.experiments.runs import arithmetic_docs, english_passages, sft_small, tokenize_docs, train_small
from lmforge.experiments.verdict import fmt, mean_se, verdict
from lmforge.model.hub import load_model
from lmforge.report import plot_series, write_report
from lmforge.rewards.tasks import arithmetic_problem_for, arithmetic_problems, make_problems
from lmforge.stages.common import stop_ids
from lmforge.stages.tokenizer import TokenizerTrainConfig, train_tokenizer
from lmforge.synth.select import SelectConfig, select
from lmforge.synth.stage import write_jsonl
from lmforge.tokenizer import Tokenizer
from lmforge.tokenizer.chat import render_prompt
from lmforge.train.metrics import read_metrics

ARMS = ("longest-k", "random-k", "all")
STYLES = {"terse": 0.5, "worked": 0.3, "chatty": 0.2}  # share of the pool's answers
OPENERS = ("Sure!", "Good question.", "Happy to help with that!", "Of course, let me work that out for you.",
           "Great question, and a common one.")
CLOSERS = ("", "Hope that helps!", "Let me know if you have any other questions.",
           "Arithmetic like this gets easier with practice, so keep going!")
EXACT_MATCH = answer_reward("number", "numeric")  # the final number, as `lmforge eval` reads it
TASK = "arithmetic"


@dataclass
class LongSFTExperimentConfig:
    output: str = "runs/experiments/long-sft"  # report.md, results.json, every run under it
    corpus: list[str] = field(default_factory=lambda: ["data/corpus/en_moby_dick.jsonl.gz"])
    english_chars: int = 10_000  # bundled English in the pretraining corpus
    arithmetic_lines: int = 6000  # terse and worked lines (half each) in the pretraining corpus
    max_operand: int = 10  # "a ± b" with a, b in 0..max_operand (worked answers of up to 11 steps)
    answers_per_question: int = 3  # the pool: every training-split question answered this often
    error_rate: float = 0.15  # of every style: answers off by one (a worked one miscounts)
    k: int = 120  # longest-k and random-k (about a quarter of the pool)
    seeds: int = 4
    steps: int = 800  # pretraining steps (one base, seed 0, for every seed)
    sft_steps: int = 200  # every arm: the same steps × batch × packed rows (80 left every arm at ~0.02)
    depth: int = 2  # model size (width 64·depth)
    seq_len: int = 128
    batch_size: int = 16
    vocab_size: int = 512
    judge_model: str = "runs/models/smollm2/hf"  # a second judge when present (skipped when not)
    model_judge_prompts: int = 24  # held-out questions the judge model compares, per seed
    quick: bool = False  # 1 seed, 60 + 20 steps, no judge model: a smoke run, not evidence

    def __post_init__(self):
        for name in ("seeds", "steps", "sft_steps", "k", "answers_per_question"):
            require(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))
        require(0 <= self.error_rate < 1, "error_rate", "in [0, 1)", self.error_rate)
        if self.quick:
            self.seeds, self.steps, self.sft_steps, self.judge_model = 1, 60, 20, ""
            self.english_chars, self.arithmetic_lines = 5_000, 600

    @property
    def max_new_tokens(self) -> int:  # the longest worked or chatty answer, with room to spare
        return 24 + 8 * (self.max_operand + 1)


def response(problem: dict, style: str, wrong: bool, rng: random.Random) -> str:
    """One annotator's answer to "What is a ± b?" in `style`; a wrong one is off by one (a
    worked one counts one step too many or too few)."""
    a, op, b = problem["solution"].split(" = ")[0].split(" ")
    a, b = int(a), int(b)
    slip = rng.choice((-1, 1)) if b > 0 else 1
    if style == "worked":
        counted = b + slip if wrong else b
        return counting_trace(a, op, counted).replace(f"{a} {op} {counted}:", f"{a} {op} {b}:", 1)
    value = problem["answer"] + (slip if wrong else 0)
    terse = f"{a} {op} {b} = {value}."
    if style == "terse":
        return terse
    return " ".join(filter(None, (rng.choice(OPENERS), terse, rng.choice(CLOSERS))))


def make_pool(cfg: LongSFTExperimentConfig) -> list[dict]:
    """Every training-split question answered answers_per_question times in random styles,
    each a chat with its `style` and `correct` beside it; distinct (question, answer) pairs."""
    rng = random.Random(0)  # the pool is fixed, whatever the seed
    questions = {p["messages"][0]["content"]: p for p in
                 arithmetic_problems(50 * 21 * 21, seed=0, split="train", max_operand=cfg.max_operand)}
    pool, seen = [], set()
    for question, problem in sorted(questions.items()):
        for _ in range(cfg.answers_per_question):
            style = rng.choices(list(STYLES), weights=list(STYLES.values()))[0]
            wrong = rng.random() < cfg.error_rate
            text = response(problem, style, wrong, rng)
            if (question, text) not in seen:
                seen.add((question, text))
                pool.append({"messages": [*problem["messages"], {"role": "assistant", "content": text}],
                             "style": style, "correct": not wrong})
    rng.shuffle(pool)
    return pool


def run_long_sft(cfg: LongSFTExperimentConfig) -> dict:
    out = Path(cfg.output)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    pool = make_pool(cfg)
    write_jsonl(data / "pool.jsonl", [{"messages": c["messages"]} for c in pool])
    labels = {c["messages"][-1]["content"]: (c["style"], c["correct"]) for c in pool}
    pretraining = english_passages(cfg.corpus, cfg.english_chars) + arithmetic_docs(
        cfg.arithmetic_lines, cfg.max_operand, _terse_or_worked, "arith")
    write_jsonl(data / "tokenizer_text.jsonl",
                pretraining + [{"id": f"pool{i}", "text": c["messages"][-1]["content"]} for i, c in enumerate(pool)])
    train_tokenizer(TokenizerTrainConfig(input=[str(data / "tokenizer_text.jsonl")], output=str(data / "tokenizer"),
                                         vocab_size=cfg.vocab_size))
    shards = tokenize_docs(data, "pretrain", pretraining)
    test = make_problems(TASK, 100, 1, "test", cfg.max_operand)  # held out: no stage trains on one
    judge = ReferenceJudge(test)
    model_judge = _judge_model(cfg)

    # One base: the seeds vary what the claim is about (the random-k draw, SFT's data order),
    # and the time goes to more of them.
    base = train_small(out / "base", shards, 0, cfg.steps, cfg.depth, cfg.seq_len, cfg.batch_size, "5 + 3:")
    runs = []
    for seed in range(cfg.seeds):
        run = out / f"seed{seed}"
        arms = {}
        for arm in ARMS:
            chats = _arm_data(run / "data", arm, data / "pool.jsonl", cfg.k, seed)
            model = sft_small(run / arm, base, chats, seed, cfg.sft_steps, cfg.seq_len, cfg.batch_size,
                              "What is 5 + 3?")
            arms[arm] = {**_composition(chats, labels), "trained_tokens_per_step": _trained_tokens(run / arm),
                         **_held_out(model, test, cfg.max_new_tokens)}
        runs.append({"seed": seed, **arms, **_judged(arms, test, judge, model_judge, cfg.model_judge_prompts)})
        print(f"long-sft seed {seed}: held-out exact match " + ", ".join(
            f"{arm} {arms[arm]['exact_match']:.3f}" for arm in ARMS) + "; judged win rate of longest-k "
            f"vs random-k {runs[-1]['judged']['longest-k vs random-k']['win_rate']:.3f}")
    results = _summarise(cfg, runs, len(pool), len(test), bool(model_judge))
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    _write_report(out, cfg, results)
    print(f"experiment long-sft: {results['verdict']['exact_match']} -> {out / 'report.md'}")
    return results


def _terse_or_worked(a: int, op: str, b: int, i: int) -> str:
    """Pretraining lines alternate: "5 + 3 = 8." and the worked count."""
    return counting_trace(a, op, b) if i % 2 == 1 else arithmetic_problem_for(a, op, b)["solution"]


def _arm_data(data: Path, arm: str, pool: Path, k: int, seed: int) -> Path:
    """The arm's SFT file: `lmforge data select` for the k-arms (no dedup: the pool has no
    repeated (question, answer) pair), the pool itself for `all`."""
    if arm == "all":
        return pool
    path = data / f"{arm}.jsonl"
    select(SelectConfig(data=[str(pool)], output=str(path), method=arm.removesuffix("-k"), k=k, dedup=False,
                        seed=seed))
    return path


def _composition(chats: Path, labels: dict) -> dict:
    rows = [json.loads(line)["messages"][-1]["content"] for line in chats.read_text().splitlines() if line.strip()]
    return {"examples": len(rows), "response_chars": mean([len(r) for r in rows]),
            **{f"{style}_share": mean([float(labels[r][0] == style) for r in rows]) for style in STYLES},
            "correct_share": mean([float(labels[r][1]) for r in rows])}


def _trained_tokens(run_dir: Path) -> float:
    """Answer tokens (the ones SFT's loss is on) per step: the rows are the same for every
    arm, the share of them that is answer is not."""
    return mean([r["train/tokens"] for r in read_metrics(run_dir / "metrics.jsonl") if "train/tokens" in r])


def _held_out(model_dir: Path, test: list[dict], max_new_tokens: int) -> dict:
    """Greedy answers to the held-out questions: exact match, mean length in tokens, and the
    share that count step by step."""
    model = load_model(model_dir).eval()
    tok = Tokenizer.from_dir(model_dir)
    prompts = [render_prompt(tok, p["messages"]) for p in test]
    result = greedy_accuracy(model, prompts, test, lambda ids: tok.decode(ids, skip_special=True), EXACT_MATCH,
                             max_new_tokens=max_new_tokens, stop_ids=set(stop_ids(tok)), pad_id=tok.pad_id or 0)
    answers = [c.strip() for c in result["completions"]]
    return {"exact_match": result["accuracy"], "answer_tokens": mean([len(tok.encode(a)) for a in answers]),
            "worked_answers": mean([float(is_step_by_step(a)) for a in answers]), "answers": answers}


class ReferenceJudge:
    """A rule with the reference answers, behind the judge back-end call (`chat`): of the two
    responses in the judge prompt, the one whose final number is right wins; if both are
    right, the one with no false step wins; anything else is a tie. A false step is a wrong
    equation ("5 + 3 = 9"), a count that does not follow from the question ("7 is 1" counting
    from 5, or "9 is 4" for "5 + 3": counting past 3), or a worked answer about other numbers
    than the question's. Two wrong answers tie however they went wrong, so neither length nor
    a tidy but wrong trace earns anything."""

    _PROMPT = re.compile(r"\[User request\]\n(.*)\n\n\[Response 1\]\n(.*)\n\n\[Response 2\]\n(.*)\n\nAnswer with",
                         re.S)

    def __init__(self, problems: list[dict]):
        self.problems = {p["messages"][-1]["content"]: p for p in problems}

    def chat(self, conversations: list[list[dict]], max_new_tokens: int = 16) -> list[str]:
        replies = []
        for messages in conversations:
            question, first, second = self._PROMPT.search(messages[-1]["content"]).groups()
            s1, s2 = (self.score(text, self.problems[question]) for text in (first, second))
            replies.append("1" if s1 > s2 else "2" if s2 > s1 else "tie")
        return replies

    @staticmethod
    def false_steps(text: str, problem: dict) -> int:
        a, op, b = problem["solution"].split(" = ")[0].split(" ")
        a, b, direction = int(a), int(b), 1 if op == "+" else -1
        false = sum(int(n) != a + direction * int(k) or int(k) > b for n, k in re.findall(r"(-?\d+) is (\d+)", text))
        false += sum(int(x) + (int(y) if o == "+" else -int(y)) != int(z)
                     for x, o, y, z in re.findall(r"(-?\d+) ([+-]) (\d+) = (-?\d+)", text))
        worked = re.match(r"\s*(-?\d+) ([+-]) (\d+):", text)
        return false + int(bool(worked) and worked.groups() != (str(a), op, str(b)))

    @classmethod
    def score(cls, text: str, problem: dict) -> int:
        """0 wrong, 1 right with a false step, 2 right with none."""
        right = EXACT_MATCH(text, problem)
        return int(right) * (2 if right and cls.false_steps(text, problem) == 0 else 1)


def _judge_model(cfg: LongSFTExperimentConfig):
    if not cfg.judge_model or not Path(cfg.judge_model).exists():
        return None
    from lmforge.synth.backend import open_backend

    return open_backend(cfg.judge_model, batch_size=16)


def _judged(arms: dict, test: list[dict], judge, model_judge, model_prompts: int) -> dict:
    """Pairwise judging of longest-k's held-out answers against each other arm's, both orders."""
    questions = [p["messages"][-1]["content"] for p in test]
    out = {"judged": {}, "model_judged": {}}
    for other in ARMS[1:]:
        pair = (arms["longest-k"]["answers"], arms[other]["answers"])
        out["judged"][f"longest-k vs {other}"], _ = pairwise_compare(questions, *pair, judge)
        if model_judge is not None and other == "random-k":
            n = model_prompts
            out["model_judged"][f"longest-k vs {other}"], _ = pairwise_compare(
                questions[:n], pair[0][:n], pair[1][:n], model_judge, max_new_tokens=4)
    return out


def _summarise(cfg, runs: list[dict], pool_size: int, n_test: int, model_judged: bool) -> dict:
    keys = ("exact_match", "answer_tokens", "worked_answers", "examples", "response_chars", "correct_share",
            "trained_tokens_per_step",
            *(f"{s}_share" for s in STYLES))
    per_arm = {arm: {k: mean_se([r[arm][k] for r in runs]) for k in keys} for arm in ARMS}
    paired = {f"longest-k minus {other}": mean_se([r["longest-k"]["exact_match"] - r[other]["exact_match"]
                                                   for r in runs]) for other in ARMS[1:]}
    judges = {"judged": "rule judge", **({"model_judged": "judge model"} if model_judged else {})}
    win_rates = {j: {pair: mean_se([r[j][pair]["win_rate"] for r in runs]) for pair in runs[0][j]} for j in judges}
    margin = {j: {pair: mean_se([r[j][pair]["win_rate"] - 0.5 for r in runs]) for pair in runs[0][j]}
              for j in judges}
    v = {"exact_match": verdict(paired["longest-k minus random-k"], "longest-k is more accurate than random-k",
                                "random-k is more accurate than longest-k"),
         "exact_match_vs_all": verdict(paired["longest-k minus all"], "longest-k is more accurate than all",
                                       "the whole pool is more accurate than longest-k")}
    for j, name in judges.items():
        for pair, m in margin[j].items():
            other = pair.split(" vs ")[1]
            v[f"{j}: {pair}"] = verdict(m, f"the {name} prefers longest-k to {other}",
                                        f"the {name} prefers {other} to longest-k")
    return {"settings": {**vars(cfg), "max_new_tokens": cfg.max_new_tokens}, "pool": pool_size,
            "held_out_questions": n_test, "judges": judges, "per_arm": per_arm, "paired_exact_match": paired,
            "win_rate": win_rates, "win_rate_minus_half": margin, "verdict": v,
            "runs": runs}


def _write_report(out: Path, cfg, results: dict) -> None:
    per, paired, v = results["per_arm"], results["paired_exact_match"], results["verdict"]
    judge_note = (f"; the judge model {cfg.judge_model} compares longest-k with random-k on the first "
                  f"{cfg.model_judge_prompts}" if "model_judged" in results["judges"] else "; no judge model")
    lines = [f"Claim (LIMA; Zhao et al. 2024): the k longest SFT examples of a pool beat k random ones, and the "
             f"whole pool, at the same training budget. {cfg.seeds} seed(s); a pool of {results['pool']} answers "
             f"to \"What is a ± b?\" (a, b ≤ {cfg.max_operand}; {int(100 * STYLES['terse'])}% terse, "
             f"{int(100 * STYLES['worked'])}% worked, {int(100 * STYLES['chatty'])}% chatty, "
             f"{cfg.error_rate:.0%} of each wrong); k = {cfg.k}; depth {cfg.depth}, {cfg.steps} pretraining steps, "
             f"then {cfg.sft_steps} SFT steps × {cfg.batch_size} packed rows of {cfg.seq_len} tokens for every arm. "
             f"{results['held_out_questions']} held-out (test-split) questions, greedy; the rule judge reads the "
             f"reference answer{judge_note}.", "",
             "| arm | examples | worked / chatty / wrong in its data | held-out exact match | answer tokens | "
             "answers worked |", "|---|---:|---|---:|---:|---:|"]
    for arm in ARMS:
        p = per[arm]
        lines.append(f"| {arm} | {p['examples'][0]:.0f} | {p['worked_share'][0]:.2f} / {p['chatty_share'][0]:.2f} / "
                     f"{1 - p['correct_share'][0]:.2f} | {fmt(p['exact_match'])} | {fmt(p['answer_tokens'])} | "
                     f"{fmt(p['worked_answers'])} |")
    lines += ["", f"- **exact match, longest-k − random-k** ({fmt(paired['longest-k minus random-k'])}): "
              f"{v['exact_match']}",
              f"- **exact match, longest-k − all** ({fmt(paired['longest-k minus all'])}): {v['exact_match_vs_all']}"]
    for j, name in results["judges"].items():
        for pair, m in results["win_rate"][j].items():
            lines.append(f"- **{name}, {pair}** (win rate {fmt(m)}, ties half): {v[f'{j}: {pair}']}")
    lines += ["", "± is the standard error over seeds; verdicts are paired by seed (win rate minus 0.5 for the "
              "judges).", "", "Held-out answers, seed 0: " + "; ".join(
                  f"{arm}: `{results['runs'][0][arm]['answers'][0]}`" for arm in ARMS)]
    seeds = list(range(cfg.seeds))
    write_report(out, "Experiment: longest-k vs random-k SFT data (LIMA)", lines, {
        "exact_match.png": plot_series({arm: (seeds, [r[arm]["exact_match"] for r in results["runs"]]) for arm in ARMS},
                                       "seed", "held-out exact match")})
