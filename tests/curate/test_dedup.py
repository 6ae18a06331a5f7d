import random

import numpy as np
import pytest

from lmforge.curate.dedup import DedupIndex, MinHasher, exact_key
from lmforge.curate.extract import Extractor
from lmforge.curate.readers import ReadLog, read_inputs

from .webdata import SAMPLE_WARC, append_boilerplate, edit_words, shuffle_sentences


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


def planted_copies(originals):
    """One copy of each original, the three kinds in turn: (docs, copy index -> original, kinds)."""
    rng = random.Random(0)
    docs, truth, kinds = list(originals), {}, {}
    for i, make in enumerate([shuffle_sentences, edit_words, append_boilerplate] * 20):
        truth[len(docs)], kinds[len(docs)] = i, make.__name__
        docs.append(make(originals[i], rng))
    return docs, truth, kinds


# Plain LSH (signatures only, no containment check). Expected recall is the LSH S-curve
# 1 - (1 - J^rows)^bands at each copy's Jaccard J. Shingles stop at sentence ends, so shuffled
# copies keep J ~ 1 (with 5-grams across sentences J was ~0.7 and 14 x 8 caught ~60%).
# Edits (J ~ 0.8): ~90% at 14 x 8. test_near_dup.py tests the default recipe.
@pytest.mark.parametrize("bands,rows,min_recall", [
    (14, 8, {"shuffle_sentences": 0.4, "edit_words": 0.75, "append_boilerplate": 0.95}),
    (20, 5, {"shuffle_sentences": 0.9, "edit_words": 0.9, "append_boilerplate": 0.95}),
])
def test_planted_near_duplicates_precision_and_recall(originals, bands, rows, min_recall):
    hasher = MinHasher(num_bands=bands, rows_per_band=rows, ngram_words=5)
    docs, truth, kinds = planted_copies(originals)
    index = DedupIndex(num_bands=bands)
    for n, text in enumerate(docs):
        index.add(n, exact_key(text), hasher.signature(text))
    flagged = {n for n in range(len(docs)) if index.drop_reason(n)}
    true_pos = {n for n in flagged if n in truth and index._find(n) == index._find(truth[n])}
    precision = len(true_pos) / max(len(flagged), 1)
    recall = {k: np.mean([n in true_pos for n in truth if kinds[n] == k]) for k in min_recall}
    assert precision == 1.0, flagged - true_pos
    assert all(index.drop_reason(i) is None for i in range(len(originals)))  # originals kept
    assert all(recall[k] >= min_recall[k] for k in min_recall), recall


def test_signature_agreement_estimates_jaccard_without_bias(originals):
    """112 independent hashes: error ~ binomial, sqrt(J(1-J)/112) ~ 0.04. Catches correlated
    hash functions (the earlier (a*x+b) mod 2^61-1 with a, b < 2^32 barely wrapped: RMSE 0.16)."""
    hasher = MinHasher()
    docs, truth, _ = planted_copies(originals)
    errors = []
    for copy, orig in truth.items():
        sa, sb = (set(hasher.shingle_hashes(docs[n]).tolist()) for n in (orig, copy))
        estimate = np.mean(hasher.signature(docs[orig]) == hasher.signature(docs[copy]))
        errors.append(estimate - len(sa & sb) / len(sa | sb))
    assert abs(np.mean(errors)) < 0.02 and np.sqrt(np.mean(np.square(errors))) < 0.06


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
