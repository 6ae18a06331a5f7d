"""Write data/eval/corpus_cloze.jsonl: a sentence-completion multiple-choice task made from the
bundled public-domain corpus (Moby Dick, State of the Union addresses 1961-2016).

    python scripts/make_eval_tasks.py [--seed 0] [--per_source 150]

Each example is a HellaSwag-style cloze: the context is up to ~400 characters of a document
followed by the first part of a sentence (cut at a word boundary, 35-65% of its words); the
gold choice is the rest of that sentence; three distractors are the ends of sentences from
*other* documents of the same source (so style and vocabulary match and only coherence with
the context tells them apart), each within 0.75-1.33x the gold's length in characters (so
neither acc nor acc_norm can win by length alone). Written in the canonical multiple-choice
form {"context", "choices", "gold"} plus "id" (document and sentence). The choices carry no
leading space: the scorer (and lm-eval) put the " " delimiter between context and choice.
Deterministic: the same seed writes the same file.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data" / "corpus"
OUT = ROOT / "data" / "eval" / "corpus_cloze.jsonl"
SOURCES = ("en_moby_dick", "en_sotu")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'“‘(A-Z])")
# A period after these ends no sentence ("Harry S. Truman", "Mr. Speaker", "U.S. Navy").
ABBREVIATION = re.compile(r"(?:\b[A-Z]|\bMrs?|\bMs|\bDr|\bSt|\bJr|\bSr|\bGen|\bGov|\bSen|\bRep|\bNo|U\.S)\.$")
CONTEXT_CHARS = 400  # preceding text kept before the cut sentence (whole sentences)
NUM_CHOICES = 4


def sentences(text: str) -> list[str]:
    """Sentences of a document, paragraph by paragraph, whitespace collapsed."""
    out = []
    for paragraph in re.split(r"\n\s*\n", text):
        pieces: list[str] = []
        for piece in SENTENCE_END.split(" ".join(paragraph.split())):
            if pieces and ABBREVIATION.search(pieces[-1]):
                pieces[-1] += " " + piece
            elif piece:
                pieces.append(piece)
        out += pieces
    return out


def usable(sentence: str) -> bool:
    words = sentence.split()
    return 10 <= len(words) <= 40 and 60 <= len(sentence) <= 240 and sentence[-1] in ".!?"


def candidates(doc_id: str, text: str, rng: random.Random) -> list[dict]:
    """Every usable sentence with enough text before it, cut at a seeded word."""
    sents = sentences(text)
    found = []
    for i, sentence in enumerate(sents):
        if i < 2 or not usable(sentence):
            continue
        before = []
        for previous in reversed(sents[:i]):
            if before and len(previous) + sum(len(s) + 1 for s in before) > CONTEXT_CHARS:
                break
            before.insert(0, previous)
        words = sentence.split()
        cut = rng.randint(round(0.35 * len(words)), round(0.65 * len(words)))
        found.append({"id": f"{doc_id}#{i}", "doc": doc_id,
                      "context": " ".join(before + words[:cut]), "ending": " ".join(words[cut:])})
    return found


def distractors(gold: dict, pool: list[dict], rng: random.Random, k: int) -> list[str] | None:
    n = len(gold["ending"])
    fits = [c["ending"] for c in pool if c["doc"] != gold["doc"] and 0.75 * n <= len(c["ending"]) <= 1.33 * n
            and c["ending"] != gold["ending"]]
    fits = sorted(set(fits))
    return rng.sample(fits, k) if len(fits) >= k else None


def make_source(name: str, per_source: int, rng: random.Random) -> list[dict]:
    with gzip.open(CORPUS / f"{name}.jsonl.gz", "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    pool = [c for d in docs for c in candidates(d["id"], d["text"], rng)]
    examples = []
    for gold in rng.sample(pool, len(pool)):
        others = distractors(gold, pool, rng, NUM_CHOICES - 1)
        if others is None:
            continue
        choices = others + [gold["ending"]]
        rng.shuffle(choices)
        examples.append({"id": gold["id"], "context": gold["context"], "choices": choices,
                         "gold": choices.index(gold["ending"])})
        if len(examples) == per_source:
            break
    return examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per_source", type=int, default=150, help="examples from each corpus file")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    examples = [e for name in SOURCES for e in make_source(name, args.per_source, rng)]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        for e in examples:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")
    print(f"wrote {len(examples)} examples to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
