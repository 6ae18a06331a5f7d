"""`lmforge tokenizer train`: learn a byte-level BPE from documents and save it HF-style.

    lmforge tokenizer train --input data/corpus --output runs/tokenizer --vocab_size 8192

Writes tokenizer.json, tokenizer_config.json (BOS/EOS/PAD, chat template) and
special_tokens_map.json; `transformers.AutoTokenizer.from_pretrained` loads the result.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lmforge.data.documents import ReadStats, list_document_files, read_documents
from lmforge.errors import InputError
from lmforge.report import record_run
from lmforge.tokenizer import Tokenizer, train_bpe


@dataclass
class TokenizerTrainConfig:
    input: list[str] = field(default_factory=lambda: ["data/corpus"])  # document files or folders (JSONL(.gz), Parquet, .txt)
    output: str = "runs/tokenizer"  # directory to write tokenizer.json + tokenizer_config.json
    vocab_size: int = 8192  # total ids, including the 9 special tokens and 256 bytes
    max_chars: int = 50_000_000  # train on at most this many characters (a sample: BPE merges converge fast)
    max_digits_per_token: int = 1  # numbers split into runs of at most this many digits (1 helps arithmetic)
    min_frequency: int = 2  # a pair must occur this often to be merged
    text_field: str = "text"  # JSONL/Parquet field holding the document text
    on_error: Literal["raise", "skip"] = "raise"  # malformed records: stop, or count and skip


def train_tokenizer(cfg: TokenizerTrainConfig) -> Tokenizer:
    stats = ReadStats()
    docs = _interleave_files(list_document_files(cfg.input), cfg, stats)
    start = time.perf_counter()
    backend = train_bpe(_capped_texts(docs, cfg.max_chars), cfg.vocab_size,
                        cfg.max_digits_per_token, cfg.min_frequency,
                        show_progress=sys.stderr.isatty())
    if stats.documents == 0:
        raise InputError(f"no text to train on ({stats.summary()})", ", ".join(cfg.input))
    tokenizer = Tokenizer.from_trained(backend)
    tokenizer.save(cfg.output)
    record_run(Path(cfg.output), cfg)  # config.yaml + run.json: `lmforge lineage` follows it to its inputs
    print(f"tokenizer: vocab {tokenizer.vocab_size} trained in {time.perf_counter() - start:.1f}s "
          f"on {stats.summary()} -> {cfg.output}")
    if tokenizer.vocab_size < cfg.vocab_size:
        print(f"tokenizer: warning: only {tokenizer.vocab_size} of {cfg.vocab_size} ids: the text "
              f"has no more pairs seen {cfg.min_frequency}+ times; give more text")
    return tokenizer


def _interleave_files(files: list[Path], cfg: TokenizerTrainConfig,
                      stats: ReadStats) -> Iterator[dict]:
    """One document from each file in turn, so a `max_chars` sample draws on every file
    (and language) rather than only the first files in sorted order."""
    readers = [read_documents(path, cfg.text_field, cfg.on_error, stats) for path in files]
    while readers:
        for reader in list(readers):
            doc = next(reader, None)
            if doc is None:
                readers.remove(reader)
            else:
                yield doc


def _capped_texts(docs: Iterator[dict], max_chars: int) -> Iterator[str]:
    """Document texts until `max_chars` is reached (the last one cut to fit)."""
    remaining = max_chars
    for doc in docs:
        if remaining <= 0:
            return
        text = doc["text"][:remaining]
        remaining -= len(text)
        yield text
