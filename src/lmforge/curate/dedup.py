"""Exact and MinHash-LSH near-duplicate detection.

    hasher = MinHasher(num_bands=14, rows_per_band=8, ngram_words=5)
    sig = hasher.signature(text)                    # in workers: (14*8,) uint32
    index = DedupIndex(num_bands=14)
    index.add(doc_no, exact_key(text), sig)   # in the driver, in input order
    ...
    index.drop_reason(doc_no)                 # after all adds: None = keep

Signatures are computed in parallel next to extraction; clustering runs in one place so the
kept document of each cluster (the first in input order) never depends on scheduling.
FineWeb's settings: word 5-gram shingles, 14 bands x 8 rows (threshold ~0.72).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter

import numpy as np
import xxhash

_NON_WORD = re.compile(r"[^\w\s]+")
_DIGITS = re.compile(r"\d+")


def normalize_text(text: str) -> str:
    """Lowercase, NFKC, no punctuation, digits collapsed to 0, single spaces (FineWeb-like)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _DIGITS.sub("0", _NON_WORD.sub(" ", text))
    return " ".join(text.split())


def exact_key(text: str) -> bytes:
    return hashlib.blake2b(normalize_text(text).encode(), digest_size=16).digest()


class MinHasher:
    """Vectorised MinHash: one numpy (hashes x shingles) pass per document.

    Shingle hashes are 32-bit: xxhash of each word, combined as a polynomial over the n words
    of a shingle. Each of the 112 hash functions is multiply-add-shift,
    h(x) = ((a*x + b) mod 2^64) >> 32 with random 64-bit a, b (Dietzfelbinger 1996: strongly
    universal for 32-bit keys). uint64 arithmetic wraps mod 2^64 for free, so there is no
    modulo: the (a*x + b) mod (2^61 - 1) of datasketch/datatrove made our permutation step 10x
    slower in numpy (bench/curate.py, section "minhash"). a and b must span 64 bits: with
    a, b < 2^32 (our earlier version) a*x + b barely wraps the modulus, stays nearly monotone in
    x and the hashes are correlated (Jaccard estimate RMSE 0.16 instead of ~0.04).
    """

    def __init__(self, num_bands: int = 14, rows_per_band: int = 8, ngram_words: int = 5,
                 seed: int = 1):
        self.num_bands, self.rows_per_band, self.ngram_words = num_bands, rows_per_band, ngram_words
        n = num_bands * rows_per_band
        rng = np.random.default_rng(seed)
        self.a = rng.integers(0, 1 << 64, size=n, dtype=np.uint64)
        self.b = rng.integers(0, 1 << 64, size=n, dtype=np.uint64)

    @property
    def num_hashes(self) -> int:
        return self.num_bands * self.rows_per_band

    def shingle_hashes(self, text: str) -> np.ndarray:
        """32-bit hashes (as uint64) of the word n-grams, in text order; repeats are kept."""
        words = normalize_text(text).split()
        if not words:
            return np.zeros(1, dtype=np.uint64)
        word_h = np.fromiter((xxhash.xxh32_intdigest(w.encode()) for w in words), dtype=np.uint64,
                             count=len(words))
        n = min(self.ngram_words, len(words))
        count = len(words) - n + 1
        shingle = word_h[:count].copy()
        for k in range(1, n):  # polynomial combine; wraps mod 2^64, then folded to 32 bits
            shingle *= np.uint64(0x100000001B3)
            shingle += word_h[k:count + k]
        shingle ^= shingle >> np.uint64(32)
        return shingle & np.uint64(0xFFFFFFFF)

    def signature(self, text: str) -> np.ndarray:
        """(num_hashes,) uint32. Repeated shingles need no np.unique: a minimum ignores them."""
        h = self.shingle_hashes(text)
        perm = np.multiply.outer(self.a, h)  # (hashes, shingles): each min runs over one row
        perm += self.b[:, None]
        perm >>= np.uint64(32)
        return perm.min(axis=1).astype(np.uint32)


class DedupIndex:
    """Exact-hash table plus LSH band buckets; union-find turns band collisions into clusters."""

    def __init__(self, num_bands: int = 14, exact: bool = True, near: bool = True,
                 min_jaccard: float = 0.0):
        self.num_bands, self.exact, self.near = num_bands, exact, near
        self.min_jaccard = min_jaccard  # >0: confirm a band collision by estimated Jaccard
        self._exact: dict[bytes, int] = {}
        self._buckets: list[dict[bytes, int]] = [{} for _ in range(num_bands)]
        self._parent: dict[int, int] = {}
        self._signatures: dict[int, np.ndarray] = {}
        self._exact_copies: set[int] = set()

    def add(self, doc_no: int, key: bytes | None, signature: np.ndarray | None) -> None:
        """Register a document (doc_no increasing in input order)."""
        self._parent[doc_no] = doc_no
        if self.exact and key is not None:
            first = self._exact.setdefault(key, doc_no)
            if first != doc_no:
                self._union(first, doc_no)
                self._exact_copies.add(doc_no)
                return  # identical text: its bands would only repeat the first copy's
        if self.near and signature is not None:
            if self.min_jaccard > 0:
                self._signatures[doc_no] = signature
            for band, chunk in enumerate(signature.reshape(self.num_bands, -1)):
                other = self._buckets[band].setdefault(chunk.tobytes(), doc_no)
                if other != doc_no and self._confirm(other, doc_no, signature):
                    self._union(other, doc_no)

    def drop_reason(self, doc_no: int) -> str | None:
        """After all adds: None for the kept representative (earliest member) of its cluster."""
        if self._find(doc_no) == doc_no:
            return None
        return "exact_duplicate" if doc_no in self._exact_copies else "near_duplicate"

    def _confirm(self, other: int, doc_no: int, signature: np.ndarray) -> bool:
        if self.min_jaccard <= 0:
            return True
        return float(np.mean(self._signatures[other] == signature)) >= self.min_jaccard

    def _find(self, x: int) -> int:
        while self._parent[x] != x:
            self._parent[x] = self._parent[self._parent[x]]
            x = self._parent[x]
        return x

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:  # the earlier document stays the root: it is the one we keep
            self._parent[max(ra, rb)] = min(ra, rb)

    def clusters(self) -> dict[int, list[int]]:
        """Representative -> members, for clusters with more than one document."""
        groups: dict[int, list[int]] = {}
        for x in self._parent:
            groups.setdefault(self._find(x), []).append(x)
        return {root: sorted(m) for root, m in groups.items() if len(m) > 1}

    def cluster_size_histogram(self) -> dict[int, int]:
        return dict(sorted(Counter(len(m) for m in self.clusters().values()).items()))
