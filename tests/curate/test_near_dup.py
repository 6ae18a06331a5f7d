"""The default near-duplicate recipe (sentence-bounded shingles, 37 x 3 LSH, containment check)
on copies of real Moby Dick chapters: every kind of copy is caught, pages that only share a
licence are kept. bench/near_dup_eval.py measures the same at scale."""

import gzip
import json
import random
from pathlib import Path

import pytest

from lmforge.curate.dedup import DedupIndex, MinHasher, exact_key

from .webdata import BOILERPLATE, edit_words, shuffle_sentences

CORPUS = Path(__file__).resolve().parents[2] / "data" / "corpus" / "en_moby_dick.jsonl.gz"
LICENCE = ("Permission is hereby granted, free of charge, to any person obtaining a copy of this "
           "software and associated documentation files, to deal in the Software without "
           "restriction, including without limitation the rights to use, copy, modify, merge, "
           "publish, distribute, sublicense, and/or sell copies of the Software. The above copyright "
           "notice and this permission notice shall be included in all copies or substantial portions "
           "of the Software. THE SOFTWARE IS PROVIDED AS IS, WITHOUT WARRANTY OF ANY KIND, EXPRESS OR "
           "IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A "
           "PARTICULAR PURPOSE AND NONINFRINGEMENT. ")


@pytest.fixture(scope="module")
def chapters() -> list[str]:
    """Distinct chapters of 400-1500 words, cut to 400 words so copies stay small and fast."""
    with gzip.open(CORPUS, "rt") as f:
        texts = [json.loads(line)["text"] for line in f]
    return [" ".join(t.split()[:400]) for t in texts if 400 <= len(t.split()) <= 1500][:30]


def excerpt(text, rng):  # the middle 60% of a page
    words = text.split()
    return " ".join(words[len(words) // 5: -len(words) // 5])


def superset(text, rng, other=""):  # a page that embeds this one whole
    return text + "\n" + other


def reflow(text, rng):  # the same text wrapped at 70 characters by another site
    import textwrap
    return "\n".join(textwrap.wrap(text, 70))


def boilerplate(text, rng):
    return BOILERPLATE + "\n" + text + "\n" + BOILERPLATE


KINDS = [boilerplate, edit_words, shuffle_sentences, reflow, excerpt, superset]


def dedup(texts: list[str], **index_kw) -> DedupIndex:
    hasher, index = MinHasher(37, 3), DedupIndex(37, **index_kw)
    for n, text in enumerate(texts):
        index.add(n, exact_key(text), *hasher.sketch(text))
    return index


@pytest.mark.parametrize("make", KINDS, ids=lambda f: f.__name__)
def test_each_kind_of_copy_is_caught(chapters, make):
    rng = random.Random(0)
    originals, fillers = chapters[:10], chapters[10:20]
    copies = [superset(t, rng, chapters[20 + i]) if make is superset else make(t, rng)
              for i, t in enumerate(originals)]
    index = dedup(originals + fillers + copies)
    n = len(originals) + len(fillers)
    assert all(index.kept_copy(n + i) == index.kept_copy(i) for i in range(len(copies)))
    assert sum(index.drop_reason(i) is not None for i in range(n + len(copies))) == len(copies)


def test_pages_sharing_a_licence_are_kept(chapters):
    """~40% of each page is the same licence text (containment ~0.4 < 0.75): all are kept."""
    pages = [LICENCE * 2 + " ".join(t.split()[:150]) for t in chapters[:10]]
    index = dedup(pages)
    assert all(index.drop_reason(i) is None for i in range(len(pages)))


def test_excerpt_seen_first_gives_way_to_the_full_page(chapters):
    rng = random.Random(0)
    index = dedup([excerpt(chapters[0], rng), chapters[0], chapters[1]])
    assert [index.drop_reason(i) for i in range(3)] == ["near_duplicate", None, None]
    assert index.kept_copy(0) == 1 and index.clusters() == {1: [0, 1]}


def test_plain_lsh_without_shingle_counts(chapters):
    """Signature only (synth/select.py): every band collision is a duplicate, as before."""
    hasher, index = MinHasher(), DedupIndex(14)
    texts = [chapters[0], shuffle_sentences(chapters[0], random.Random(1)), chapters[1]]
    for n, text in enumerate(texts):
        index.add(n, exact_key(text), hasher.signature(text))
    assert [index.drop_reason(i) for i in range(3)] == [None, "near_duplicate", None]


def test_shingles_ignore_sentence_order_and_line_breaks():
    hasher = MinHasher()
    a = "The whale rose. It was white and very old!\nNobody on deck said a word."
    b = "Nobody on deck said\na word. The whale rose. It was white and very old!"
    assert set(hasher.shingle_hashes(a).tolist()) == set(hasher.shingle_hashes(b).tolist())
    assert len(set(hasher.shingle_hashes(a).tolist())) == 1 + 2 + 2  # short sentence: 1 shingle
