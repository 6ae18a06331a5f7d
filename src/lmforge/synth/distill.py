"""`lmforge data distill`: a teacher answers a prompt set -> chat JSONL that `sft` reads.

    lmforge data distill --teacher runs/smollm2 --prompts prompts.jsonl --output data/distilled.jsonl
    lmforge data distill --teacher gpt-4o-mini --url https://host/v1 --prompts arithmetic:500 \\
        --samples 4 --temperature 0.8 --verifier math --output data/arith_distilled.jsonl

Each prompt is asked `samples` times (with `system_prompt` first, when given); an answer is
kept when it is not empty, not cut off at `max_new_tokens` (unless `drop_truncated false`),
not a repeat of another sample of the same prompt, within the
character range and, with `verifier` rewards (lmforge.rewards: "math", "module:function"),
scores at least `verifier_threshold` on each. The manifest counts every drop by reason.
`keep_system_prompt false` leaves the system prompt out of the rows: the student learns to
answer as the prompted teacher does without being told (context distillation).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.synth.backend import Completion
from lmforge.synth.score import load_verifiers
from lmforge.synth.stage import (EndpointOptions, Prompt, batch_seed, generator_name, open_generator, prompt_manifest,
                                 read_prompt_set, with_system, write_resumable)


@dataclass
class DistillConfig:
    teacher: str = ""  # a model lmforge loads, or (with url) the endpoint's model name
    url: str = ""  # an OpenAI-compatible endpoint (http://host:port/v1); empty = load the teacher here
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the endpoint's API key
    prompts: str = ""  # JSONL of prompt / question / messages records, or a task NAME:N (arithmetic:200)
    output: str = "data/distilled.jsonl"  # chat JSONL; OUT.manifest.json and OUT.progress beside it
    system_prompt: str = ""  # sent before every prompt
    keep_system_prompt: bool = True  # false: rows without it (distil the system prompt away)
    samples: int = 1  # answers per prompt
    max_new_tokens: int = 256
    temperature: float = 0.0  # use > 0 with samples > 1
    top_p: float = 1.0
    verifier: list[str] = field(default_factory=list)  # rewards an answer must pass (repeat --verifier)
    verifier_threshold: float = 1.0  # the least score that passes, on each verifier
    drop_truncated: bool = True  # drop answers cut off at max_new_tokens (finish_reason "length")
    min_chars: int = 1  # shorter answers are dropped
    max_chars: int = 0  # longer answers are dropped (0 = no limit)
    batch_size: int = 16  # prompts per batch: one generation call, one flush, one resume point
    seed: int = 0
    device: str = "cpu"
    endpoint: EndpointOptions = field(default_factory=EndpointOptions)
    overwrite: bool = False  # start again instead of resuming an existing output
    progress: bool = True


def distill(cfg: DistillConfig) -> dict:
    prompts = read_prompt_set(cfg.prompts, cfg.seed)
    verifiers = load_verifiers(cfg.verifier)
    teacher = open_generator(cfg.teacher, cfg.url, cfg.api_key_env, cfg.endpoint, cfg.device,
                             cfg.batch_size * cfg.samples)

    def make_rows(batch_no: int, batch: list[Prompt]) -> tuple[list[dict], Counter]:
        asked = [with_system(p.messages, cfg.system_prompt) for p in batch for _ in range(cfg.samples)]
        answers = teacher.complete(asked, cfg.max_new_tokens, cfg.temperature, cfg.top_p,
                                   seed=batch_seed(cfg.seed, batch_no))
        rows, dropped = [], Counter()
        for i, p in enumerate(batch):
            kept_here = set()
            for answer in answers[i * cfg.samples:(i + 1) * cfg.samples]:
                reason = drop_reason(answer, p.record, cfg, verifiers, kept_here)
                if reason:
                    dropped[reason] += 1
                    continue
                kept_here.add(answer.text)
                shown = asked[i * cfg.samples] if cfg.keep_system_prompt else p.messages
                rows.append({"messages": [*shown, {"role": "assistant", "content": answer.text}]})
        return rows, dropped

    counts = write_resumable(Path(cfg.output), prompts, make_rows, cfg.batch_size,
                             prompt_manifest("data distill", cfg, {"teacher": generator_name(cfg.teacher, cfg.url)}),
                             cfg.overwrite, cfg.progress)
    print(f"data distill: {counts['rows']} answers for {counts['prompts']} prompts -> {cfg.output} "
          f"(dropped: {counts['dropped'] or 'none'})")
    return counts


def drop_reason(completion: Completion, record: dict, cfg: DistillConfig, verifiers: dict,
                kept: set[str]) -> str | None:
    answer = completion.text
    if not answer.strip():
        return "empty"
    if cfg.drop_truncated and completion.finish_reason == "length":
        return "truncated"
    if answer in kept:
        return "duplicate_sample"
    if len(answer) < cfg.min_chars:
        return "too_short"
    if cfg.max_chars and len(answer) > cfg.max_chars:
        return "too_long"
    for name, fn in verifiers.items():
        if fn(answer, record) < cfg.verifier_threshold:
            return f"verifier:{name}"
    return None
