"""`lmforge experiment paraphrase-knowledge`: is a fact the model read only extractable by
questions when it was written in many ways? (Allen-Zhu & Li 2023, "Physics of Language Models
3.1": with one fixed biography per person, question answering fine-tuned on half of the people
does not carry over to the other half; with several rewordings it does.)

    lmforge experiment paraphrase-knowledge            # 3 seeds × 2 arms, ~21 minutes on 2 cores
    lmforge experiment paraphrase-knowledge --quick    # 1 seed, a smoke run

The data is made here: `people` synthetic people (a made-up first and last name each), each
with a birth city, a university, a field of study and an employer drawn at random. Two arms
with the same number of biography documents and training steps: **once**, each person's
single biography (one wording, one sentence order) repeated `rewrites` times, and
**rewritten**, `rewrites` different biographies per person (each attribute's sentence in one of
five wordings, the sentences in a new order). Pretraining reads the biographies only. Then
question answering ("Q: Which university did Ava Brook attend?\nA: Keswick University") is
fine-tuned on the first half of the people, and tested on the other half, whose questions are
never trained on: the model must pull out of its weights a fact it read only in biographies.
Baselines: the most common answer per question, and the same questions on the fine-tuned
people (what fitting the questions alone gives).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from lmforge.config import require
from lmforge.eval.accuracy import mean
from lmforge.experiments.runs import first_lines, tokenize_docs, train_small
from lmforge.experiments.verdict import fmt, mean_se, verdict
from lmforge.model.hub import load_model
from lmforge.report import plot_series, write_report
from lmforge.stages.tokenizer import TokenizerTrainConfig, train_tokenizer
from lmforge.synth.stage import write_jsonl
from lmforge.tokenizer import Tokenizer

ARMS = ("once", "rewritten")
FIRST = ("Ava Ben Cara Dov Eli Fay Gus Hana Ivo Jude Kai Lena Milo Nia Omar Pia Quin Rosa Sami Tova Uma Vic Wren Xavi "
         "Yara Zeke Abel Bea Cole Dina Ezra Flo Gil Hugo Iris Joel Kira Leo Mara Ned").split()
LAST = ("Brook Carver Dale Ellis Frost Grove Hale Irwin Jarvis Keane Lowe Marsh Noble Orton Pike Quill Rowe Stone "
        "Thorne Upton Vance Wilde Yates Ashby Blake Crane Drake Easton Finch Gale Hart Ives Judd Kemp Lark Moss Nash "
        "Oakes Price Reed").split()
ATTRIBUTES = {  # attribute -> (values, five wordings of the fact, the question)
    "city": ("Lisbon Oslo Quito Hanoi Dakar Perth Lima Riga Tunis Accra Cusco Turin Bergen Malmo Porto Split".split(),
             ("{n} was born in {v}.", "{n} came into the world in {v}.", "The birthplace of {n} is {v}.",
              "{n} is a native of {v}.", "It was in {v} that {n} was born."),
             "Where was {n} born?"),
    "university": ([f"{x} University" for x in "Keswick Arden Belmont Corwin Dunmore Elgin Fairley Glenrock "
                    "Hollis Ingram Jasper Kirkby".split()],
                   ("{n} studied at {v}.", "{n} graduated from {v}.", "{n} was educated at {v}.",
                    "{v} is where {n} went to university.", "{n} is an alumnus of {v}."),
                   "Which university did {n} attend?"),
    "field": ("biology history chemistry music law economics geology poetry physics medicine".split(),
              ("{n} majored in {v}.", "{n} chose {v} as a major.", "The major of {n} was {v}.",
               "{n} earned a degree in {v}.", "{v} was what {n} studied."),
              "What did {n} study?"),
    "employer": ([f"{x} {y}" for x, y in zip("Acme Borealis Cobalt Delta Ember Fulcrum Granite Helix Indigo "
                                             "Juniper Kestrel Lumen".split(),
                                             "Labs Corp Works Group Systems Partners Motors Foods Media Bank Air "
                                             "Energy".split())],
                 ("{n} works for {v}.", "{n} is employed by {v}.", "{v} employs {n}.", "{n} has a job at {v}.",
                  "The employer of {n} is {v}."),
                 "Which company does {n} work for?"),
}


@dataclass
class ParaphraseExperimentConfig:
    output: str = "runs/experiments/paraphrase-knowledge"  # report.md, results.json, every run under it
    people: int = 400  # half get question-answer fine-tuning, half are the test
    rewrites: int = 5  # biography documents per person in both arms (copies of one, or rewordings)
    seeds: int = 3
    steps: int = 1200  # pretraining steps on the biographies
    finetune_steps: int = 150  # question-answer steps on the first half of the people
    depth: int = 3  # model size (width 64·depth)
    seq_len: int = 128
    batch_size: int = 16
    vocab_size: int = 1024
    quick: bool = False  # 1 seed, 120 + 30 steps, 60 people, batches of 8 × 64: a smoke run, not evidence

    def __post_init__(self):
        for name in ("people", "rewrites", "seeds", "steps", "finetune_steps"):
            require(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))
        require(self.people <= len(FIRST) * len(LAST), "people", f"<= {len(FIRST) * len(LAST)}", self.people)
        if self.quick:
            self.seeds, self.steps, self.finetune_steps, self.people = 1, 120, 30, 60
            self.batch_size, self.seq_len = 8, 64


def run_paraphrase_knowledge(cfg: ParaphraseExperimentConfig) -> dict:
    out = Path(cfg.output)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    people = make_people(cfg.people)
    trained, tested = people[:len(people) // 2], people[len(people) // 2:]
    bios = {arm: biographies(people, cfg.rewrites, rewritten=arm == "rewritten") for arm in ARMS}
    qa = [{"id": f"qa{i}", "text": "\n".join(qa_lines(p))} for i, p in enumerate(trained)]

    write_jsonl(data / "tokenizer_text.jsonl", bios["rewritten"] + qa)  # every wording; the same tokenizer for both
    train_tokenizer(TokenizerTrainConfig(input=[str(data / "tokenizer_text.jsonl")], output=str(data / "tokenizer"),
                                         vocab_size=cfg.vocab_size))
    shards = {arm: tokenize_docs(data, arm, bios[arm]) for arm in ARMS}
    shards["qa"] = tokenize_docs(data, "qa", qa)
    tok = Tokenizer.from_dir(data / "tokenizer")

    runs = {arm: [] for arm in ARMS}
    for seed in range(cfg.seeds):
        for arm in ARMS:
            run = out / f"{arm}_seed{seed}"
            shape = (cfg.depth, cfg.seq_len, cfg.batch_size, f"{people[0]['name']} was born in")
            base = train_small(run / "pretrain", shards[arm], seed, cfg.steps, *shape)
            tuned = train_small(run / "finetune", shards["qa"], seed, cfg.finetune_steps, *shape, init_from=base)
            model = load_model(tuned).eval()
            runs[arm].append({"seed": seed, "tested": qa_accuracy(model, tok, tested),
                              "trained": qa_accuracy(model, tok, trained)})
            print(f"paraphrase-knowledge {arm} seed {seed}: question answering on people never asked about "
                  f"{runs[arm][-1]['tested']['all']:.3f}, on the fine-tuned half {runs[arm][-1]['trained']['all']:.3f}")
    results = _summarise(cfg, runs, tested)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    _write_report(out, cfg, results)
    print(f"experiment paraphrase-knowledge: {results['verdict']} -> {out / 'report.md'}")
    return results


def make_people(n: int) -> list[dict]:
    rng = random.Random(0)
    names = rng.sample([f"{f} {l}" for f in FIRST for l in LAST], n)
    return [{"name": name, **{a: rng.choice(values) for a, (values, _, _) in ATTRIBUTES.items()}} for name in names]


def biographies(people: list[dict], rewrites: int, rewritten: bool) -> list[dict]:
    """`rewrites` documents per person: one fixed biography repeated, or as many rewordings
    (a wording per attribute and a sentence order drawn per document)."""
    rng, docs = random.Random(1), []
    for i, p in enumerate(people):
        fixed = _biography(p, random.Random(f"fixed{i}"))
        for j in range(rewrites):
            docs.append({"id": f"bio{i}.{j}", "text": _biography(p, rng) if rewritten else fixed})
    random.Random(2).shuffle(docs)
    return docs


def _biography(person: dict, rng: random.Random) -> str:
    """One sentence per attribute the person has (a wording drawn for each), in random order."""
    sentences = [rng.choice(wordings).format(n=person["name"], v=person[a])
                 for a, (_, wordings, _) in ATTRIBUTES.items() if a in person]
    rng.shuffle(sentences)
    return " ".join(sentences)


def qa_lines(person: dict) -> list[str]:
    return [f"Q: {question.format(n=person['name'])}\nA: {person[a]}" for a, (_, _, question) in ATTRIBUTES.items()]


def qa_accuracy(model, tok, people: list[dict]) -> dict[str, float]:
    """Exact-match accuracy of greedy answers, per attribute and over all."""
    out = {}
    for a, (_, _, question) in ATTRIBUTES.items():
        answers = first_lines(model, tok, [f"Q: {question.format(n=p['name'])}\nA:" for p in people], 12)
        out[a] = mean([float(ans.strip() == p[a]) for ans, p in zip(answers, people)])
    out["all"] = mean([out[a] for a in ATTRIBUTES])
    return out


def _majority_baseline(people: list[dict]) -> float:
    """Always answering each question with its most common value among these people."""
    return mean([max(sum(p[a] == v for p in people) for v in values) / len(people)
                 for a, (values, _, _) in ATTRIBUTES.items()])


def _summarise(cfg, runs: dict, tested: list[dict]) -> dict:
    per_arm = {arm: {who: {k: mean_se([r[who][k] for r in runs[arm]]) for k in [*ATTRIBUTES, "all"]}
                     for who in ("tested", "trained")} for arm in ARMS}
    gain = mean_se([b["tested"]["all"] - a["tested"]["all"] for a, b in zip(runs["once"], runs["rewritten"])])
    return {"settings": vars(cfg), "per_arm": per_arm, "majority_baseline": _majority_baseline(tested),
            "paired_rewritten_minus_once": gain,
            "verdict": verdict(gain, "facts read in several wordings were extracted far better by questions about "
                                     "people never asked about in fine-tuning",
                               "facts read in one fixed wording were extracted better"),
            "runs": runs}


def _write_report(out: Path, cfg, results: dict) -> None:
    per = results["per_arm"]
    lines = [f"Claim (Allen-Zhu & Li 2023): knowledge stored from one fixed wording is not extractable by "
             f"questions; stored from several rewordings it is. {cfg.seeds} seed(s), {cfg.people} people "
             f"({cfg.people // 2} tested, never asked about in fine-tuning), {cfg.rewrites} biography documents "
             f"per person in both arms; depth {cfg.depth}, {cfg.steps} pretraining + {cfg.finetune_steps} "
             f"question-answer steps of {cfg.batch_size}×{cfg.seq_len} tokens.", "",
             "| arm | tested people: all | " + " | ".join(ATTRIBUTES) + " | fine-tuned people: all |",
             "|---|---:|" + "---:|" * len(ATTRIBUTES) + "---:|"]
    for arm in ARMS:
        lines.append(f"| {arm} | {fmt(per[arm]['tested']['all'])} | "
                     + " | ".join(fmt(per[arm]["tested"][a]) for a in ATTRIBUTES)
                     + f" | {fmt(per[arm]['trained']['all'])} |")
    lines += ["", f"- most-common-answer baseline on the tested people: {results['majority_baseline']:.3f}",
              f"- **verdict** (rewritten − once on the tested people, paired by seed: "
              f"{fmt(results['paired_rewritten_minus_once'])}): {results['verdict']}",
              "", "± is the standard error over seeds."]
    attrs = list(range(len(ATTRIBUTES)))
    series = {arm: (attrs, [per[arm]["tested"][a][0] for a in ATTRIBUTES]) for arm in ARMS}
    write_report(out, "Experiment: paraphrased knowledge is extractable", lines,
                 {"accuracy.png": plot_series(series, "attribute (" + ", ".join(ATTRIBUTES) + ")",
                                              "accuracy on people never asked about")})
