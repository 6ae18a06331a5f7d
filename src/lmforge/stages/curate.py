"""Stage 0: raw web pages -> clean, deduplicated documents.

    lmforge curate --input data/web/sample.warc.gz --output runs/demo/curated
    lmforge curate configs/curate.yaml --input crawl/ pages/ --executor ray

Reads WARC / HTML / JSONL / Parquet / text, extracts main text, filters, scrubs PII, removes
exact and near duplicates, and writes sharded JSONL (or Parquet) with `text`, `id`, `url`,
plus stats.json and a report. Each filter group below can be switched off with
`--filters.NAME.enabled false`; its other fields are that filter's parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class ExtractConfig:
    timeout_s: float = 5.0  # per-document limit for trafilatura; slower pages are dropped
    fast: bool = True  # skip trafilatura's fallback extractors (1.5x faster)
    favor_precision: bool = False  # True drops marginal text: Sphinx-page recall 0.978 -> 0.964 (bench/extract_eval.py)
    include_tables: bool = True  # keep text inside <table>
    container_growth: float = 1.5  # take back the main container's dropped text when it adds <= this x the words; 0 = off


@dataclass
class URLConfig:
    enabled: bool = True  # drop pages from blocked domains or with blocked words in the URL
    blocked_domains: list[str] = field(default_factory=list)  # e.g. [spam.example]; subdomains too
    blocked_words: list[str] = field(default_factory=lambda: ["porn", "xxx", "casino", "viagra"])  # URL tokens
    blocklist_file: str | None = None  # extra domains, one per line


@dataclass
class LengthConfig:
    enabled: bool = True  # drop documents outside a character range
    min_chars: int = 200  # shorter extracted text is dropped
    max_chars: int = 1_000_000  # longer extracted text is dropped


@dataclass
class LanguageConfig:
    enabled: bool = True  # fastText LID-176 language identification
    languages: list[str] = field(default_factory=lambda: ["en"])  # keep these ([] = all)
    min_score: float = 0.65  # default minimum LID confidence
    thresholds: dict[str, float] = field(default_factory=dict)  # per-language minimum, e.g. {zh: 0.5}


@dataclass
class GopherRepetitionConfig:
    enabled: bool = True  # Gopher repetition rules (Rae et al. 2021)
    dup_line_frac: float = 0.3  # max fraction of duplicated lines
    dup_para_frac: float = 0.3  # max fraction of duplicated paragraphs
    dup_line_char_frac: float = 0.2  # max fraction of characters in duplicated lines
    dup_para_char_frac: float = 0.2  # max fraction of characters in duplicated paragraphs
    top_n_grams: dict[int, float] = field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})  # n: max char share of the top n-gram
    dup_n_grams: dict[int, float] = field(default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})  # n: max char share of repeated n-grams


@dataclass
class GopherQualityConfig:
    enabled: bool = True  # Gopher quality rules
    min_words: int = 50  # fewer words: dropped
    max_words: int = 100_000  # more words: dropped
    min_avg_word_length: float = 3  # mean word length range, in characters
    max_avg_word_length: float = 10  # see min_avg_word_length
    max_symbol_word_ratio: float = 0.1  # ('#', '...') per word
    max_bullet_lines_ratio: float = 0.9  # lines starting with a bullet
    max_ellipsis_lines_ratio: float = 0.3  # lines ending with an ellipsis
    min_alpha_words_ratio: float = 0.8  # words containing a letter
    min_stop_words: int = 2  # English stop words (the, be, to, of, and, that, have, with)


@dataclass
class C4Config:
    enabled: bool = True  # C4 rules: line cleaning + document rules
    min_words_per_line: int = 3  # shorter lines are removed
    max_word_length: int = 1000  # lines with a longer word are removed
    min_num_sentences: int = 5  # fewer sentences after cleaning: dropped
    filter_no_terminal_punct: bool = False  # remove lines without end punctuation (off, as FineWeb)
    filter_javascript: bool = True  # remove lines mentioning javascript
    filter_policy: bool = True  # remove cookie/privacy-policy lines
    filter_lorem_ipsum: bool = True  # drop documents containing lorem ipsum
    filter_curly_bracket: bool = False  # drop documents containing '{' (C4 on; off for technical text)


@dataclass
class FineWebConfig:
    enabled: bool = True  # FineWeb's own rules (Penedo et al. 2024)
    line_punct_thr: float = 0.12  # min share of lines ending in punctuation
    short_line_thr: float = 0.67  # max share of short lines
    short_line_length: int = 30  # a short line has at most this many characters
    char_duplicates_ratio: float = 0.1  # max share of characters in duplicated lines (FineWeb 0.01)
    new_line_ratio: float = 0.3  # max newlines per word


@dataclass
class QualityModelConfig:
    enabled: bool = False  # model-based quality score (train with lmforge.curate.quality)
    model: str = ""  # path of a saved quality model (.npz)
    min_score: float = 0.5  # documents scoring lower are dropped


@dataclass
class DecontaminationConfig:
    enabled: bool = True  # drop documents sharing an n-gram with evaluation files
    eval_files: list[str] = field(default_factory=list)  # JSONL/text evaluation data ([] = off)
    ngram_words: int = 13  # n-gram length in words
    min_matches: int = 1  # shared n-grams needed to drop


@dataclass
class FiltersConfig:
    url: URLConfig = field(default_factory=URLConfig)
    length: LengthConfig = field(default_factory=LengthConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    gopher: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    c4: C4Config = field(default_factory=C4Config)
    fineweb: FineWebConfig = field(default_factory=FineWebConfig)
    quality_model: QualityModelConfig = field(default_factory=QualityModelConfig)
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)


@dataclass
class PIIConfig:
    enabled: bool = True  # replace PII by placeholders (<EMAIL>, <IP_ADDRESS>, ...)
    email: bool = True  # e-mail addresses
    ip: bool = True  # public IP addresses (private/documentation ranges are kept)
    phone: bool = True  # phone numbers
    secrets: bool = True  # API keys, tokens, private keys


@dataclass
class DedupConfig:
    exact: bool = True  # drop documents whose normalised text is identical to an earlier one
    near: bool = True  # MinHash-LSH near-duplicate removal, collisions checked by containment
    ngram_words: int = 5  # shingle size in words, within one sentence (survives sentence shuffles)
    num_bands: int = 37  # LSH bands (37 x 3: a wide net, threshold ~0.3; FineWeb: 14 x 8, ~0.72)
    rows_per_band: int = 3  # hashes per band
    min_jaccard: float = 0.0  # >0: confirm band collisions by estimated Jaccard
    min_containment: float = 0.75  # a collision is a duplicate when one text is this much inside the other (0: plain LSH)
    seed: int = 1  # MinHash permutation seed


@dataclass
class CurateConfig:
    input: list[str] = field(default_factory=list)  # WARC/HTML/JSONL/Parquet/text files or folders
    output: str = "runs/curated"  # output directory (shards, stats.json, report.md)
    format: Literal["jsonl", "parquet"] = "jsonl"  # document shard format
    docs_per_shard: int = 50_000  # documents per output shard
    executor: Literal["local", "ray"] = "local"  # local processes, or Ray (pip install lmforge[ray])
    workers: int = 0  # worker processes (0 = all cores)
    batch_docs: int = 32  # documents per task sent to a worker
    unit_mb: float = 64.0  # inputs are committed in units of ~this many MB: a killed run restarted with the same --output skips finished units
    on_error: Literal["raise", "skip"] = "raise"  # malformed JSONL records: fail, or count and skip
    text_field: str = "text"  # text field of JSONL/Parquet inputs
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    pii: PIIConfig = field(default_factory=PIIConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    report: bool = True  # write report.md and funnel.png


def curate(cfg: CurateConfig) -> dict:
    """Run the pipeline; returns the stats also written to OUTPUT/stats.json."""
    from lmforge.curate.pipeline import run_pipeline

    return run_pipeline(cfg)
