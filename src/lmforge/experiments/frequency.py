"""`lmforge experiment frequency-imprint`: does how often a task appears in pretraining decide
how well the model does it after the same fine-tuning? (McCoy et al. 2023, "Embers of
Autoregression": GPT-4 decodes ROT13, common on the web, far better than ROT2 or ROT8, rare.)

    lmforge experiment frequency-imprint            # 3 seeds × 2 arms, ~7 minutes on 2 cores
    lmforge experiment frequency-imprint --quick    # 1 seed, a smoke run

The data is made here. English passages from the bundled corpus, and cipher lines such as
"rot13: uryyb = hello" on a list of common English words; 200 of the words never appear
ciphered anywhere in training and are the held-out test. Two arms, the same everything but
one thing: in **rot13 frequent** pretraining sees `frequent` ROT13 lines and `rare` ROT8 lines,
in **rot8 frequent** the other way round. The swap is the control: ROT13 is its own inverse
(encoding and decoding are one map) and ROT8 is not, so anything that makes one cipher
easier in itself shows with the same sign in both arms, while an imprint of frequency flips
sign with the swap. Then the same fine-tuning in both arms (`finetune_lines` lines of each
cipher, `finetune_steps` steps of next-token training from the pretrained weights), and each
held-out word is decoded greedily after a one-shot prompt ("rot8: ... = word\nrot8: ... =").
One tokenizer (near byte-level, trained on English and equal numbers of both ciphers' lines)
serves both arms; seeds change initialisation and data order.

Measured per run: decode accuracy of each cipher after pretraining and after fine-tuning.
Per seed, the imprint is frequent-minus-rare accuracy averaged over the two arms (the cipher's
own difficulty cancels), and the cipher asymmetry is ROT13-minus-ROT8 averaged over the arms
(frequency cancels).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.config import require
from lmforge.data.documents import ReadStats, read_documents
from lmforge.eval.accuracy import mean
from lmforge.experiments.runs import first_lines, tokenize_docs, train_small
from lmforge.experiments.verdict import fmt, mean_se, verdict
from lmforge.model.hub import load_model
from lmforge.report import plot_series, write_report
from lmforge.stages.tokenizer import TokenizerTrainConfig, train_tokenizer
from lmforge.synth.stage import write_jsonl
from lmforge.tokenizer import Tokenizer

CIPHERS = (13, 8)
ARMS = {"rot13 frequent": 13, "rot8 frequent": 8}  # arm -> its frequent cipher
LINES_PER_DOC = 20


@dataclass
class FrequencyExperimentConfig:
    output: str = "runs/experiments/frequency-imprint"  # report.md, results.json, every run under it
    corpus: list[str] = field(default_factory=lambda: ["data/corpus/en_moby_dick.jsonl.gz"])
    english_chars: int = 200_000  # English text in every pretraining corpus
    words: int = 1200  # common English words (4-7 letters) the cipher lines are made of
    held_out_words: int = 200  # of them, never ciphered in training: the test
    frequent: int = 4000  # pretraining lines of the arm's frequent cipher
    rare: int = 200  # ... and of the other one
    finetune_lines: int = 300  # fine-tuning lines per cipher (the same in both arms)
    seeds: int = 3
    steps: int = 800  # pretraining steps (at 400 some seeds had not yet learnt to decode at all)
    finetune_steps: int = 40
    depth: int = 2  # model size (width 64·depth)
    seq_len: int = 128
    batch_size: int = 16
    vocab_size: int = 320  # 256 bytes + specials + a few merges: letters stay (mostly) single tokens
    quick: bool = False  # 1 seed, 80 + 10 steps, 100 test words: a smoke run, not evidence

    def __post_init__(self):
        for name in ("seeds", "steps", "finetune_steps", "words", "held_out_words", "frequent", "rare"):
            require(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))
        require(self.held_out_words < self.words, "held_out_words", f"< words ({self.words})", self.held_out_words)
        if self.quick:
            self.seeds, self.steps, self.finetune_steps, self.held_out_words = 1, 80, 10, 100


def rot(word: str, k: int) -> str:
    return "".join(chr((ord(c) - 97 + k) % 26 + 97) for c in word)


def cipher_line(word: str, k: int) -> str:
    """"rot13: u r y y b = h e l l o": letters spaced, so each is a token of its own and the
    cipher is a letter-for-letter map (as it is for a model that reads characters)."""
    return f"rot{k}: {' '.join(rot(word, k))} = {' '.join(word)}"


def run_frequency_imprint(cfg: FrequencyExperimentConfig) -> dict:
    out = Path(cfg.output)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    english, words = _english_and_words(cfg)
    held, train = words[:cfg.held_out_words], words[cfg.held_out_words:]

    write_jsonl(data / "tokenizer_text.jsonl", english + _cipher_docs(train, {13: 500, 8: 500}, seed=0, tag="tok"))
    train_tokenizer(TokenizerTrainConfig(input=[str(data / "tokenizer_text.jsonl")], output=str(data / "tokenizer"),
                                         vocab_size=cfg.vocab_size))
    shards = {}
    for arm, frequent in ARMS.items():
        counts = {k: cfg.frequent if k == frequent else cfg.rare for k in CIPHERS}
        shards[arm] = tokenize_docs(data, _slug(arm), english + _cipher_docs(train, counts, seed=1, tag="pre"))
    shards["finetune"] = tokenize_docs(data, "finetune", _cipher_docs(
        train, dict.fromkeys(CIPHERS, cfg.finetune_lines), seed=2, tag="ft"))

    tok = Tokenizer.from_dir(data / "tokenizer")
    runs = {arm: [] for arm in ARMS}
    for seed in range(cfg.seeds):
        for arm in ARMS:
            run = out / f"{_slug(arm)}_seed{seed}"
            shape = (cfg.depth, cfg.seq_len, cfg.batch_size, "rot13: u r y y b =")
            base = train_small(run / "pretrain", shards[arm], seed, cfg.steps, *shape)
            pretrained = _accuracy(base, tok, held, train[0])
            tuned = train_small(run / "finetune", shards["finetune"], seed, cfg.finetune_steps, *shape, init_from=base)
            finetuned = _accuracy(tuned, tok, held, train[0])
            runs[arm].append({"seed": seed, "pretrained": pretrained, "finetuned": finetuned})
            print(f"frequency-imprint {arm} seed {seed}: decode accuracy after pretraining {pretrained}, "
                  f"after fine-tuning {finetuned}")
    results = _summarise(cfg, runs, train, held)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    _write_report(out, cfg, results)
    print(f"experiment frequency-imprint: {results['verdict']['imprint']} -> {out / 'report.md'}")
    return results


def _english_and_words(cfg: FrequencyExperimentConfig) -> tuple[list[dict], list[str]]:
    """(English passages of ~2,000 characters up to english_chars, the most common 4-7 letter
    words of the corpus in a fixed random order)."""
    passages, counts, total = [], Counter(), 0
    for path in cfg.corpus:
        for doc in read_documents(path, "text", "raise", ReadStats()):
            text = doc["text"]
            counts.update(re.findall(r"\b[a-z]{4,7}\b", text.lower()))
            for start in range(0, len(text), 2000):
                if total < cfg.english_chars:
                    passages.append({"id": f"en{len(passages)}", "text": text[start:start + 2000]})
                    total += len(passages[-1]["text"])
    words = [w for w, _ in counts.most_common(cfg.words)]
    if len(words) < cfg.words:
        raise ValueError(f"the corpus has {len(words)} distinct 4-7 letter words; words = {cfg.words}")
    random.Random(0).shuffle(words)  # which words are held out: fixed, whatever the seed
    return passages, words


def _cipher_docs(words: list[str], counts: dict[int, int], seed: int, tag: str) -> list[dict]:
    """counts[k] lines "rotk: <cipher> = <word>" on random words, LINES_PER_DOC to a document,
    the two ciphers' lines mixed in random order."""
    rng = random.Random(seed)
    lines = [cipher_line(w, k) for k, n in counts.items() for w in rng.choices(words, k=n)]
    rng.shuffle(lines)
    return [{"id": f"{tag}{i}", "text": "\n".join(lines[i:i + LINES_PER_DOC])}
            for i in range(0, len(lines), LINES_PER_DOC)]


def _accuracy(model_dir: Path, tok, held: list[str], shot: str) -> dict[str, float]:
    """Greedy decoding of the held-out words after a one-shot example, per cipher: the share
    of words decoded exactly (rotK) and of letters right in place (rotK_letters)."""
    model = load_model(model_dir).eval()
    out = {}
    for k in CIPHERS:
        prompts = [f"{cipher_line(shot, k)}\n{cipher_line(w, k).split(' = ')[0]} =" for w in held]
        answers = [line.split() for line in first_lines(model, tok, prompts, max_new_tokens=24)]
        out[f"rot{k}"] = mean([float(a == list(w)) for a, w in zip(answers, held)])
        out[f"rot{k}_letters"] = mean([sum(x == y for x, y in zip(a, w)) / len(w) for a, w in zip(answers, held)])
    return out


def _summarise(cfg, runs: dict, train: list[str], held: list[str]) -> dict:
    def gap(arm: str, phase: str, seed: int) -> float:  # frequent minus rare, in that arm
        frequent = ARMS[arm]
        acc = runs[arm][seed][phase]
        return acc[f"rot{frequent}"] - acc[f"rot{next(k for k in CIPHERS if k != frequent)}"]

    a, b = ARMS  # rot13 frequent, rot8 frequent
    summary = {}
    for phase in ("pretrained", "finetuned"):
        gaps = {arm: [gap(arm, phase, s) for s in range(cfg.seeds)] for arm in ARMS}
        summary[phase] = {
            "accuracy": {arm: {f"rot{k}": mean_se([r[phase][f"rot{k}"] for r in runs[arm]]) for k in CIPHERS}
                         for arm in ARMS},
            "gap_frequent_minus_rare": {arm: mean_se(gaps[arm]) for arm in ARMS},
            "imprint": mean_se([(x + y) / 2 for x, y in zip(gaps[a], gaps[b])]),
            "rot13_minus_rot8": mean_se([(x - y) / 2 for x, y in zip(gaps[a], gaps[b])])}
    after = summary["finetuned"]
    return {"settings": vars(cfg), "words": {"train": len(train), "held_out": len(held)}, "held_out_words": held,
            **summary,
            "verdict": {"imprint": verdict(after["imprint"], "the cipher frequent in pretraining is decoded better "
                                           "after the same fine-tuning", "the rare cipher is decoded better"),
                        "cipher": verdict(after["rot13_minus_rot8"], "ROT13 is easier in itself",
                                          "ROT8 is easier in itself")},
            "runs": runs}


def _write_report(out: Path, cfg, results: dict) -> None:
    lines = [f"Claim (McCoy et al. 2023): a task's frequency in pretraining leaves an imprint: after the same "
             f"fine-tuning, the cipher that was common in pretraining is decoded far better. {cfg.seeds} seed(s) × 2 "
             f"arms, depth {cfg.depth}, {cfg.steps} pretraining steps + {cfg.finetune_steps} fine-tuning steps "
             f"of {cfg.batch_size}×{cfg.seq_len} tokens; {cfg.frequent} lines of the frequent cipher, {cfg.rare} of "
             f"the rare one; {results['words']['held_out']} held-out words.", "",
             "| arm | phase | ROT13 accuracy | ROT8 accuracy | frequent − rare |", "|---|---|---:|---:|---:|"]
    for phase in ("pretrained", "finetuned"):
        for arm in ARMS:
            acc = results[phase]["accuracy"][arm]
            lines.append(f"| {arm} | {phase} | {fmt(acc['rot13'])} | {fmt(acc['rot8'])} | "
                         f"{fmt(results[phase]['gap_frequent_minus_rare'][arm])} |")
    lines += ["", f"- **imprint of frequency** (frequent − rare, averaged over the arms, after fine-tuning: "
              f"{fmt(results['finetuned']['imprint'])}): {results['verdict']['imprint']}",
              f"- **the ciphers themselves** (ROT13 − ROT8, averaged over the arms: "
              f"{fmt(results['finetuned']['rot13_minus_rot8'])}): {results['verdict']['cipher']}",
              "", "± is the standard error over seeds; verdicts are paired by seed."]
    phases = [0, 1]
    series = {f"{arm}: ROT{k}": (phases, [results[p]["accuracy"][arm][f"rot{k}"][0] for p in ("pretrained", "finetuned")])
              for arm in ARMS for k in CIPHERS}
    write_report(out, "Experiment: frequency imprint (ROT13 vs ROT8)", lines,
                 {"accuracy.png": plot_series(series, "0 = after pretraining, 1 = after fine-tuning",
                                              "held-out decode accuracy (mean over seeds)")})


def _slug(name: str) -> str:
    return name.replace(" ", "_")
