import random
import re

import numpy as np
import pytest

from lmforge.curate.dedup import DedupIndex, MinHasher, exact_key
from lmforge.curate.extract import Extractor
from lmforge.curate.readers import ReadLog, read_inputs

from .webdata import SAMPLE_WARC

BOILERPLATE = ("Mirror hosted by Example Networks. Copyright 2026 Example Networks Ltd. All rights "
               "reserved. Visit our sponsors for fast and reliable hosting. Report broken links to "
               "the webmaster of this mirror site. Subscribe to our newsletter for weekly updates.")


@pytest.fixture(scope="module")
def originals() -> list[str]:
    """Distinct real pages: the English Apache manual pages of the bundled WARC."""
    extract, texts, seen = Extractor(), [], set()
    for doc in read_inputs([SAMPLE_WARC], ReadLog()):
        if "/docs/2.4/en/" not in (doc.url or ""):
            continue
        doc = extract(doc)
        if doc and 250 <= len(doc.text.split()) and exact_key(doc.text) not in seen:
            seen.add(exact_key(doc.text))
            texts.append(doc.text)
        if len(texts) == 60:
            break
    assert len(texts) == 60
    return texts


def shuffle_sentences(text, rng):
    sentences = re.split(r"(?<=[.!?])\s+", text)
    rng.shuffle(sentences)
    return " ".join(sentences)


def edit_words(text, rng, rate=0.02):
    words = text.split()
    for i in range(len(words)):
        if rng.random() < rate:
            words[i] = rng.choice(["server", "module", "file", "request", "value"])
    return " ".join(words)


def append_boilerplate(text, rng):
    return text + "\n" + BOILERPLATE


# FineWeb's 14 x 8 bands (threshold ~0.72) miss some shuffled copies: reordering sentences
# breaks every shingle that spans a boundary. 20 x 5 (threshold ~0.55) catches them.
@pytest.mark.parametrize("bands,rows,min_shuffle_recall", [(14, 8, 0.8), (20, 5, 0.9)])
def test_planted_near_duplicates_precision_and_recall(originals, bands, rows, min_shuffle_recall):
    rng = random.Random(0)
    hasher = MinHasher(num_bands=bands, rows_per_band=rows, ngram_words=5)
    docs = list(originals)
    truth = {}  # copy index -> original index
    kinds = {}
    for i, make in enumerate([shuffle_sentences, edit_words, append_boilerplate] * 10):
        truth[len(docs)] = i
        kinds[len(docs)] = make.__name__
        docs.append(make(originals[i], rng))
    index = DedupIndex(num_bands=bands)
    for n, text in enumerate(docs):
        index.add(n, exact_key(text), hasher.signature(text))
    flagged = {n for n in range(len(docs)) if index.drop_reason(n)}
    true_pos = {n for n in flagged if n in truth and index._find(n) == index._find(truth[n])}
    precision = len(true_pos) / max(len(flagged), 1)
    recall = {k: np.mean([n in true_pos for n in truth if kinds[n] == k]) for k in set(kinds.values())}
    assert precision == 1.0, flagged - true_pos
    assert all(index.drop_reason(i) is None for i in range(len(originals)))  # originals kept
    assert recall["edit_words"] >= 0.9 and recall["append_boilerplate"] >= 0.9, recall
    assert recall["shuffle_sentences"] >= min_shuffle_recall, recall


def test_exact_duplicates_after_normalisation_and_cluster_sizes():
    text = "The Quick brown fox, jumps over the lazy dog 42 times today in the park near home."
    variants = [text, text.upper(), text.replace(",", ""), text.replace("42", "17")]
    index = DedupIndex(num_bands=14)
    hasher = MinHasher()
    for n, t in enumerate(variants + ["Something else entirely, with other words in it."]):
        index.add(n, exact_key(t), hasher.signature(t))
    assert [index.drop_reason(n) for n in range(5)] == [None] + ["exact_duplicate"] * 3 + [None]
    assert index.cluster_size_histogram() == {4: 1}


def test_signature_is_deterministic_and_estimates_jaccard():
    rng = random.Random(1)
    vocab = ["".join(rng.choice("abcdefghij") for _ in range(6)) for _ in range(5000)]
    words = [rng.choice(vocab) for _ in range(3000)]
    a, b = " ".join(words), " ".join(words[:2000] + [rng.choice(vocab) for _ in range(1000)])
    h1, h2 = MinHasher(seed=1), MinHasher(seed=1)
    assert np.array_equal(h1.signature(a), h2.signature(a))
    sa, sb = set(h1.shingle_hashes(a)), set(h1.shingle_hashes(b))
    true_j = len(sa & sb) / len(sa | sb)
    est_j = np.mean(h1.signature(a) == h1.signature(b))
    assert abs(true_j - est_j) < 0.12
