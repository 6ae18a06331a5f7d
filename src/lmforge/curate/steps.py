"""The per-document work of curation, as run inside a worker: steps built from the config.

    worker = CurationWorker(cfg)
    result = worker.process(batch)   # kept records, exact keys, MinHash signatures + sizes, stats

Order matters for speed: the URL filter runs before extraction (it needs no text), cheap
rules before the language model, PII scrubbing last so it touches only kept text.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from lmforge.curate import filters as F
from lmforge.curate.decontam import DecontaminationFilter
from lmforge.curate.dedup import MinHasher, exact_key
from lmforge.curate.document import Document
from lmforge.curate.extract import Extractor
from lmforge.curate.pii import PIIScrubber

# filter config group -> filter class; list order is pipeline order
FILTERS = [
    ("length", F.LengthFilter),
    ("language", F.LanguageFilter),
    ("gopher_repetition", F.GopherRepetitionFilter),
    ("gopher", F.GopherQualityFilter),
    ("c4", F.C4Filter),
    ("fineweb", F.FineWebFilter),
    ("quality_model", None),  # imported lazily below: it needs a trained model file
    ("decontamination", DecontaminationFilter),
]


@dataclass
class BatchResult:
    records: list[dict] = field(default_factory=list)  # kept documents, in input order
    keys: list[bytes | None] = field(default_factory=list)  # exact-dedup keys
    signatures: list[np.ndarray | None] = field(default_factory=list)  # MinHash signatures
    num_shingles: list[int | None] = field(default_factory=list)  # distinct shingles per document
    stats: dict[str, Counter] = field(default_factory=dict)  # step name -> counts


class CurationWorker:
    def __init__(self, cfg):
        self.steps = build_steps(cfg)
        d = cfg.dedup
        self.exact = d.exact
        self.hasher = MinHasher(d.num_bands, d.rows_per_band, d.ngram_words, d.seed) if d.near else None

    def process(self, batch: list[Document]) -> BatchResult:
        result = BatchResult()
        for doc in batch:
            for step in self.steps:
                doc = step(doc)
                if doc is None:
                    break
            else:
                result.records.append(doc.to_record())
                result.keys.append(exact_key(doc.text) if self.exact else None)
                signature, num_shingles = self.hasher.sketch(doc.text) if self.hasher else (None, None)
                result.signatures.append(signature)
                result.num_shingles.append(num_shingles)
        result.stats = {step.name: step.stats for step in self.steps}
        for step in self.steps:  # hand counts back per batch so the driver can sum them
            step.stats = Counter()
        return result


def build_steps(cfg) -> list:
    steps = []
    if cfg.filters.url.enabled:
        steps.append(F.URLFilter(**_params(cfg.filters.url)))
    steps.append(Extractor(**dataclasses.asdict(cfg.extract)))
    for name, cls in FILTERS:
        group = getattr(cfg.filters, name)
        if not group.enabled:
            continue
        if name == "quality_model":
            from lmforge.curate.quality import QualityModelFilter as cls
        if name == "decontamination" and not group.eval_files:
            continue
        steps.append(cls(**_params(group)))
    if cfg.pii.enabled:
        steps.append(PIIScrubber(**_params(cfg.pii)))
    return steps


def _params(group) -> dict:
    return {k: v for k, v in dataclasses.asdict(group).items() if k != "enabled"}
