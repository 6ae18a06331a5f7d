"""`lmforge experiment unknown-knowledge`: does fine-tuning on facts the model does not know
teach it to hallucinate? (Gekhman et al. 2024, "Does Fine-Tuning LLMs on New Knowledge
Encourage Hallucinations?": Unknown fine-tuning examples are fitted far more slowly than
Known ones, and the more of them a fine-tuning set holds, the lower held-out accuracy ends
up.) And, with the same runs, "I don't know" pays (issue 12): the same fine-tuning with the
Unknown targets replaced by a refusal answers fewer Unknown questions wrongly, and holds its
accuracy on known ones.

    lmforge experiment unknown-knowledge            # 3 seeds × 5 fine-tunings, ~13 minutes on 2 cores
    lmforge experiment unknown-knowledge --quick    # 1 seed, a smoke run

The data is made here: the synthetic people of `paraphrase-knowledge` (a name, a birth city,
a university, a field, an employer), `people` of them. Of each person's four facts, a share
`stated_share` is written in pretraining and the rest never appear anywhere: those are
Unknown by construction, whatever the model guesses. Each person is mentioned in a number of
documents drawn from `mentions` (fame), each document a biography of the stated facts (a
wording drawn per sentence) followed by the same facts as question-answer lines, so what is
read is also askable (Allen-Zhu & Li's mixed training). Then per seed:

1. pretrain a small model from scratch on these documents (`lmforge pretrain`);
2. label every question HighlyKnown ... Unknown for it (`lmforge analyze knowledge`: several
   few-shot contexts, greedy and sampled);
3. build fine-tuning sets of `finetune_examples` questions with an Unknown share from
   `unknown_shares` (the rest Known = HighlyKnown or MaybeKnown; WeaklyKnown is left out, as
   on an answer space this small it is mostly luck), nested so that the sets differ only in
   that share, written as chat data by `lmforge data idk` with nothing abstained on; plus the
   **IDK arm**: the `idk_share` set with its Unknown targets replaced by "I don't know."
   (`lmforge data idk`'s default);
4. fine-tune each set for the same `finetune_steps` (`lmforge sft`), scoring every
   `eval_every_steps` how many of the set's Known and of its Unknown examples the model
   answers right (the fit) and its held-out Known accuracy;
5. answer the held-out questions (Known, WeaklyKnown, Unknown facts in no fine-tuning set):
   right, abstained, or wrong (a hallucination).

Verdicts, paired by seed: held-out Known accuracy at share 0 minus at the highest share (the
all-Known set is the baseline that could win); the area under the fit curve of Known minus
Unknown examples (averaged over the sets holding both); and, for the IDK arm against the
plain set of the same share, held-out Unknown questions answered wrongly and the held-out
Known accuracy.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lmforge.config import require
from lmforge.eval.accuracy import mean
from lmforge.eval.knowledge import CATEGORIES, normalise_answer
from lmforge.eval.run import EvalOptions, evaluate_task
from lmforge.eval.tasks import load_task
from lmforge.experiments.paraphrase import ATTRIBUTES, biographies, make_people, qa_lines
from lmforge.experiments.runs import sft_small, tokenize_docs, train_small
from lmforge.experiments.verdict import fmt, mean_se, verdict
from lmforge.model.load import load_pretrained
from lmforge.report import plot_series, write_report
from lmforge.stages.analyze import KnowledgeConfig, analyze_knowledge
from lmforge.stages.tokenizer import TokenizerTrainConfig, train_tokenizer
from lmforge.synth.idk import IDKConfig, idk
from lmforge.synth.stage import write_jsonl
from lmforge.tokenizer import Tokenizer

KNOWN = ("HighlyKnown", "MaybeKnown")  # what the fine-tuning sets count as Known
TEST_GROUPS = {"known": KNOWN, "weakly": ("WeaklyKnown",), "unknown": ("Unknown",)}
REFUSAL = IDKConfig.refusal
# The chat format of the fine-tuning is the pretraining's own question-answer lines (as
# Gekhman et al. fine-tune in the format they probe with): a model this small does not carry
# what it read over to a new format such as <|im_start|>user... (measured: held-out Known
# accuracy 0.13 after fine-tuning through our usual template, P_greedy 0.53 before). Contents
# are tokenized on their own, so the fine-tuning questions and answers carry the space that
# follows "Q:" and "A:" in pretraining (" Lisbon" is one token there, " " + "Lisbon" two).
QA_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}"
               "{{ m['content'] + eos_token + '\n' }}{% elif m['role'] == 'user' %}"
               "{{ 'Q:' + m['content'] + '\nA:' }}{% else %}{{ m['content'] + '\n' }}{% endif %}{% endfor %}")


@dataclass
class UnknownKnowledgeExperimentConfig:
    output: str = "runs/experiments/unknown-knowledge"  # report.md, results.json, every run under it
    people: int = 200  # four facts each: 4 × people questions
    stated_share: float = 0.6  # of all facts, the share pretraining states; the rest are never written
    mentions: list[int] = field(default_factory=lambda: [1, 2, 4, 8])  # documents per person, drawn per person
    finetune_examples: int = 120  # every fine-tuning set's size
    unknown_shares: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75])
    idk_share: float = 0.5  # the IDK arm: this share's set, Unknown targets replaced by the refusal
    test_questions: int = 150  # held-out questions per group (known, weakly, unknown) at most
    seeds: int = 3
    steps: int = 600  # pretraining steps
    finetune_steps: int = 120
    finetune_lr: float = 3e-4  # at 1e-3 every set was fitted within the first 20 steps: no fit speed to see
    eval_every_steps: int = 10  # fit and held-out accuracy over the fine-tuning steps
    exemplar_sets: int = 4  # knowledge labelling: few-shot contexts per question ...
    samples: int = 2  # ... and sampled answers per context (temperature 0.5)
    depth: int = 2  # model size (width 64·depth)
    seq_len: int = 128
    batch_size: int = 16
    finetune_batch_size: int = 8
    vocab_size: int = 1024
    quick: bool = False  # 1 seed, 100 + 30 steps, 60 people, 24-question sets: a smoke run, not evidence

    def __post_init__(self):
        for name in ("people", "seeds", "steps", "finetune_steps", "finetune_examples", "eval_every_steps"):
            require(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))
        require(0 < self.stated_share < 1, "stated_share", "in (0, 1)", self.stated_share)
        require(all(0 <= s < 1 for s in self.unknown_shares) and 0.0 in self.unknown_shares, "unknown_shares",
                "in [0, 1), including 0 (the baseline)", self.unknown_shares)
        require(self.idk_share in self.unknown_shares and self.idk_share > 0, "idk_share",
                "one of unknown_shares, above 0", self.idk_share)
        if self.quick:
            self.seeds, self.steps, self.finetune_steps, self.eval_every_steps = 1, 100, 30, 10
            self.people, self.finetune_examples, self.test_questions, self.depth = 60, 24, 30, 2
            self.exemplar_sets, self.samples, self.seq_len, self.finetune_batch_size = 2, 1, 64, 4


def run_unknown_knowledge(cfg: UnknownKnowledgeExperimentConfig) -> dict:
    out = Path(cfg.output)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    people, facts = make_world(cfg.people, cfg.stated_share)
    docs = fact_documents(people, facts, cfg.mentions)
    write_jsonl(data / "facts.jsonl", facts)
    write_jsonl(data / "qa.jsonl", [{"question": f["question"], "answer": f["answer"]} for f in facts])
    write_jsonl(data / "tokenizer_text.jsonl", docs + [{"id": f"q{i}", "text": f"{f['question']}\n{f['answer']}"}
                                                       for i, f in enumerate(facts)] + [{"id": "r", "text": REFUSAL}])
    train_tokenizer(TokenizerTrainConfig(input=[str(data / "tokenizer_text.jsonl")], output=str(data / "tokenizer"),
                                         vocab_size=cfg.vocab_size))
    config = json.loads((data / "tokenizer" / "tokenizer_config.json").read_text())
    (data / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": QA_TEMPLATE}))
    shards = tokenize_docs(data, "pretrain", docs)

    runs = []
    for seed in range(cfg.seeds):
        run = out / f"seed{seed}"
        base = train_small(run / "pretrain", shards, seed, cfg.steps, cfg.depth, cfg.seq_len, cfg.batch_size,
                           f"Q: {facts[0]['question']}\nA:")
        analyze_knowledge(KnowledgeConfig(model=str(base), qa=str(data / "qa.jsonl"), output=str(run / "knowledge"),
                                          exemplar_sets=cfg.exemplar_sets, samples=cfg.samples, seed=seed))
        labelled = [{**f, **row} for f, row in zip(facts, _read_jsonl(run / "knowledge" / "knowledge.jsonl"))]
        runs.append({"seed": seed, **_finetune_arms(cfg, run, base, labelled, seed)})
    results = _summarise(cfg, runs)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    _write_report(out, cfg, results)
    print(f"experiment unknown-knowledge: {results['verdict']['held_out']}; IDK: "
          f"{results['verdict']['idk_wrong']} -> {out / 'report.md'}")
    return results


def make_world(n_people: int, stated_share: float) -> tuple[list[dict], list[dict]]:
    """The people and one record per (person, attribute): its question, answer and whether
    pretraining states it. Fixed whatever the seed."""
    people, rng, facts = make_people(n_people), random.Random(3), []
    for p in people:
        for a, line in zip(ATTRIBUTES, qa_lines(p)):
            question = line.split("\n")[0].removeprefix("Q: ")
            facts.append({"id": f"{p['name']}/{a}", "name": p["name"], "attribute": a, "question": question,
                          "answer": p[a], "stated": rng.random() < stated_share})
    return people, facts


def fact_documents(people: list[dict], facts: list[dict], mentions: list[int]) -> list[dict]:
    """Per person, `fame` documents (fame drawn from `mentions`): a biography of the stated
    facts only, then those facts as question-answer lines, in a new order each time."""
    stated = {(f["name"], f["attribute"]) for f in facts if f["stated"]}
    rng, docs = random.Random(5), []
    for i, p in enumerate(people):
        known = {k: v for k, v in p.items() if k == "name" or (p["name"], k) in stated}
        if len(known) == 1:
            continue
        lines = [line for line, a in zip(qa_lines(p), ATTRIBUTES) if a in known]
        for j, bio in enumerate(biographies([known], rng.choice(mentions), rewritten=True)):
            rng.shuffle(lines)
            docs.append({"id": f"person{i}.{j}", "text": bio["text"] + "\n" + "\n".join(lines)})
    random.Random(6).shuffle(docs)
    return docs


def finetune_sets(cfg, labelled: list[dict], seed: int) -> tuple[dict[str, list[dict]], list[dict]]:
    """{arm: labelled rows} for each Unknown share (nested: the share-s set's Unknown rows
    are the first of one fixed order, its Known rows the first of another) and the held-out
    rows, which no set holds."""
    rng = random.Random(f"finetune{seed}")
    known = [r for r in labelled if r["category"] in KNOWN]
    unknown = [r for r in labelled if r["category"] == "Unknown"]
    rng.shuffle(known)
    rng.shuffle(unknown)
    n, most = cfg.finetune_examples, round(max(cfg.unknown_shares) * cfg.finetune_examples)
    if len(known) <= n or len(unknown) <= most:
        raise ValueError(f"the pretrained model knows {len(known)} facts and does not know {len(unknown)}: too few "
                         f"for fine-tuning sets of {n} with up to {most} Unknown and a held-out rest "
                         "(fewer finetune_examples or more people)")
    sets = {}
    for share in cfg.unknown_shares:
        k = round(share * n)
        sets[_arm(share)] = known[:n - k] + unknown[:k]
    used = {r["id"] for r in known[:n] + unknown[:most]}
    return sets, [r for r in labelled if r["id"] not in used]


def _finetune_arms(cfg, run: Path, base: Path, labelled: list[dict], seed: int) -> dict:
    sets, held_out = finetune_sets(cfg, labelled, seed)
    rng = random.Random(f"test{seed}")
    tests = {g: rng.sample(rows, min(len(rows), cfg.test_questions))
             for g, cats in TEST_GROUPS.items() if (rows := [r for r in held_out if r["category"] in cats])}
    arms = {**{a: (rows, []) for a, rows in sets.items()}, "idk": (sets[_arm(cfg.idk_share)], ["Unknown"])}
    out = {"categories": {c: sum(r["category"] == c for r in labelled) for c in CATEGORIES},
           "categories_of_unstated": {c: sum(r["category"] == c for r in labelled if not r["stated"])
                                      for c in CATEGORIES},
           "base_held_out_p_greedy": {g: mean([r["p_greedy"] for r in rows]) for g, rows in tests.items()},
           "arms": {}}
    for arm, (rows, abstain_on) in arms.items():
        arm_dir = run / arm
        write_jsonl(arm_dir / "knowledge.jsonl", [{**r, "question": " " + r["question"], "answer": " " + r["answer"]}
                                                  for r in rows])  # the spaces: see QA_TEMPLATE
        idk(IDKConfig(knowledge=str(arm_dir / "knowledge.jsonl"), output=str(arm_dir / "sft.jsonl"),
                      abstain_on=abstain_on, refusal=" " + REFUSAL))
        refuse = bool(abstain_on)
        fit = {"fit_known": [r for r in rows if r["category"] != "Unknown"],
               "fit_unknown": [{**r, "answer": REFUSAL} if refuse else r for r in rows if r["category"] == "Unknown"],
               "held_out_known": tests["known"]}
        tasks = [_write_task(arm_dir / "tasks", name, rs) for name, rs in fit.items() if rs]
        model = sft_small(arm_dir / "sft", base, arm_dir / "sft.jsonl", seed, cfg.finetune_steps, cfg.seq_len,
                          cfg.finetune_batch_size, " " + rows[0]["question"], lr=cfg.finetune_lr, val_fraction=0.0, eval_tasks=tasks,
                          eval_every_steps=cfg.eval_every_steps)
        out["arms"][arm] = {"held_out": _answer_held_out(model, arm_dir / "tasks", tests),
                            "curves": _curves(arm_dir / "sft" / "metrics.jsonl", list(fit))}
        print(f"unknown-knowledge seed {seed} {arm}: held-out "
              + ", ".join(f"{g} {v['right']:.3f} right / {v['abstained']:.3f} abstained"
                          for g, v in out["arms"][arm]["held_out"].items()))
    return out


def _write_task(tasks: Path, name: str, rows: list[dict]) -> str:
    """An `lmforge eval` generative task: the question as the user turn (after "Q:"), the
    first line of the answer matched exactly."""
    write_jsonl(tasks / f"{name}.jsonl", [{"prompt": " " + r["question"], "answer": r["answer"]} for r in rows])
    (tasks / f"{name}.yaml").write_text(yaml.safe_dump({
        "name": name, "kind": "generative", "data": f"{name}.jsonl", "extract": "first_line", "match": "exact",
        "max_new_tokens": 16}))
    return str(tasks / f"{name}.yaml")


def _answer_held_out(model_dir: Path, tasks: Path, tests: dict[str, list[dict]]) -> dict[str, dict]:
    """Per held-out group, the shares of questions answered right, with the refusal, and
    wrongly (anything else)."""
    model, tok = load_pretrained(model_dir)
    out = {}
    for group, rows in tests.items():
        _, answers = evaluate_task(model, tok, load_task(_write_task(tasks, f"test_{group}", rows)), EvalOptions())
        right = [a["correct"] for a in answers]
        refused = [not a["correct"] and is_refusal(a["completion"]) for a in answers]
        out[group] = {"n": len(rows), "right": mean(right), "abstained": mean(refused),
                      "wrong": 1 - mean(right) - mean(refused)}
    return out


def is_refusal(completion: str) -> bool:
    return "dont know" in normalise_answer(completion)  # "I don't know.", "i dont know", ...


def _curves(metrics: Path, names: list[str]) -> dict[str, list[tuple[int, float]]]:
    rows = _read_jsonl(metrics)
    return {name: [(r["step"], r[f"eval/{name}/exact_match"]) for r in rows if f"eval/{name}/exact_match" in r]
            for name in names}


def _summarise(cfg, runs: list[dict]) -> dict:
    shares = sorted(cfg.unknown_shares)
    arms = [*map(_arm, shares), "idk"]
    held = {arm: {g: {k: mean_se([r["arms"][arm]["held_out"][g][k] for r in runs if g in r["arms"][arm]["held_out"]])
                      for k in ("right", "abstained", "wrong")} for g in TEST_GROUPS} for arm in arms}
    best = {arm: mean_se([max(v for _, v in r["arms"][arm]["curves"]["held_out_known"]) for r in runs])
            for arm in arms}
    drop = mean_se([r["arms"][_arm(0.0)]["held_out"]["known"]["right"]
                    - r["arms"][_arm(shares[-1])]["held_out"]["known"]["right"] for r in runs])
    both = [_arm(s) for s in shares if s > 0]
    fit_gap = mean_se([mean([_auc(r["arms"][a]["curves"]["fit_known"]) - _auc(r["arms"][a]["curves"]["fit_unknown"])
                             for a in both]) for r in runs])
    plain = _arm(cfg.idk_share)
    idk_wrong = mean_se([r["arms"][plain]["held_out"]["unknown"]["wrong"] - r["arms"]["idk"]["held_out"]["unknown"]["wrong"]
                         for r in runs])
    idk_known = mean_se([r["arms"]["idk"]["held_out"]["known"]["right"] - r["arms"][plain]["held_out"]["known"]["right"]
                         for r in runs])
    return {"settings": vars(cfg),
            "categories": {c: mean_se([r["categories"][c] for r in runs]) for c in CATEGORIES},
            "categories_of_unstated": {c: mean_se([r["categories_of_unstated"][c] for r in runs]) for c in CATEGORIES},
            "base_held_out_p_greedy": {g: mean_se([r["base_held_out_p_greedy"][g] for r in runs])
                                       for g in TEST_GROUPS if all(g in r["base_held_out_p_greedy"] for r in runs)},
            "held_out": held, "best_held_out_known_over_steps": best,
            "fit_auc": {a: {k: mean_se([_auc(r["arms"][a]["curves"][k]) for r in runs])
                            for k in ("fit_known", "fit_unknown") if r_has(runs, a, k)} for a in arms},
            "paired": {"held_out_known_share0_minus_max": drop, "fit_auc_known_minus_unknown": fit_gap,
                       "idk_wrong_unknown_plain_minus_idk": idk_wrong, "idk_known_right_idk_minus_plain": idk_known},
            "verdict": {
                "held_out": verdict(drop, f"held-out Known accuracy is lower after fine-tuning with "
                                          f"{shares[-1]:.0%} Unknown examples than with none",
                                    "more Unknown examples gave higher held-out accuracy"),
                "fit": verdict(fit_gap, "Known fine-tuning examples are fitted faster than Unknown ones",
                               "Unknown examples are fitted faster"),
                "idk_wrong": verdict(idk_wrong, "with IDK data fewer held-out Unknown questions are answered "
                                                "wrongly", "IDK data made more wrong answers"),
                "idk_known": holds(idk_known, "held-out Known accuracy with IDK data")},
            "runs": runs}


def holds(paired: tuple[float, float], what: str) -> str:
    """For a claim that something does *not* drop: a fall beyond 2 SE is a failure."""
    m, se = paired
    if se != se:
        return f"one seed only (difference {m:+.4f}): no verdict"
    if m < -2 * se:
        return f"{what} fell (by {-m:.4f} ± {se:.4f}, > 2 SE): does not hold"
    return f"{what} holds (difference {m:+.4f} ± {se:.4f}, no fall beyond 2 SE)"


def r_has(runs: list[dict], arm: str, key: str) -> bool:
    return all(r["arms"][arm]["curves"].get(key) for r in runs)


def _auc(curve: list[tuple[int, float]]) -> float:
    """Mean accuracy over the evaluation points: 1 for a set fitted at the first one."""
    return mean([v for _, v in curve])


def _count(m: tuple[float, float]) -> str:
    return f"{m[0]:.1f} ± {m[1]:.1f}" if m[1] == m[1] else f"{m[0]:.0f}"


def _arm(share: float) -> str:
    return f"unknown{round(100 * share)}"


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _write_report(out: Path, cfg, results: dict) -> None:
    shares = sorted(cfg.unknown_shares)
    held, paired, v = results["held_out"], results["paired"], results["verdict"]
    cats = results["categories"]
    lines = [f"Claim (Gekhman et al. 2024): fine-tuning examples the model does not know are fitted slowly, and "
             f"the more of them a fine-tuning set holds, the lower held-out accuracy; and (issue 12) the same "
             f"fine-tuning with the Unknown targets answered \"{REFUSAL}\" answers fewer Unknown questions wrongly "
             f"while known accuracy holds. {cfg.seeds} seed(s); {cfg.people} people × {len(ATTRIBUTES)} facts, "
             f"{cfg.stated_share:.0%} of them stated in pretraining; depth {cfg.depth}, {cfg.steps} pretraining "
             f"steps of {cfg.batch_size}×{cfg.seq_len} tokens; fine-tuning sets of {cfg.finetune_examples} "
             f"questions, {cfg.finetune_steps} steps each.", "",
             "Knowledge categories of the pretrained model (all questions; of the never-stated facts): "
             + ", ".join(f"{c} {_count(cats[c])} ({_count(results['categories_of_unstated'][c])})"
                         for c in CATEGORIES),
             "", "| fine-tuning set | held-out Known: right | best over steps | held-out Unknown: wrong | "
                 "abstained | fit AUC Known | fit AUC Unknown |", "|---|---:|---:|---:|---:|---:|---:|"]
    for arm in [*map(_arm, shares), "idk"]:
        name = f"{arm.removeprefix('unknown')}% Unknown" if arm != "idk" else f"{cfg.idk_share:.0%} Unknown → IDK"
        auc = results["fit_auc"][arm]
        lines.append(f"| {name} | {fmt(held[arm]['known']['right'])} | "
                     f"{fmt(results['best_held_out_known_over_steps'][arm])} | {fmt(held[arm]['unknown']['wrong'])} | "
                     f"{fmt(held[arm]['unknown']['abstained'])} | {fmt(auc.get('fit_known', (float('nan'),) * 2))} | "
                     f"{fmt(auc.get('fit_unknown', (float('nan'),) * 2))} |")
    base = results["base_held_out_p_greedy"]
    lines += ["", f"- the pretrained model, few-shot, on the held-out Known questions: {fmt(base['known'])} (P_greedy)",
              f"- **held-out accuracy** (share 0 − share {shares[-1]:.0%}, paired by seed: "
              f"{fmt(paired['held_out_known_share0_minus_max'])}): {v['held_out']}",
              f"- **fit speed** (area under the fit curve, Known − Unknown examples: "
              f"{fmt(paired['fit_auc_known_minus_unknown'])}): {v['fit']}",
              f"- **IDK, wrong answers** (held-out Unknown answered wrongly, plain − IDK: "
              f"{fmt(paired['idk_wrong_unknown_plain_minus_idk'])}): {v['idk_wrong']}",
              f"- **IDK, known accuracy** (IDK − plain: {fmt(paired['idk_known_right_idk_minus_plain'])}): "
              f"{v['idk_known']}",
              "", "± is the standard error over seeds. Fit AUC: the mean exact-match accuracy on the set's own "
                  f"examples over the evaluations every {cfg.eval_every_steps} steps."]
    seed0 = results["runs"][0]["arms"]
    fit = {f"{arm} {k.removeprefix('fit_')}": tuple(map(list, zip(*c)))
           for arm in map(_arm, shares) for k, c in seed0[arm]["curves"].items() if k.startswith("fit_") and c}
    write_report(out, "Experiment: fine-tuning on unknown knowledge", lines, {
        "held_out.png": plot_series({"held-out Known, right": (shares, [held[_arm(s)]["known"]["right"][0]
                                                                       for s in shares]),
                                     "held-out Unknown, wrong": (shares, [held[_arm(s)]["unknown"]["wrong"][0]
                                                                          for s in shares])},
                                    "share of Unknown examples in the fine-tuning set", "share (mean over seeds)"),
        "fit.png": plot_series(fit, "fine-tuning step (seed 0)", "exact match on the set's own examples")})
