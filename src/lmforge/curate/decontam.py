"""Decontamination: drop training documents that share long n-grams with evaluation data.

    f = DecontaminationFilter(["evals/qa.jsonl"], ngram_words=13)
    doc = f(doc)   # None when the document contains any 13-gram of the evaluation texts

13 words follows GPT-3's contamination study (Brown et al. 2020, appendix C): long enough
that a shared n-gram is almost never chance, short enough to catch a copied question.
Evaluation files are JSONL (every string field of each row counts) or plain text.
"""

from __future__ import annotations

import json
from pathlib import Path

import xxhash

from lmforge.curate.dedup import normalize_text
from lmforge.curate.filters import Filter
from lmforge.errors import InputError


class DecontaminationFilter(Filter):
    name = "decontamination"

    def __init__(self, eval_files: list[str], ngram_words: int = 13, min_matches: int = 1):
        super().__init__()
        self.ngram_words, self.min_matches = ngram_words, min_matches
        self.eval_ngrams = frozenset(h for text in _eval_texts(eval_files)
                                     for h in ngram_hashes(text, ngram_words))

    def reject(self, doc):
        if not self.eval_ngrams:
            return None
        hits = sum(h in self.eval_ngrams for h in ngram_hashes(doc.text, self.ngram_words))
        return "eval_overlap" if hits >= self.min_matches else None


def ngram_hashes(text: str, n: int) -> set[int]:
    words = normalize_text(text).split()
    return {xxhash.xxh64_intdigest(" ".join(words[i:i + n]).encode()) for i in range(len(words) - n + 1)}


def _eval_texts(paths: list[str]):
    for path in map(Path, paths):
        if not path.exists():
            raise InputError("evaluation file does not exist", path)
        if path.suffix not in (".jsonl", ".json"):
            yield path.read_text(encoding="utf-8", errors="replace")
            continue
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise InputError(f"malformed JSONL record: {e}", path, lineno) from None
            yield from (v for v in (row.values() if isinstance(row, dict) else [row])
                        if isinstance(v, str))
