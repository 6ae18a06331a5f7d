"""`lmforge experiment token-shift`: does alignment change only a few of a model's token
choices? (Lin et al. 2023, "The Unlocking Spell on Base LLMs" (URIAL): ranked by the base
model, most of an aligned model's greedy tokens are the base's own first choice; the shifted
few are mostly style — discourse markers, the answer's opening words.)

    lmforge experiment token-shift            # 4 seeds, ~8 minutes on 2 cores
    lmforge experiment token-shift --quick    # 1 seed, a smoke run

Per seed, the demo's chain at small scale, each stage the project's own: a base model
pretrained on the bundled corpus and the bundled chat set as plain "User: / Assistant:" text
(`dialogue_in_pretraining`: URIAL's premise is a base that has read dialogue), SFT on that chat
set in the chat template, DPO on the bundled arithmetic preference pairs, GRPO on "Which is
larger, a or b?". `lmforge analyze token-shift` then ranks each model's greedy answers under the
base (unshifted = the base's top choice, marginal = its 2nd or 3rd, shifted = anything else) on
the bundled chat prompts plus held-out (test-split) arithmetic and comparison questions.

The baseline that could win: a second base model, the same recipe from another seed,
answering the same prompts and ranked by the first. That is how much two models differ
that alignment never touched; "alignment changes few tokens" means an aligned model keeps
more of its base's choices than that. Verdicts are paired by seed: unshifted share of each
aligned model minus the second base's.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.config import from_dict, require
from lmforge.data.documents import ReadStats, read_documents
from lmforge.eval.token_shift import CLASSES, shift_class
from lmforge.experiments.runs import grpo_small, sft_small, tokenize_docs, train_small
from lmforge.experiments.verdict import fmt, mean_se, verdict
from lmforge.report import plot_series, write_report
from lmforge.rewards.tasks import make_problems
from lmforge.stages.analyze import TokenShiftConfig, analyze_token_shift, read_prompts
from lmforge.stages.dpo import DPOConfig, dpo
from lmforge.stages.tokenizer import TokenizerTrainConfig, train_tokenizer
from lmforge.synth.stage import write_jsonl

ALIGNED = ("sft", "dpo", "grpo")
BASELINE = "second base"
POSITIONS = ((0, 1), (1, 2), (2, 3), (3, 5), (5, 9), (9, 17), (17, 10**9))  # answer-token positions [lo, hi)
TWIN_SEED = 1000  # the second base of seed s is pretrained with seed TWIN_SEED + s


@dataclass
class TokenShiftExperimentConfig:
    output: str = "runs/experiments/token-shift"  # report.md, results.json, every run under it
    corpus: list[str] = field(default_factory=lambda: ["data/corpus"])  # pretraining documents (bundled)
    chars_per_file: int = 250_000  # of each corpus file, so every language is in the base
    dialogue_in_pretraining: bool = True  # the chat set as plain "User: / Assistant:" text in the base's corpus
    chat: str = "data/chat/train.jsonl"  # SFT data (bundled)
    pairs: str = "data/preference/arithmetic_pairs.jsonl"  # DPO pairs (bundled, training split)
    prompts: str = "data/eval/chat_prompts.txt"  # analysed prompts, plus held-out questions below
    held_out_questions: int = 20  # of each of compare and arithmetic (test split)
    max_new_tokens: int = 32  # longest greedy answer analysed
    seeds: int = 4  # a chain and a second base each, ~2 minutes
    steps: int = 400  # pretraining steps (each base, the second one too)
    sft_steps: int = 150
    dpo_steps: int = 24
    grpo_steps: int = 20
    depth: int = 2  # model size (width 64·depth)
    seq_len: int = 128
    batch_size: int = 16
    vocab_size: int = 2048
    quick: bool = False  # 1 seed, 40 / 20 / 4 / 3 steps, 16 prompts: a smoke run, not evidence

    def __post_init__(self):
        for name in ("seeds", "steps", "sft_steps", "dpo_steps", "grpo_steps", "max_new_tokens"):
            require(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))
        if self.quick:
            self.seeds, self.steps, self.sft_steps, self.dpo_steps, self.grpo_steps = 1, 40, 20, 4, 3
            self.held_out_questions, self.max_new_tokens, self.chars_per_file = 4, 16, 50_000


def run_token_shift(cfg: TokenShiftExperimentConfig) -> dict:
    out = Path(cfg.output)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    corpus = _corpus(cfg)
    chats = [json.loads(line) for line in Path(cfg.chat).read_text(encoding="utf-8").splitlines() if line.strip()]
    # URIAL's premise is a base that has read dialogue (the web holds plenty): here the chat set
    # itself, as plain text without the chat template's special tokens, which only SFT teaches.
    dialogue = [{"id": f"chat{i}", "text": "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in c["messages"])}
                for i, c in enumerate(chats)]
    pretraining = corpus + (dialogue if cfg.dialogue_in_pretraining else [])
    write_jsonl(data / "tokenizer_text.jsonl", corpus + dialogue)  # one tokenizer for every stage
    train_tokenizer(TokenizerTrainConfig(input=[str(data / "tokenizer_text.jsonl")], output=str(data / "tokenizer"),
                                         vocab_size=cfg.vocab_size))
    shards = tokenize_docs(data, "pretrain", pretraining)
    prompts = data / "prompts.txt"
    prompts.write_text("\n".join(_prompts(cfg)) + "\n", encoding="utf-8")

    runs = []
    for seed in range(cfg.seeds):
        run = out / f"seed{seed}"
        shape = (cfg.depth, cfg.seq_len, cfg.batch_size, "Call me")
        base = train_small(run / "pretrain", shards, seed, cfg.steps, *shape)
        twin = train_small(run / "second_base", shards, TWIN_SEED + seed, cfg.steps, *shape)
        models = {"sft": sft_small(run / "sft", base, Path(cfg.chat), seed, cfg.sft_steps, cfg.seq_len, 12,
                                   "Which is larger, 17 or 72?")}
        models["dpo"] = _dpo(run / "dpo", models["sft"], seed, cfg)
        grpo_small(run / "grpo", models["dpo"], seed, _grpo_settings(cfg))
        models["grpo"], models[BASELINE] = run / "grpo" / "model", twin
        runs.append({"seed": seed, **{name: _shift(run, base, model, name, prompts, cfg)
                                      for name, model in models.items()}})
        print(f"token-shift seed {seed}: unshifted share " + ", ".join(
            f"{name} {runs[-1][name]['unshifted_share']:.3f}" for name in models))
    results = _summarise(cfg, runs, len(read_prompts(prompts)))
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    _write_report(out, cfg, results)
    print(f"experiment token-shift: SFT {results['verdict']['sft']} -> {out / 'report.md'}")
    return results


def _corpus(cfg: TokenShiftExperimentConfig) -> list[dict]:
    """~2,000-character passages, the first chars_per_file of each file."""
    passages, stats = [], ReadStats()
    files = sorted(p for c in cfg.corpus for p in (Path(c).glob("*.jsonl*") if Path(c).is_dir() else [Path(c)]))
    for path in files:
        total = 0
        for doc in read_documents(path, "text", "raise", stats):
            for start in range(0, len(doc["text"]), 2000):
                if total < cfg.chars_per_file:
                    passages.append({"id": f"{path.stem}{len(passages)}", "text": doc["text"][start:start + 2000]})
                    total += len(passages[-1]["text"])
    return passages


def _prompts(cfg: TokenShiftExperimentConfig) -> list[str]:
    """The bundled chat prompts, then held-out questions no stage trains on (test split)."""
    held = [p["messages"][-1]["content"] for task in ("compare", "arithmetic")
            for p in make_problems(task, cfg.held_out_questions, 1, "test", 20)]
    return read_prompts(Path(cfg.prompts)) + held


def _dpo(run_dir: Path, model: Path, seed: int, cfg: TokenShiftExperimentConfig) -> Path:
    """The demo's DPO settings (configs/dpo_tiny.yaml) for dpo_steps steps."""
    dpo(from_dict(DPOConfig, {
        "run_dir": str(run_dir), "model": str(model), "seed": seed, "tensorboard": False, "data": [cfg.pairs],
        "batch_size": 16, "max_len": 64, "beta": 0.1,
        "optim": {"lr": 1e-4, "warmup_steps": min(5, cfg.dpo_steps // 4), "weight_decay": 0.0, "schedule": "cosine"},
        "loop": {"max_steps": cfg.dpo_steps, "log_every_steps": 4, "eval_every_steps": 1000, "progress": False}}))
    return run_dir / "model"


def _grpo_settings(cfg: TokenShiftExperimentConfig) -> dict:
    """The demo's GRPO settings (configs/grpo_tiny.yaml) for grpo_steps steps."""
    return {"task": {"name": "compare", "train_problems": 2000, "eval_problems": 100, "max_operand": 20,
                     "eval_max_new_tokens": 10},
            "rewards": ["math"], "kl_coef": 0.05,
            "rollout": {"group_size": 8, "prompts_per_batch": 16 if not cfg.quick else 4, "max_new_tokens": 10,
                        "temperature": 1.0, "score_truncated": False},
            "optim": {"lr": 1e-4, "warmup_steps": 0, "weight_decay": 0.0, "schedule": "constant"},
            "loop": {"max_steps": cfg.grpo_steps, "eval_every_steps": 1000}}


def _shift(run: Path, base: Path, model: Path, name: str, prompts: Path, cfg) -> dict:
    """`lmforge analyze token-shift` of one model against the base, plus its shares by position
    in the answer (absolute positions, so they line up across models and seeds)."""
    out = run / "token_shift" / name.replace(" ", "_")
    summary = analyze_token_shift(TokenShiftConfig(base=str(base), aligned=str(model), prompts=str(prompts),
                                                   output=str(out), max_new_tokens=cfg.max_new_tokens))
    ranks = [json.loads(line)["base_ranks"] for line in (out / "token_shift.jsonl").read_text().splitlines()]
    by_position = []
    for lo, hi in POSITIONS:
        counts = Counter(shift_class(r) for answer in ranks for r in answer[lo:hi])
        by_position.append({c: counts[c] / sum(counts.values()) if counts else float("nan") for c in CLASSES})
    return {**{f"{c}_share": summary[f"{c}_share"] for c in CLASSES}, "tokens": summary["tokens"],
            "by_position": by_position, "top_shifted_tokens": summary["top_shifted_tokens"]}


def _summarise(cfg, runs: list[dict], n_prompts: int) -> dict:
    names = (*ALIGNED, BASELINE)
    shares = {n: {c: mean_se([r[n][f"{c}_share"] for r in runs]) for c in CLASSES} for n in names}
    by_position = {n: [{c: mean_se([r[n]["by_position"][i][c] for r in runs]) for c in CLASSES}
                       for i in range(len(POSITIONS))] for n in names}
    paired = {n: mean_se([r[n]["unshifted_share"] - r[BASELINE]["unshifted_share"] for r in runs]) for n in ALIGNED}
    shifted_tokens = {n: sum((Counter(dict(r[n]["top_shifted_tokens"])) for r in runs), Counter()).most_common(10)
                      for n in names}
    return {"settings": vars(cfg), "prompts": n_prompts, "shares": shares, "by_position": by_position,
            "paired_unshifted_minus_second_base": paired, "top_shifted_tokens": shifted_tokens,
            "verdict": {n: verdict(paired[n], f"the {n.upper()} model keeps more of its base's greedy choices than "
                                              "a second base model does",
                                   f"the {n.upper()} model keeps fewer of its base's choices than a second base model")
                        for n in ALIGNED},
            "runs": runs}


def _write_report(out: Path, cfg, results: dict) -> None:
    shares, paired = results["shares"], results["paired_unshifted_minus_second_base"]
    lines = [f"Claim (URIAL, Lin et al. 2023): ranked by the base model, most of an aligned model's tokens are "
             f"the base's own first choice; alignment shifts few, mostly stylistic. {cfg.seeds} seed(s); depth "
             f"{cfg.depth}, {cfg.steps} pretraining steps, then SFT {cfg.sft_steps}, DPO {cfg.dpo_steps}, GRPO "
             f"{cfg.grpo_steps} steps; {results['prompts']} prompts, greedy answers of up to {cfg.max_new_tokens} "
             f"tokens. Baseline: a second base model (another seed) ranked by the first.", "",
             "| model vs its base | unshifted | marginal (2nd-3rd) | shifted | unshifted − second base's |",
             "|---|---:|---:|---:|---:|"]
    for n in (*ALIGNED, BASELINE):
        diff = fmt(paired[n]) if n in paired else "—"
        lines.append(f"| {n} | {fmt(shares[n]['unshifted'])} | {fmt(shares[n]['marginal'])} | "
                     f"{fmt(shares[n]['shifted'])} | {diff} |")
    lines += [""] + [f"- **{n.upper()}:** {results['verdict'][n]}" for n in ALIGNED]
    lines += ["", "Most frequent shifted tokens (summed over seeds):", ""]
    lines += [f"- {n}: " + ", ".join(f"{t!r} ×{k}" for t, k in results["top_shifted_tokens"][n]) for n in
              (*ALIGNED, BASELINE)]
    lines += ["", "Unshifted share by position in the answer (tokens " + ", ".join(
        f"{lo}" if hi == lo + 1 else f"{lo}-{hi - 1}" if hi < 10**9 else f"{lo}+" for lo, hi in POSITIONS) + "):", ""]
    lines += [f"- {n}: " + ", ".join(fmt(b["unshifted"]) for b in results["by_position"][n])
              for n in (*ALIGNED, BASELINE)]
    lines += ["", "± is the standard error over seeds; verdicts are paired by seed."]
    xs = list(range(len(POSITIONS)))
    series = {n: (xs, [b["unshifted"][0] for b in results["by_position"][n]]) for n in (*ALIGNED, BASELINE)}
    write_report(out, "Experiment: alignment changes few tokens (URIAL)", lines, {
        "token_shift.png": plot_series(series, "answer position bucket (0, 1, 2, 3-4, 5-8, 9-16, 17+)",
                                       "unshifted share (mean over seeds)")})
