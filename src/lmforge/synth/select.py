"""`lmforge data select`: choose k conversations of an SFT set -> chat JSONL that `sft` reads.

    lmforge data select --data data/chat/train.jsonl --method longest --k 1000 --output data/longest.jsonl
    lmforge data select --data data/chat/train.jsonl --method random --k 1000 --output data/random.jsonl
    lmforge data select --data data/chat/train.jsonl --method reward --reward_model runs/rm/model --k 1000

Methods: `longest`, the k with the longest assistant responses (Zhao et al. 2024, "Long Is
More for Alignment": a strong, cheap baseline for instruction data); `reward`, the k a reward
model scores highest; `random`, a seeded sample of k, the baseline either must beat.
`dedup true` first drops near-duplicates with curation's MinHash-LSH (FineWeb's 14 bands x 8
rows over word 5-grams; the first of a cluster is kept). Kept conversations keep their order
in the input. The manifest counts what was dropped, and why.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lmforge.curate.dedup import DedupIndex, MinHasher, exact_key
from lmforge.data.chat import read_conversations
from lmforge.errors import InputError
from lmforge.synth.stage import Manifest, write_jsonl


@dataclass
class SelectConfig:
    data: list[str] = field(default_factory=list)  # chat files in any format `sft` reads (repeat --data)
    output: str = "data/selected.jsonl"  # chat JSONL; OUT.manifest.json beside it
    method: Literal["longest", "reward", "random"] = "longest"
    k: int = 1000  # conversations to keep (fewer when the input, after dedup, is smaller)
    dedup: bool = True  # drop near-duplicates (MinHash-LSH) before selecting
    reward_model: str = ""  # method reward: the scoring model's directory
    seed: int = 0  # method random
    device: str = "cpu"


def select(cfg: SelectConfig) -> dict:
    if not cfg.data:
        raise InputError("usage: lmforge data select --data FILE [--data FILE ...] "
                         "--method longest|reward|random --k K")
    if cfg.method == "reward" and not cfg.reward_model:
        raise InputError("--method reward needs --reward_model DIR")
    conversations = read_conversations(cfg.data)
    dropped = Counter()
    pool = list(range(len(conversations)))
    if cfg.dedup:
        pool, dropped = near_duplicates_removed(conversations)
    chosen = sorted(choose(cfg, [conversations[i] for i in pool], cfg.k))
    kept = [pool[i] for i in chosen]
    dropped["not_selected"] = len(pool) - len(kept)
    write_jsonl(Path(cfg.output), [{"messages": conversations[i]} for i in kept])
    counts = {"read": len(conversations), "rows": len(kept), "dropped": dict(+dropped)}
    generators = {"reward_model": cfg.reward_model} if cfg.method == "reward" else {}
    Manifest("data select", cfg, [Path(p) for p in cfg.data], generators).write(Path(cfg.output), counts, "complete")
    print(f"data select: {len(kept)} of {len(conversations)} conversations ({cfg.method}) -> {cfg.output} "
          f"(dropped: {counts['dropped'] or 'none'})")
    return counts


def near_duplicates_removed(conversations: list[list[dict]]) -> tuple[list[int], Counter]:
    """Indices of the conversations left after MinHash-LSH dedup, and the drop counts by kind."""
    hasher, index = MinHasher(), DedupIndex(num_bands=14)
    texts = ["\n".join(m.get("content") or "" for m in c) for c in conversations]
    for i, text in enumerate(texts):
        index.add(i, exact_key(text), hasher.signature(text))
    kept, dropped = [], Counter()
    for i in range(len(texts)):
        reason = index.drop_reason(i)
        if reason:
            dropped[reason] += 1
        else:
            kept.append(i)
    return kept, dropped


def choose(cfg: SelectConfig, conversations: list[list[dict]], k: int) -> list[int]:
    """Indices of the k chosen conversations (ties: the earlier one)."""
    if cfg.method == "random":
        return random.Random(cfg.seed).sample(range(len(conversations)), min(k, len(conversations)))
    if cfg.method == "longest":
        scores = [response_chars(c) for c in conversations]
    else:
        from lmforge.synth.score import RewardModelScorer

        scores = RewardModelScorer(cfg.reward_model, cfg.device).score(conversations)
    return sorted(range(len(conversations)), key=lambda i: (-scores[i], i))[:k]


def response_chars(conversation: list[dict]) -> int:
    return sum(len(m.get("content") or "") for m in conversation if m["role"] == "assistant")
