"""`lmforge tokenize`: documents -> memory-mapped train/val token shards.

    lmforge tokenize --input data/corpus --tokenizer runs/tokenizer --output runs/shards

Every document becomes `[bos] + tokens`. The validation split is chosen by a hash of the
document id, so it is the same on every run, on any machine, and whatever the file order.
Documents are encoded in batches by the Rust tokenizer on all cores. The tokenizer is
copied into `OUTPUT/tokenizer/` so the shards carry the vocabulary they were made with.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from lmforge.data.documents import ReadStats, read_documents
from lmforge.data.shards import ShardWriter, choose_dtype, remove_old_shards, write_index
from lmforge.errors import InputError
from lmforge.report import write_report
from lmforge.tokenizer import Tokenizer


@dataclass
class TokenizeConfig:
    input: list[str] = field(default_factory=lambda: ["data/corpus"])  # document files or folders (JSONL(.gz), Parquet, .txt)
    tokenizer: str = "runs/tokenizer"  # tokenizer directory (tokenizer.json + tokenizer_config.json)
    output: str = "runs/shards"  # directory for train_NNN.bin, val_NNN.bin and index.json
    val_fraction: float = 0.02  # share of documents (chosen by id hash) held out; on the bundled corpus 0.02 = 153 docs, ~21k tokens, both languages
    split_seed: int = 0  # salt of the id hash; change it to draw a different validation set
    shard_size_tokens: int = 100_000_000  # start a new shard file after this many tokens (at a document end)
    dtype: Literal["auto", "uint16", "uint32"] = "auto"  # token id type on disk; auto = uint16 if the vocab fits
    batch_chars: int = 4_000_000  # characters per encode_batch call: big enough to keep all cores busy
    text_field: str = "text"  # JSONL/Parquet field holding the document text
    on_error: Literal["raise", "skip"] = "raise"  # malformed records: stop, or count and skip


def tokenize(cfg: TokenizeConfig) -> dict:
    tokenizer = Tokenizer.from_dir(cfg.tokenizer)
    separator_id = document_start_id(tokenizer)
    dtype = choose_dtype(tokenizer.vocab_size, cfg.dtype)
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    remove_old_shards(output)

    stats, start = ReadStats(), time.perf_counter()
    docs = read_documents(cfg.input, cfg.text_field, cfg.on_error, stats)
    writers = {split: ShardWriter(output, split, dtype, cfg.shard_size_tokens)
               for split in ("train", "val")}
    text_bytes = 0
    with tqdm(desc="tokenize", unit="B", unit_scale=True) as progress:
        for batch in _batches_by_chars(docs, cfg.batch_chars):
            for doc, ids in zip(batch, tokenizer.encode_batch([d["text"] for d in batch])):
                split = "val" if is_validation(doc["id"], cfg.val_fraction, cfg.split_seed) else "train"
                writers[split].add_document([separator_id, *ids])
            batch_bytes = sum(len(d["text"].encode("utf-8")) for d in batch)
            text_bytes += batch_bytes
            progress.update(batch_bytes)
    seconds = time.perf_counter() - start
    if text_bytes == 0:  # no index.json: the output does not pass for finished shards
        raise InputError(f"no text in the inputs ({stats.summary()})", ", ".join(cfg.input))

    index = _build_index(cfg, tokenizer, separator_id, dtype, writers, stats)
    _copy_tokenizer(Path(cfg.tokenizer), output / "tokenizer")
    index = write_index(output, index)
    _report(output, index, stats, text_bytes, seconds)
    return index


def document_start_id(tokenizer: Tokenizer) -> int:
    """BOS, or EOS for tokenizers without one (Qwen2.5): some token must mark document starts."""
    token_id = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id
    if token_id is None:
        raise InputError("tokenizer has neither bos_token nor eos_token in tokenizer_config.json")
    return token_id


def is_validation(doc_id: str, val_fraction: float, seed: int = 0) -> bool:
    """Deterministic split by a hash of the document id (not Python's salted `hash`)."""
    digest = hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < val_fraction


def _batches_by_chars(docs: Iterable[dict], batch_chars: int) -> Iterator[list[dict]]:
    """Group non-empty documents into batches of about `batch_chars` characters."""
    batch, chars = [], 0
    for doc in docs:
        if not doc["text"]:
            continue  # an empty document would only add a lone BOS
        batch.append(doc)
        chars += len(doc["text"])
        if chars >= batch_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _build_index(cfg: TokenizeConfig, tokenizer: Tokenizer, separator_id: int, dtype: np.dtype,
                 writers: dict[str, ShardWriter], stats: ReadStats) -> dict:
    splits = {}
    for split, writer in writers.items():
        shards = writer.close()
        splits[split] = {"shards": shards, "tokens": sum(s["tokens"] for s in shards),
                         "documents": sum(s["documents"] for s in shards)}
    tokenizer_json = Path(cfg.tokenizer) / "tokenizer.json"
    return {
        "dtype": dtype.name,
        "vocab_size": tokenizer.vocab_size,
        "bos_id": separator_id,
        "tokenizer": {"path": str(cfg.tokenizer), "copy": "tokenizer",
                      "sha256": hashlib.sha256(tokenizer_json.read_bytes()).hexdigest()},
        "splits": splits,
        "inputs": list(cfg.input),
        "val_fraction": cfg.val_fraction,
        "split_seed": cfg.split_seed,
        "skipped_records": stats.skipped,
    }


def _copy_tokenizer(source: Path, destination: Path) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "chat_template.jinja"):
        if (source / name).exists():
            shutil.copy2(source / name, destination / name)


def _report(output: Path, index: dict, stats: ReadStats, text_bytes: int, seconds: float) -> None:
    """Print the summary and keep it as report.md beside the shards."""
    train, val = index["splits"]["train"], index["splits"]["val"]
    lines = [f"read: {stats.summary()}",
             f"train: {train['documents']} docs / {train['tokens']:,} tokens in "
             f"{len(train['shards'])} shards; val {val['documents']} docs / {val['tokens']:,} tokens",
             f"{text_bytes / 1e6:.1f} MB in {seconds:.1f}s ({text_bytes / 1e6 / max(seconds, 1e-9):.1f} MB/s), "
             f"{text_bytes / max(train['tokens'] + val['tokens'], 1):.2f} bytes/token, dtype {index['dtype']}"]
    if val["documents"] == 0 and index["val_fraction"] > 0:
        lines.append("warning: no document fell into the validation split; raise --val_fraction")
    for line in lines:
        print(f"tokenize: {line}")
    write_report(output, "Tokenization", [f"- {line}" for line in lines])