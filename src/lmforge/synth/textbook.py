"""`lmforge data textbook`: a teacher writes textbook-style passages with exercises for a list
of topics -> documents (JSONL with "text") that `tokenize` reads, for pretraining.

    lmforge data textbook --teacher runs/smollm2 --topics topics.txt --samples 2 --temperature 0.7 \\
        --output data/textbooks.jsonl

The idea of Phi-1 (Gunasekar et al. 2023, "Textbooks Are All You Need"): clear, explained,
exercise-bearing text teaches more per token than the web does. A topic file is one topic a
line, or JSONL with a "topic" field. Resumable like every generating `data` command.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.errors import InputError
from lmforge.eval.tasks import read_records
from lmforge.synth.stage import (EndpointOptions, Manifest, Prompt, batch_seed, generator_name, open_generator,
                                 write_resumable)

TEXTBOOK_PROMPT = """Write a section of a textbook on "{topic}" for {audience}. Explain the idea step by step in clear prose, with one worked example. Then give {exercises} exercises, each followed by its solution. Reply with the section only."""


@dataclass
class TextbookConfig:
    teacher: str = ""  # a model lmforge loads, or (with url) the endpoint's model name
    url: str = ""  # an OpenAI-compatible endpoint (http://host:port/v1)
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the endpoint's API key
    topics: str = ""  # one topic a line, or JSONL records with "topic"
    output: str = "data/textbooks.jsonl"  # documents: {"text", "topic"}; OUT.manifest.json beside it
    audience: str = "a curious high-school student"
    exercises: int = 2  # exercises (with solutions) per passage
    samples: int = 1  # passages per topic
    max_new_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 1.0
    min_chars: int = 200  # shorter passages are dropped
    batch_size: int = 8  # topics per batch (one resume point)
    seed: int = 0
    device: str = "cpu"
    endpoint: EndpointOptions = field(default_factory=EndpointOptions)
    overwrite: bool = False
    progress: bool = True


def textbook(cfg: TextbookConfig) -> dict:
    topics = read_topics(Path(cfg.topics))
    prompts = [Prompt(i, [{"role": "user", "content": TEXTBOOK_PROMPT.format(
        topic=t, audience=cfg.audience, exercises=cfg.exercises)}], {"topic": t}) for i, t in enumerate(topics)]
    teacher = open_generator(cfg.teacher, cfg.url, cfg.api_key_env, cfg.endpoint, cfg.device,
                             cfg.batch_size * cfg.samples)

    def make_rows(batch_no: int, batch: list[Prompt]) -> tuple[list[dict], Counter]:
        passages = teacher.chat([p.messages for p in batch for _ in range(cfg.samples)], cfg.max_new_tokens,
                                cfg.temperature, cfg.top_p, seed=batch_seed(cfg.seed, batch_no))
        rows, dropped = [], Counter()
        for i, p in enumerate(batch):
            for text in dict.fromkeys(passages[i * cfg.samples:(i + 1) * cfg.samples]):
                if len(text.strip()) < cfg.min_chars:
                    dropped["too_short"] += 1
                else:
                    rows.append({"text": text.strip(), "topic": p.record["topic"]})
            dropped["duplicate_sample"] += cfg.samples - len(set(passages[i * cfg.samples:(i + 1) * cfg.samples]))
        return rows, +dropped

    manifest = Manifest("data textbook", cfg, [Path(cfg.topics)], {"teacher": generator_name(cfg.teacher, cfg.url)})
    counts = write_resumable(Path(cfg.output), prompts, make_rows, cfg.batch_size, manifest, cfg.overwrite,
                             cfg.progress)
    print(f"data textbook: {counts['rows']} passages on {counts['prompts']} topics -> {cfg.output} "
          f"(dropped: {counts['dropped'] or 'none'})")
    return counts


def read_topics(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError("no such topic file", path)
    if path.suffix == ".jsonl":
        topics = []
        for line, record in read_records(path):
            if not isinstance(record.get("topic"), str):
                raise InputError("a topic record needs 'topic' (a string)", path, line)
            topics.append(record["topic"])
        return topics
    topics = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not topics:
        raise InputError("no topics", path)
    return topics
