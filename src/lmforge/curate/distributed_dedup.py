"""Dedup as a distributed stage: signatures -> buckets -> clusters, so that no process holds
every signature (the `--executor ray` path; datatrove's MinHash stages have the same shape).

    index = distributed_dedup(work, cfg.dedup, executor)   # a DedupIndex: drop_reason, clusters

1. **signatures** are already there: each committed work unit holds its documents' exact keys
   and MinHash signatures (units.py).
2. **scatter**, one task per unit: each document's exact key and LSH band chunks, tagged with
   a partition (from the chunk's first hash, which is uniform), sorted by (band, partition)
   into one file with an offsets table; the signatures and shingle counts as .npy files that
   the bucket tasks memory-map.
3. **buckets**, one task per (band, partition), exact keys first: that partition's slices of
   every unit, sorted by chunk. Partitions are sized so a task holds at most `bucket_docs`
   documents' chunks, however big the corpus. In a run of equal chunks the earliest document
   is the one an in-process index would have in its bucket; every later one is checked
   against it on the full signatures (collision_verdict, the same test), and only confirmed
   duplicates come back. Exact copies are known before the band tasks start, and skipped
   there, as the in-process index skips them.
4. **clusters**, in the driver: the confirmed pairs replayed in the order one in-process
   DedupIndex meets them (by document, then band, an exact copy before any band) through its
   union-find, so the kept documents are identical to a local run's. The driver holds the
   union-find (a few ints per document), not 444 bytes of signature and 37 bucket entries.

The tasks read and write OUTPUT/_work/dedup: on several nodes it must be a shared filesystem.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lmforge.curate.dedup import DedupIndex, collision_verdict

EXACT = -1  # the "band" of exact keys in the replay order: before every LSH band


def distributed_dedup(work, cfg, executor, bucket_docs: int = 2_000_000) -> DedupIndex:
    """Cluster every committed unit of `work` (units.WorkDir) with `executor.run` tasks;
    `cfg` is the DedupConfig."""
    root = work.root / "dedup"
    root.mkdir(exist_ok=True)
    counts = [work.count(u) for u in range(len(work.units))]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total = int(offsets[-1])
    parts = max(1, math.ceil(total / bucket_docs))
    executor.run(_scatter, [(work, u, str(root), cfg.num_bands, parts) for u in range(len(counts))])

    index = DedupIndex(cfg.num_bands, exact=cfg.exact, near=cfg.near, min_jaccard=cfg.min_jaccard,
                       min_containment=cfg.min_containment)
    for doc_no in range(total):
        index.register(doc_no)
    pairs = []  # (doc, band, earlier doc, verdict) arrays
    is_copy = np.zeros(total, dtype=bool)
    if cfg.exact:
        for docs, firsts in executor.run(_exact_bucket, [(str(root), offsets, p, parts) for p in range(parts)]):
            is_copy[docs] = True
            pairs.append((docs, np.full(len(docs), EXACT), firsts, np.zeros(len(docs), np.int64)))
    np.save(root / "is_copy.npy", is_copy)
    del is_copy
    if cfg.near:
        check = (cfg.min_jaccard, cfg.min_containment)
        tasks = [(str(root), offsets, band, p, parts, check) for band in range(cfg.num_bands) for p in range(parts)]
        for band_pairs in executor.run(_band_bucket, tasks):
            pairs.append(band_pairs)
    if pairs:
        doc, band, other, verdict = (np.concatenate(column) for column in zip(*pairs))
        order = np.lexsort((band, doc))
        # a pair that collides in several bands is applied once, where the index first meets it
        _, first = np.unique(doc[order] * total + other[order], return_index=True)
        for i in order[np.sort(first)]:
            if band[i] == EXACT:
                index.union_exact(int(other[i]), int(doc[i]))
            else:
                index.union_near(int(other[i]), int(doc[i]), int(verdict[i]))
    return index


def _path(root: str, u: int, what: str) -> Path:
    return Path(root) / f"unit-{u:05d}.{what}.npy"


def _scatter(work, u: int, root: str, num_bands: int, parts: int) -> None:
    """One unit's keys and band chunks, sorted by partition (and band), with offsets tables."""
    keys, signatures, shingles = [], [], []
    for key, signature, n in work.signatures(u):
        keys.append(key)
        signatures.append(signature)
        shingles.append(n)
    n = len(keys)
    local = np.arange(n, dtype=np.uint32)
    if keys and keys[0] is not None:
        words = np.frombuffer(b"".join(keys), np.uint32).reshape(n, -1)
        _save_partitioned(root, u, "exact", words[None], local, parts)
    if signatures and signatures[0] is not None:
        sig = np.stack(signatures).astype(np.uint32)
        np.save(_path(root, u, "signatures"), sig)
        np.save(_path(root, u, "shingles"), np.asarray(shingles, np.int64))
        chunks = sig.reshape(n, num_bands, -1).transpose(1, 0, 2)  # (band, doc, rows)
        _save_partitioned(root, u, "bands", chunks, local, parts)
    elif n == 0:
        np.save(_path(root, u, "signatures"), np.zeros((0, 0), np.uint32))
        np.save(_path(root, u, "shingles"), np.zeros(0, np.int64))


def _save_partitioned(root: str, u: int, what: str, chunks: np.ndarray, local: np.ndarray, parts: int) -> None:
    """chunks (groups, docs, rows) -> rows [chunk words..., local doc] ordered by (group,
    partition), and offsets[group, partition] -> the first row of that slice."""
    groups, n, _ = chunks.shape
    rows = np.concatenate([chunks, np.broadcast_to(local[None, :, None], (groups, n, 1))], axis=2)
    part = chunks[:, :, 0] % parts  # (groups, docs)
    order = np.argsort(part, axis=1, kind="stable")
    rows = np.take_along_axis(rows, order[:, :, None], axis=1).reshape(groups * n, -1)
    counts = np.stack([np.bincount(part[g], minlength=parts) for g in range(groups)]) if n else \
        np.zeros((groups, parts), np.int64)
    starts = np.arange(groups)[:, None] * n + np.concatenate([np.zeros((groups, 1), np.int64),
                                                              np.cumsum(counts, axis=1)], axis=1)
    np.save(_path(root, u, what), np.ascontiguousarray(rows))
    np.save(_path(root, u, f"{what}-offsets"), starts)


def _gather(root: str, offsets: np.ndarray, what: str, group: int, part: int) -> tuple[np.ndarray, np.ndarray]:
    """One (group, partition) slice of every unit: chunk words (m, rows) and global doc numbers."""
    words, docs = [], []
    for u in range(len(offsets) - 1):
        path = _path(root, u, what)
        if not path.exists():
            continue
        table = np.load(path, mmap_mode="r")
        starts = np.load(_path(root, u, f"{what}-offsets"))
        piece = np.asarray(table[starts[group, part]:starts[group, part + 1]])
        words.append(piece[:, :-1])
        docs.append(piece[:, -1].astype(np.int64) + offsets[u])
    if not words:
        return np.zeros((0, 1), np.uint32), np.zeros(0, np.int64)
    return np.concatenate(words), np.concatenate(docs)


def _runs(words: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted by (chunk, doc): for every document that shares its chunk with an earlier one,
    (that document, the earliest with the chunk)."""
    order = np.lexsort((docs, *words.T[::-1]))
    words, docs = words[order], docs[order]
    starts = np.ones(len(docs), dtype=bool)
    starts[1:] = np.any(words[1:] != words[:-1], axis=1)
    first = docs[np.maximum.accumulate(np.where(starts, np.arange(len(docs)), 0))]
    later = ~starts
    return docs[later], first[later]


def _exact_bucket(root: str, offsets: np.ndarray, part: int, parts: int) -> tuple[np.ndarray, np.ndarray]:
    words, docs = _gather(root, offsets, "exact", 0, part)
    return _runs(words, docs)


def _band_bucket(root: str, offsets: np.ndarray, band: int, part: int, parts: int, check: tuple[float, float]):
    """Confirmed collisions in one band's partition: (doc, band, earlier doc, verdict)."""
    words, docs = _gather(root, offsets, "bands", band, part)
    copies = Path(root) / "is_copy.npy"
    if copies.exists() and len(docs):
        keep = ~np.load(copies, mmap_mode="r")[docs]  # exact copies never enter a bucket
        words, docs = words[keep], docs[keep]
    new, old = _runs(words, docs)
    if not len(new):
        return new, np.zeros(0, np.int64), old, np.zeros(0, np.int64)
    min_jaccard, min_containment = check
    if min_jaccard > 0 or min_containment > 0:
        sig_new, n_new = _signatures(root, offsets, new)
        sig_old, n_old = _signatures(root, offsets, old)
        verdict = collision_verdict(sig_old, n_old, sig_new, n_new, min_jaccard, min_containment)
    else:
        verdict = np.ones(len(new), np.int64)  # plain LSH: every collision is a duplicate
    hit = verdict > 0
    return new[hit], np.full(int(hit.sum()), band), old[hit], verdict[hit].astype(np.int64)


def _signatures(root: str, offsets: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the memory-mapped signature files for global doc numbers."""
    unit = np.searchsorted(offsets, docs, side="right") - 1
    sig, shingles = None, np.zeros(len(docs), np.int64)
    for u in np.unique(unit):
        at = unit == u
        local = docs[at] - offsets[u]
        unit_sig = np.load(_path(root, int(u), "signatures"), mmap_mode="r")
        if sig is None:
            sig = np.zeros((len(docs), unit_sig.shape[1]), np.uint32)
        sig[at] = unit_sig[local]
        shingles[at] = np.load(_path(root, int(u), "shingles"), mmap_mode="r")[local]
    return sig, shingles
