"""`lmforge experiment dedup`: at a fixed compute budget, is a model pretrained on deduplicated
data better, and does it memorise less? (Lee et al. 2022, "Deduplicating Training Data Makes
Language Models Better".)

    lmforge experiment dedup            # 3 seeds, ~8 minutes on 2 cores
    lmforge experiment dedup --quick    # 1 seed, a smoke run

The data is made from the bundled English corpus: documents cut into ~600-character
passages, 10% held out (chosen by the same id hash `lmforge tokenize` splits with, so the
held-out passages are the validation split of both corpora). `planted` training passages get
`copies` extra copies each, half verbatim and half lightly edited (one word in 50 changed), as
the web repeats pages. Two corpora: **with duplicates** as made, and **deduplicated**: the same
file through `lmforge curate` (exact and MinHash near-duplicate removal; every filter off).
One tokenizer (trained on the clean training passages), the same model shape, steps and tokens
per step for both; seeds change the initialisation and the data order. Measured per run:
loss on the held-out passages, and the memorisation gap: the loss on the planted passages'
original text minus the held-out loss, both under the same model (negative = the planted
text is memorised beyond what the model knows of text in general; a within-model contrast,
so a run that is better or worse overall does not move it). Each is compared with the other
corpus's run of the same seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmforge.config import from_dict, require
from lmforge.data.documents import ReadStats, read_documents
from lmforge.eval.accuracy import mean
from lmforge.experiments.verdict import fmt, mean_se, verdict
from lmforge.model.hub import load_model
from lmforge.report import plot_series, write_report
from lmforge.stages.curate import CurateConfig, FiltersConfig, curate
from lmforge.stages.pretrain import PretrainConfig, pretrain
from lmforge.stages.tokenize import TokenizeConfig, is_validation, tokenize
from lmforge.stages.tokenizer import TokenizerTrainConfig, train_tokenizer
from lmforge.synth.stage import write_jsonl
from lmforge.tokenizer import Tokenizer
from lmforge.train.head_loss import model_cross_entropy
from lmforge.train.metrics import read_metrics

CONDITIONS = ("with duplicates", "deduplicated")
VAL_FRACTION = 0.1


@dataclass
class DedupExperimentConfig:
    output: str = "runs/experiments/dedup"  # report.md, results.json, and every run under it
    corpus: list[str] = field(default_factory=lambda: ["data/corpus/en_moby_dick.jsonl.gz",
                                                       "data/corpus/en_sotu.jsonl.gz"])
    seeds: int = 3  # runs per corpus
    steps: int = 500  # optimizer steps per run (the same for both corpora)
    depth: int = 2  # model size (width 64·depth)
    seq_len: int = 128
    batch_size: int = 16  # sequences per step
    passage_chars: int = 600  # passages are cut at paragraph ends once this long
    planted: int = 40  # training passages that get copies
    copies: int = 30  # extra copies of each planted passage
    vocab_size: int = 4096
    quick: bool = False  # 1 seed, 60 steps, 10 planted passages: a smoke run, not evidence

    def __post_init__(self):
        for name in ("seeds", "steps", "planted", "copies"):
            require(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))
        if self.quick:
            self.seeds, self.steps, self.planted = 1, 60, 10


def run_dedup(cfg: DedupExperimentConfig) -> dict:
    out = Path(cfg.output)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    train, held = _passages(cfg)
    planted = train[:cfg.planted]
    copies = [_copy(p, j) for p in planted for j in range(cfg.copies)]
    corpus = sorted(train + held + copies, key=lambda d: random.Random(d["id"]).random())
    write_jsonl(data / "with_duplicates.jsonl", corpus)
    write_jsonl(data / "clean_train.jsonl", train)

    train_tokenizer(TokenizerTrainConfig(input=[str(data / "clean_train.jsonl")], output=str(data / "tokenizer"),
                                         vocab_size=cfg.vocab_size))
    curated = curate(from_dict(CurateConfig, {
        "input": [str(data / "with_duplicates.jsonl")], "output": str(data / "deduplicated"), "workers": 1,
        "report": False, "pii": {"enabled": False},
        "filters": {name: {"enabled": False} for name in FiltersConfig.__dataclass_fields__}}))
    shards = {}
    for condition, source in zip(CONDITIONS, (data / "with_duplicates.jsonl", data / "deduplicated")):
        shards[condition] = data / f"shards_{_slug(condition)}"
        tokenize(TokenizeConfig(input=[str(source)], tokenizer=str(data / "tokenizer"), output=str(shards[condition]),
                                val_fraction=VAL_FRACTION))

    tok = Tokenizer.from_dir(data / "tokenizer")
    runs = {c: [] for c in CONDITIONS}
    for seed in range(cfg.seeds):
        for condition in CONDITIONS:
            run_dir = out / f"{_slug(condition)}_seed{seed}"
            pretrain(from_dict(PretrainConfig, {
                "run_dir": str(run_dir), "depth": cfg.depth, "seed": seed, "tensorboard": False,
                "data": {"shards": str(shards[condition]), "seq_len": cfg.seq_len, "batch_size": cfg.batch_size},
                "loop": {"max_steps": cfg.steps, "log_every_steps": 10, "progress": False},
                "eval": {"every_steps": max(1, cfg.steps // 5), "max_batches": 16, "sample_prompts": ["Call me"],
                         "sample_tokens": 8}}))
            model = load_model(run_dir / "model").eval()
            rows = read_metrics(run_dir / "metrics.jsonl")
            runs[condition].append({
                "seed": seed, "val_curve": [(r["step"], r["val/loss"]) for r in rows if "val/loss" in r],
                # The same held-out texts for both corpora (curation could drop a held-out passage).
                "val_loss": _mean_loss(model, tok, [p["text"] for p in held], cfg.seq_len),
                "planted_loss": _mean_loss(model, tok, [p["text"] for p in planted], cfg.seq_len)})
            runs[condition][-1]["memorisation_gap"] = runs[condition][-1]["planted_loss"] - runs[condition][-1]["val_loss"]
    results = _summarise(cfg, runs, curated, len(train), len(held), len(copies))
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    _write_report(out, cfg, results, runs)
    print(f"experiment dedup: {results['verdict']['validation']}; {results['verdict']['memorisation']} "
          f"-> {out / 'report.md'}")
    return results


def _passages(cfg: DedupExperimentConfig) -> tuple[list[dict], list[dict]]:
    """(training passages, held-out passages), cut at paragraph ends; the split is tokenize's own."""
    passages, stats = [], ReadStats()
    for path in cfg.corpus:
        for doc in read_documents(path, "text", "raise", stats):
            current = ""
            for paragraph in doc["text"].split("\n\n"):
                current = f"{current}\n\n{paragraph}" if current else paragraph
                if len(current) >= cfg.passage_chars:
                    passages.append({"id": f"{doc['id']}:{len(passages)}", "text": current.strip()})
                    current = ""
    held = [p for p in passages if is_validation(p["id"], VAL_FRACTION)]
    train = [p for p in passages if not is_validation(p["id"], VAL_FRACTION)]
    random.Random(0).shuffle(train)  # which passages get planted: fixed, whatever the seed
    return train, held


def _copy(passage: dict, j: int) -> dict:
    """Copy j of a planted passage: verbatim (even j) or with one word in 50 changed (odd j), under
    an id that tokenize puts in the training split (a copy must never land in validation)."""
    words = passage["text"].split(" ")
    if j % 2:
        words = [f"{w}{j}" if i % 50 == j % 50 else w for i, w in enumerate(words)]
    k = 0
    while is_validation(f"{passage['id']}/copy{j}.{k}", VAL_FRACTION):
        k += 1
    return {"id": f"{passage['id']}/copy{j}.{k}", "text": " ".join(words)}


@torch.no_grad()
def _mean_loss(model, tok, texts: list[str], seq_len: int) -> float:
    """Mean over texts of the per-token loss of each text's first seq_len tokens."""
    start = tok.bos_id if tok.bos_id is not None else tok.eos_id
    losses = []
    for text in texts:
        ids = torch.tensor([[start, *tok.encode(text)][:seq_len + 1]])
        losses.append(model_cross_entropy(model, ids[:, :-1], ids[:, 1:]).item())
    return mean(losses)


def _summarise(cfg, runs: dict, curated: dict, n_train: int, n_held: int, n_copies: int) -> dict:
    dup, dedup = runs[CONDITIONS[0]], runs[CONDITIONS[1]]
    val_gain = mean_se([a["val_loss"] - b["val_loss"] for a, b in zip(dup, dedup)])  # > 0: dedup better
    memo = mean_se([b["memorisation_gap"] - a["memorisation_gap"] for a, b in zip(dup, dedup)])  # > 0: less memorised
    return {
        "settings": vars(cfg), "passages": {"train": n_train, "held_out": n_held, "planted_copies": n_copies},
        "curate": {k: curated.get(k) for k in ("documents_read", "documents_kept")},
        "per_condition": {c: {k: mean_se([r[k] for r in runs[c]]) for k in ("val_loss", "planted_loss", "memorisation_gap")}
                          for c in CONDITIONS},
        "paired": {"val_loss_dup_minus_dedup": val_gain, "memorisation_gap_dedup_minus_dup": memo},
        "verdict": {"validation": verdict(val_gain, "deduplicated data gave a lower validation loss",
                                           "deduplicated data gave a higher validation loss"),
                    "memorisation": verdict(memo, "the deduplicated model memorised the planted passages less",
                                             "the deduplicated model memorised the planted passages more")},
        "runs": {c: [{k: v for k, v in r.items() if k != "val_curve"} for r in runs[c]] for c in CONDITIONS}}


def _write_report(out: Path, cfg, results: dict, runs: dict) -> None:
    per = results["per_condition"]
    lines = [f"Claim (Lee et al. 2022): at the same compute, deduplicated pretraining data gives a better model "
             f"that memorises less. {cfg.seeds} seed(s), depth {cfg.depth}, {cfg.steps} steps × "
             f"{cfg.batch_size}×{cfg.seq_len} tokens for each corpus.", "",
             f"- data: {results['passages']['train']} training passages + {results['passages']['held_out']} held out; "
             f"{cfg.planted} planted × {cfg.copies} copies = {results['passages']['planted_copies']} duplicates; "
             f"`lmforge curate` kept {results['curate']['documents_kept']} of {results['curate']['documents_read']} "
             "documents", "",
             "| corpus | loss on the held-out passages | loss on the planted passages | memorisation gap "
             "(planted − held-out; lower = memorised) |", "|---|---:|---:|---:|"]
    lines += [f"| {c} | {fmt(per[c]['val_loss'])} | {fmt(per[c]['planted_loss'])} | {fmt(per[c]['memorisation_gap'])} |"
              for c in CONDITIONS]
    lines += ["", f"- **validation:** {results['verdict']['validation']}",
              f"- **memorisation:** {results['verdict']['memorisation']}",
              "", "± is the standard error over seeds; verdicts compare the two corpora seed by seed."]
    curves = {}
    for c in CONDITIONS:
        steps = [s for s, _ in runs[c][0]["val_curve"]]
        curves[c] = (steps, [mean([r["val_curve"][i][1] for r in runs[c]]) for i in range(len(steps))])
    write_report(out, "Experiment: deduplicated pretraining data", lines,
                 {"validation_loss.png": plot_series(curves, "step", "validation-split loss (mean over seeds)")})


def _slug(condition: str) -> str:
    return condition.replace(" ", "_")
