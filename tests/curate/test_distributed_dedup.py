"""The distributed dedup stage (signatures -> buckets -> clusters as tasks) keeps exactly the
documents one in-process DedupIndex keeps: on every kind of planted copy, with the corpus
spread over several units and the buckets over several partitions."""

import random
from pathlib import Path

import numpy as np
import pytest

from lmforge.curate.dedup import DedupIndex, MinHasher, exact_key
from lmforge.curate.distributed_dedup import distributed_dedup
from lmforge.curate.executors.local import LocalExecutor
from lmforge.stages.curate import DedupConfig

from .test_near_dup import KINDS, chapters  # noqa: F401  (a fixture)


class Units:
    """What distributed_dedup reads of a units.WorkDir: committed units' keys and signatures."""

    def __init__(self, root: Path, units: list[list[tuple]]):
        self.root, self.units = root, units

    def count(self, u):
        return len(self.units[u])

    def signatures(self, u):
        yield from self.units[u]


def planted(chapters, seed=0) -> list[str]:
    """Originals, copies of every kind (an excerpt sometimes before its page), exact copies
    with other punctuation, in a shuffled order."""
    rng = random.Random(seed)
    texts = list(chapters)
    for i, text in enumerate(chapters[:18]):
        texts.append(KINDS[i % len(KINDS)](text, rng))
        if i % 4 == 0:
            texts.append(text)  # an exact copy
            texts.append(text.replace(".", " ."))  # exact after normalisation, other sentences
    rng.shuffle(texts)
    return texts


def sketches(texts, cfg: DedupConfig):
    hasher = MinHasher(cfg.num_bands, cfg.rows_per_band, cfg.ngram_words, cfg.seed)
    return [(exact_key(t) if cfg.exact else None, *(hasher.sketch(t) if cfg.near else (None, None)))
            for t in texts]


@pytest.mark.parametrize("settings", [{}, {"seed_order": 1}, {"exact": False}, {"min_containment": 0.0},
                                      {"min_containment": 0.0, "min_jaccard": 0.5}, {"near": False}])
def test_distributed_dedup_keeps_what_the_local_index_keeps(tmp_path, chapters, settings):  # noqa: F811
    settings = dict(settings)
    order = settings.pop("seed_order", 0)
    cfg = DedupConfig(**settings)
    rows = sketches(planted(chapters, seed=order), cfg)
    local = DedupIndex(cfg.num_bands, exact=cfg.exact, near=cfg.near, min_jaccard=cfg.min_jaccard,
                       min_containment=cfg.min_containment)
    for doc_no, row in enumerate(rows):
        local.add(doc_no, *row)
    cuts = [0, 7, 7, 30, 41, len(rows)]  # an empty unit too
    work = Units(tmp_path, [rows[a:b] for a, b in zip(cuts, cuts[1:])])
    remote = distributed_dedup(work, cfg, LocalExecutor(workers=2), bucket_docs=16)  # 4+ partitions
    reasons = [local.drop_reason(n) for n in range(len(rows))]
    assert [remote.drop_reason(n) for n in range(len(rows))] == reasons
    assert [remote.kept_copy(n) for n in range(len(rows))] == [local.kept_copy(n) for n in range(len(rows))]
    assert remote.clusters() == local.clusters()
    assert sum(r is not None for r in reasons) >= (10 if cfg.near else 9)  # the planted copies were found


def test_partitions_bound_what_one_bucket_task_reads(tmp_path):
    """Each (band, partition) slice holds about total / partitions documents."""
    rng = np.random.default_rng(0)
    rows = [(rng.bytes(16), rng.integers(0, 2**32, 111, dtype=np.uint32), 50) for _ in range(4000)]
    work = Units(tmp_path, [rows[:1500], rows[1500:]])
    index = distributed_dedup(work, DedupConfig(), LocalExecutor(workers=1), bucket_docs=500)
    assert not index.clusters()  # random signatures: no duplicates
    offsets = [np.load(tmp_path / "dedup" / f"unit-{u:05d}.bands-offsets.npy") for u in (0, 1)]
    per_task = sum(np.diff(o, axis=1) for o in offsets)  # (band, partition) -> documents
    assert per_task.shape == (37, 8) and per_task.sum(axis=1).tolist() == [4000] * 37
    assert per_task.max() < 2 * 500
