"""Model-based quality score: a hashed bag-of-words logistic regression, trained here.

    train_quality_model(good_texts, bad_texts, "quality.npz")
    f = QualityModelFilter("quality.npz", min_score=0.5)   # --filters.quality_model.model quality.npz

A linear model over hashed word unigrams and bigrams (2^18 buckets) is the small cousin of
FineWeb-Edu's classifier: cheap enough for every document, trainable from any two sets of
examples (e.g. curated reference text vs. rejected crawl pages).
"""

from __future__ import annotations

import numpy as np
import xxhash

from lmforge.curate.dedup import normalize_text
from lmforge.curate.filters import Filter

NUM_BUCKETS = 1 << 18


def features(text: str) -> np.ndarray:
    """Bucket ids of the document's word unigrams and bigrams (with repeats)."""
    words = normalize_text(text).split()
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    return np.fromiter((xxhash.xxh32_intdigest(g.encode()) % NUM_BUCKETS for g in grams),
                       dtype=np.int64, count=len(grams))


def score(weights: np.ndarray, bias: float, text: str) -> float:
    ids = features(text)
    z = bias + (weights[ids].sum() / np.sqrt(len(ids)) if len(ids) else 0.0)
    return float(1.0 / (1.0 + np.exp(-z)))


def train_quality_model(good: list[str], bad: list[str], path: str, epochs: int = 20,
                        lr: float = 0.5, l2: float = 1e-4, seed: int = 0) -> None:
    """Logistic regression by SGD; saves `weights` and `bias` to an .npz file."""
    data = [(features(t), 1.0) for t in good] + [(features(t), 0.0) for t in bad]
    weights, bias = np.zeros(NUM_BUCKETS, dtype=np.float32), 0.0
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for i in rng.permutation(len(data)):
            ids, label = data[i]
            norm = np.sqrt(max(len(ids), 1))
            p = 1.0 / (1.0 + np.exp(-(bias + weights[ids].sum() / norm)))
            grad = p - label
            np.add.at(weights, ids, -lr * (grad / norm + l2 * weights[ids]))
            bias -= lr * grad
    np.savez(path, weights=weights, bias=np.float32(bias))


class QualityModelFilter(Filter):
    name = "quality_model"

    def __init__(self, model: str, min_score: float = 0.5):
        super().__init__()
        saved = np.load(model)
        self.weights, self.bias = saved["weights"], float(saved["bias"])
        self.min_score = min_score

    def reject(self, doc):
        doc.metadata["quality_score"] = round(score(self.weights, self.bias, doc.text), 4)
        return "low_quality_score" if doc.metadata["quality_score"] < self.min_score else None
