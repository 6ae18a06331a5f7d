"""`lmforge data augment`: each fact document written k ways, for (continued) pretraining.

    lmforge data augment --input data/bios.jsonl --k 4 --output data/bios_aug.jsonl              # reorder
    lmforge data augment --input data/bios.jsonl --k 4 --method teacher --teacher runs/smollm2 \\
        --temperature 0.8 --output data/bios_para.jsonl                                        # paraphrase

A fact a model reads in one wording only is stored, but often cannot be extracted by a
question later; the same facts in several wordings and orders make it extractable (Allen-Zhu
& Li 2023, "Physics of Language Models 3.1": sentence permutation and rewriting augment
biographies). `reorder` shuffles a document's sentences (seeded per document, distinct from
the original and each other); `teacher` asks a model to paraphrase it keeping every fact.
Output documents are {"id": "<source id>#<j>", "text", "source"}, originals first unless
`keep_original false`; `tokenize` reads them. Resumable like every generating `data` command.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lmforge.data.documents import read_documents
from lmforge.synth.stage import (EndpointOptions, Manifest, Prompt, batch_seed, generator_name, open_generator,
                                 write_resumable)

PARAPHRASE_PROMPT = """Rewrite the following text in different words and a different order, keeping every fact exactly. Reply with the rewritten text only.

{text}"""

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class AugmentConfig:
    input: list[str] = field(default_factory=list)  # documents: JSONL / Parquet / text files or folders
    output: str = "data/augmented.jsonl"  # documents; OUT.manifest.json beside it
    method: Literal["reorder", "teacher"] = "reorder"
    k: int = 4  # rewrites per document
    keep_original: bool = True  # also write each document as it is
    teacher: str = ""  # method teacher: a model lmforge loads, or (with url) the endpoint's model name
    url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    max_new_tokens: int = 512
    temperature: float = 0.8
    top_p: float = 1.0
    batch_size: int = 8  # documents per batch (one resume point)
    seed: int = 0
    device: str = "cpu"
    endpoint: EndpointOptions = field(default_factory=EndpointOptions)
    overwrite: bool = False
    progress: bool = True


def augment(cfg: AugmentConfig) -> dict:
    docs = list(read_documents(cfg.input))
    prompts = [Prompt(i, [{"role": "user", "content": PARAPHRASE_PROMPT.format(text=d["text"])}], d)
               for i, d in enumerate(docs)]
    rewrite = _teacher_rewrites(cfg) if cfg.method == "teacher" else (
        lambda batch_no, batch: [reorderings(p.record["text"], cfg.k, f"{cfg.seed}:{p.key}") for p in batch])

    def make_rows(batch_no: int, batch: list[Prompt]) -> tuple[list[dict], Counter]:
        rows, dropped = [], Counter()
        for p, variants in zip(batch, rewrite(batch_no, batch)):
            doc = p.record
            kept = [v for v in dict.fromkeys(variants) if v.strip() and v.strip() != doc["text"].strip()]
            reason = "same_as_original_or_repeat" if cfg.method == "teacher" else "too_few_sentences"
            dropped[reason] += cfg.k - len(kept)
            texts = [doc["text"], *kept] if cfg.keep_original else kept
            rows += [{"id": f"{doc['id']}#{j}", "text": t, "source": doc["id"]} for j, t in enumerate(texts)]
        return rows, +dropped

    generators = {"teacher": generator_name(cfg.teacher, cfg.url)} if cfg.method == "teacher" else {}
    manifest = Manifest("data augment", cfg, [Path(p) for p in cfg.input if Path(p).is_file()], generators)
    counts = write_resumable(Path(cfg.output), prompts, make_rows, cfg.batch_size, manifest, cfg.overwrite,
                             cfg.progress)
    print(f"data augment: {counts['rows']} documents from {counts['prompts']} ({cfg.method}) -> {cfg.output} "
          f"(dropped: {counts['dropped'] or 'none'})")
    return counts


def reorderings(text: str, k: int, seed: str) -> list[str]:
    """Up to k orders of the text's sentences, each different from the original and the others."""
    sentences = _SENTENCE_END.split(text.strip())
    rng, seen, out = random.Random(seed), {tuple(sentences)}, []
    for _ in range(20 * k):  # bounded: two sentences have one other order
        if len(out) == k:
            break
        order = rng.sample(sentences, len(sentences))
        if tuple(order) not in seen:
            seen.add(tuple(order))
            out.append(" ".join(order))
    return out


def _teacher_rewrites(cfg: AugmentConfig):
    teacher = open_generator(cfg.teacher, cfg.url, cfg.api_key_env, cfg.endpoint, cfg.device, cfg.batch_size * cfg.k)

    def rewrite(batch_no: int, batch: list[Prompt]) -> list[list[str]]:
        texts = teacher.chat([p.messages for p in batch for _ in range(cfg.k)], cfg.max_new_tokens, cfg.temperature,
                             cfg.top_p, seed=batch_seed(cfg.seed, batch_no))
        return [texts[i * cfg.k:(i + 1) * cfg.k] for i in range(len(batch))]
    return rewrite
