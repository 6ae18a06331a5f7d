"""Exact and MinHash-LSH near-duplicate detection.

    hasher = MinHasher(num_bands=37, rows_per_band=3, ngram_words=5)
    sig, n = hasher.sketch(text)                    # in workers: (111,) uint32, shingle count
    index = DedupIndex(num_bands=37)
    index.add(doc_no, exact_key(text), sig, n)      # in the driver, in input order
    ...
    index.drop_reason(doc_no)                       # after all adds: None = keep

Signatures are computed in parallel next to extraction; clustering runs in one place so the
kept document of each cluster never depends on scheduling.

The recipe (bench/near_dup_eval.py measures it against FineWeb's plain 14 x 8 LSH):
- shingles are word 5-grams that never cross a sentence end, so a copy with its
  sentences reordered has the same shingle set (plain 5-grams: Jaccard ~0.7, half missed);
- LSH casts a wide net (37 bands x 3 rows: a pair with Jaccard 0.4 collides 91% of the time)
  and every collision is checked on the full signature: |A & B| follows from the estimated
  Jaccard and the two shingle counts, and a pair is a duplicate when one document is mostly
  (>= min_containment) inside the other. That one test covers edited copies, pages with
  other boilerplate, excerpts (a page holding half of another) and pages that embed another
  whole; pages that share a template or licence but differ in most of their text stay.
- when the earlier document is the one contained (an excerpt seen before its full page), the
  cluster keeps the later, larger one; otherwise the earliest member is kept.
FineWeb's plain setting (14 x 8, no check) is `DedupIndex(14, min_containment=0)` with
signatures from `MinHasher(14, 8, sentence_shingles=False)`.
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
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)")  # a closing quote stays with its sentence


def normalize_text(text: str) -> str:
    """Lowercase, NFKC, no punctuation, digits collapsed to 0, single spaces (FineWeb-like)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _DIGITS.sub("0", _NON_WORD.sub(" ", text))
    return " ".join(text.split())


def sentence_words(text: str) -> list[list[str]]:
    """normalize_text's words, one list per sentence. Line breaks are not boundaries: a copy
    re-wrapped by another extractor or site must keep its shingles."""
    text = unicodedata.normalize("NFKC", text).lower()  # before the split: NFKC maps some full stops to "."
    return [words for sentence in _SENTENCE_END.split(text) if (words := normalize_text(sentence).split())]


def exact_key(text: str) -> bytes:
    return hashlib.blake2b(normalize_text(text).encode(), digest_size=16).digest()


class MinHasher:
    """Vectorised MinHash: one numpy (hashes x shingles) pass per document.

    Shingle hashes are 32-bit: xxhash of each word, combined as a polynomial over the n words
    of a shingle. Each hash function is multiply-add-shift,
    h(x) = ((a*x + b) mod 2^64) >> 32 with random 64-bit a, b (Dietzfelbinger 1996: strongly
    universal for 32-bit keys). uint64 arithmetic wraps mod 2^64 for free, so there is no
    modulo: the (a*x + b) mod (2^61 - 1) of datasketch/datatrove made our permutation step 10x
    slower in numpy (bench/curate.py, section "minhash"). a and b must span 64 bits: with
    a, b < 2^32 (our earlier version) a*x + b barely wraps the modulus, stays nearly monotone in
    x and the hashes are correlated (Jaccard estimate RMSE 0.16 instead of ~0.04).
    """

    def __init__(self, num_bands: int = 14, rows_per_band: int = 8, ngram_words: int = 5,
                 seed: int = 1, sentence_shingles: bool = True):
        self.num_bands, self.rows_per_band, self.ngram_words = num_bands, rows_per_band, ngram_words
        self.sentence_shingles = sentence_shingles  # False: n-grams run across sentences (FineWeb)
        n = num_bands * rows_per_band
        rng = np.random.default_rng(seed)
        self.a = rng.integers(0, 1 << 64, size=n, dtype=np.uint64)
        self.b = rng.integers(0, 1 << 64, size=n, dtype=np.uint64)

    @property
    def num_hashes(self) -> int:
        return self.num_bands * self.rows_per_band

    def shingle_hashes(self, text: str) -> np.ndarray:
        """32-bit hashes (as uint64) of the word n-grams, in text order; repeats are kept.

        A sentence shorter than n words is one shingle. Each sentence is followed by n-1 empty
        slots (hash 0), so a window holds words of one sentence only; windows that start on a
        slot, or run into one after a full-length start, are dropped."""
        n = self.ngram_words
        sentences = sentence_words(text) if self.sentence_shingles else [normalize_text(text).split()]
        words, starts = [], []
        for sentence in sentences:
            starts.append(len(words))
            words += sentence + [""] * (n - 1)
        if not words:
            return np.zeros(1, dtype=np.uint64)
        word_h = np.fromiter((xxhash.xxh32_intdigest(w.encode()) if w else 0 for w in words),
                             dtype=np.uint64, count=len(words))
        count = len(words) - n + 1
        shingle = word_h[:count].copy()
        for k in range(1, n):  # polynomial combine; wraps mod 2^64, then folded to 32 bits
            shingle *= np.uint64(0x100000001B3)
            shingle += word_h[k:count + k]
        shingle ^= shingle >> np.uint64(32)
        is_word = np.fromiter((bool(w) for w in words), dtype=bool, count=len(words))
        is_start = np.zeros(count, dtype=bool)
        is_start[starts] = True
        keep = is_word[:count] & (is_word[n - 1:] | is_start)
        return shingle[keep] & np.uint64(0xFFFFFFFF)

    def signature(self, text: str) -> np.ndarray:
        """(num_hashes,) uint32."""
        return self._signature(self.shingle_hashes(text))

    def sketch(self, text: str) -> tuple[np.ndarray, int]:
        """The signature and the number of distinct shingles (DedupIndex's containment test)."""
        h = self.shingle_hashes(text)
        return self._signature(h), len(np.unique(h))

    def _signature(self, h: np.ndarray) -> np.ndarray:
        # repeated shingles need no np.unique: a minimum ignores them
        perm = np.multiply.outer(self.a, h)  # (hashes, shingles): each min runs over one row
        perm += self.b[:, None]
        perm >>= np.uint64(32)
        return perm.min(axis=1).astype(np.uint32)


DUPLICATE, OLD_IN_NEW = 1, 2  # a confirmed collision: the new document is dropped / the old one is


def collision_verdict(sig_old, n_old, sig_new, n_new, min_jaccard: float, min_containment: float):
    """Is a band collision a duplicate? 0 (no), DUPLICATE, or OLD_IN_NEW (the earlier document
    is mostly inside the later one, which is kept). Works on one pair or, vectorised, on rows
    of signatures and arrays of shingle counts."""
    jaccard = np.mean(np.asarray(sig_old) == np.asarray(sig_new), axis=-1)
    if not (min_containment > 0 and np.all(n_old) and np.all(n_new)):
        return np.where(jaccard >= min_jaccard, DUPLICATE, 0)
    shared = jaccard * (n_old + n_new) / (1 + jaccard)  # |A & B| from J, |A|, |B|
    return np.where(shared >= min_containment * np.asarray(n_new), DUPLICATE,  # new mostly in old
                    np.where(shared >= min_containment * np.asarray(n_old), OLD_IN_NEW, 0))


class DedupIndex:
    """Exact-hash table plus LSH band buckets; union-find turns confirmed collisions into clusters.

    A band collision is confirmed on the full signatures: by containment when `add` gets shingle
    counts (min_containment > 0), else by estimated Jaccard (min_jaccard > 0), else taken as is
    (plain LSH)."""

    def __init__(self, num_bands: int = 14, exact: bool = True, near: bool = True,
                 min_jaccard: float = 0.0, min_containment: float = 0.75):
        self.num_bands, self.exact, self.near = num_bands, exact, near
        self.min_jaccard = min_jaccard
        # 0.75: between planted copies (>= 0.85 of one document inside the other before edits)
        # and pages sharing a licence or template (<= 0.5); chosen on bench/near_dup_eval.py's
        # tuning part (0.6-0.7 dropped a licence-sharing page, 0.8+ missed edited excerpts)
        self.min_containment = min_containment
        self._exact: dict[bytes, int] = {}
        self._buckets: list[dict[bytes, int]] = [{} for _ in range(num_bands)]
        self._parent: dict[int, int] = {}
        self._signatures: dict[int, np.ndarray] = {}
        self._num_shingles: dict[int, int] = {}
        self._exact_copies: set[int] = set()
        self._contained: set[int] = set()  # earlier documents found inside a later one

    def add(self, doc_no: int, key: bytes | None, signature: np.ndarray | None,
            num_shingles: int | None = None) -> None:
        """Register a document (doc_no increasing in input order)."""
        self.register(doc_no)
        if self.exact and key is not None:
            first = self._exact.setdefault(key, doc_no)
            if first != doc_no:
                self.union_exact(first, doc_no)
                return  # identical text: its bands would only repeat the first copy's
        if not self.near or signature is None:
            return
        if self.min_jaccard > 0 or (self.min_containment > 0 and num_shingles):
            self._signatures[doc_no] = signature
            if num_shingles:
                self._num_shingles[doc_no] = num_shingles
        checked = set()
        for band, chunk in enumerate(signature.reshape(self.num_bands, -1)):
            other = self._buckets[band].setdefault(chunk.tobytes(), doc_no)
            if other != doc_no and other not in checked:
                checked.add(other)
                self._confirm(other, doc_no)

    def drop_reason(self, doc_no: int) -> str | None:
        """After all adds: None for the kept representative of its cluster."""
        if self._find(doc_no) == doc_no:
            return None
        return "exact_duplicate" if doc_no in self._exact_copies else "near_duplicate"

    def kept_copy(self, doc_no: int) -> int:
        """After all adds: the kept document that stands for this one (itself if kept)."""
        return self._find(doc_no)

    def _confirm(self, other: int, doc_no: int) -> None:
        if other not in self._signatures or doc_no not in self._signatures:
            self.union_near(other, doc_no, DUPLICATE)  # plain LSH: every collision is a duplicate
            return
        verdict = int(collision_verdict(self._signatures[other], self._num_shingles.get(other),
                                    self._signatures[doc_no], self._num_shingles.get(doc_no),
                                    self.min_jaccard, self.min_containment))
        if verdict:
            self.union_near(other, doc_no, verdict)

    # The union steps, public so that the distributed stage (distributed_dedup.py) can replay
    # the pairs its workers confirmed through this same union-find.
    def register(self, doc_no: int) -> None:
        self._parent[doc_no] = doc_no

    def union_exact(self, first: int, doc_no: int) -> None:
        self._union(first, doc_no)
        self._exact_copies.add(doc_no)

    def union_near(self, other: int, doc_no: int, verdict: int) -> None:
        if verdict == OLD_IN_NEW:
            self._contained.add(other)
        self._union(other, doc_no)

    def _find(self, x: int) -> int:
        while self._parent[x] != x:
            self._parent[x] = self._parent[self._parent[x]]
            x = self._parent[x]
        return x

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:  # the root is the one we keep: the earliest that is inside no other
            keep, drop = sorted((ra, rb), key=lambda r: (r in self._contained, r))
            self._parent[drop] = keep

    def clusters(self) -> dict[int, list[int]]:
        """Representative -> members, for clusters with more than one document."""
        groups: dict[int, list[int]] = {}
        for x in self._parent:
            groups.setdefault(self._find(x), []).append(x)
        return {root: sorted(m) for root, m in groups.items() if len(m) > 1}

    def cluster_size_histogram(self) -> dict[int, int]:
        return dict(sorted(Counter(len(m) for m in self.clusters().values()).items()))
