"""Unpaired preference data for KTO: JSONL -> labelled completions -> batches that carry a
mismatched completion for the KL reference point.

    examples = read_examples(["feedback.jsonl"], pair_files=["pairs.jsonl"])   # pairs: 2 examples each
    train, held_out = hold_out_examples(examples, eval_examples=None, eval_percent=10)
    batches = KTOBatches(render_examples(tok, train, max_len=256, seed=0), batch_size=8, pad_id=tok.pad_id)
    batches.precompute_reference(model)     # both sequences of every example, once

A record is
    {"prompt": "Q", "completion": "answer", "label": true}
    {"messages": [{"role": "user", ...}, ...], "completion": {"role": "assistant", ...}, "label": false}
`label` true marks a desirable completion, false an undesirable one. Reading, holding out
by prompt and rendering go through the preference-pair code (data/preference.py).

KTO's reference point z0 is the policy's KL to the reference, estimated on completions that
do not belong to their prompt. Each example gets one, fixed when it is rendered: the
completion of the example before it in a seeded cyclic order (TRL likewise fixes it when it
builds its dataset, rotating completions by one within blocks). Fixed, its reference
log-prob can be precomputed once like the example's own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from lmforge.data.preference import (PreferenceBatches, PreferencePair, hold_out, parse_prompt, parse_response,
                                     read_preferences, read_records, render_response, shifted_batch)


@dataclass
class KTOExample:
    prompt: list[dict]  # the conversation so far (ends with a user turn)
    completion: dict  # an assistant message
    desirable: bool  # the label: a good (True) or a bad (False) completion


@dataclass
class RenderedExample:
    ids: list[int]  # prompt + completion through the chat template
    mask: list[bool]  # True on the completion's tokens (the ones scored)
    desirable: bool
    kl_ids: list[int] | None = None  # this prompt + another example's completion (for z0)
    kl_mask: list[bool] | None = None


def read_kto(path: str | Path, on_error: str = "raise") -> list[KTOExample]:
    """Parse a JSONL file; a malformed record raises InputError naming file, line and field,
    or is counted and skipped with on_error="skip"."""
    return read_records(path, parse_kto, on_error, "KTO")


def parse_kto(record: dict) -> KTOExample:
    if not isinstance(record, dict):
        raise ValueError("a KTO record must be a JSON object")
    for key in ("completion", "label"):
        if key not in record:
            raise ValueError(f"missing field {key!r}")
    if "prompt" not in record and "messages" not in record:
        raise ValueError("missing field 'prompt' (or 'messages')")
    completion = parse_response(record["completion"], "completion")
    if not completion["content"].strip():
        raise ValueError("field 'completion' is empty")
    if not isinstance(record["label"], bool):
        raise ValueError(f"field 'label' must be true or false, not {record['label']!r}")
    return KTOExample(parse_prompt(record), completion, record["label"])


def read_examples(kto_files: list[str], pair_files: list[str] = (), on_error: str = "raise") -> list[KTOExample]:
    """The records of KTO files, then each pair of preference-pair files as two examples."""
    return ([e for path in kto_files for e in read_kto(path, on_error)]
            + pairs_to_kto([p for path in pair_files for p in read_preferences(path, on_error)]))


def pairs_to_kto(pairs: list[PreferencePair]) -> list[KTOExample]:
    """Each pair as two unpaired examples: its chosen response desirable, its rejected one not."""
    return [KTOExample(p.prompt, response, desirable)
            for p in pairs for response, desirable in ((p.chosen, True), (p.rejected, False))]


def hold_out_examples(examples: list[KTOExample], eval_examples: list[KTOExample] | None,
                      eval_percent: int = 10) -> tuple[list[KTOExample], list[KTOExample]]:
    """(train, held-out) split by a hash of the prompt, as for preference pairs."""
    return hold_out(examples, eval_examples, eval_percent, lambda e: (e.completion["content"], e.desirable),
                    "KTO examples")


def render_examples(tok, examples: list[KTOExample], max_len: int = 512, seed: int = 0) -> list[RenderedExample]:
    """Render each example (dropping those whose completion is cut away, reported) and give
    it its mismatched sequence."""
    rendered = []
    for e in examples:
        seq = render_response(tok, e.prompt, e.completion, max_len)
        if seq is not None:
            rendered.append(RenderedExample(*seq, e.desirable))
    if len(rendered) < len(examples):
        print(f"dropped {len(examples) - len(rendered)} KTO examples whose completion did not fit in {max_len} tokens")
    return with_mismatched(rendered, max_len, seed)


def with_mismatched(examples: list[RenderedExample], max_len: int, seed: int) -> list[RenderedExample]:
    """Set each example's kl_ids/kl_mask: its prompt followed by the completion of the example
    before it in a seeded cyclic order (its own when it is the only one)."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    for k, i in enumerate(order):
        prompt_ids, _ = _split(examples[i])
        _, (completion_ids, completion_mask) = _split(examples[order[k - 1]])
        examples[i].kl_ids = (prompt_ids + completion_ids)[:max_len]
        examples[i].kl_mask = ([False] * len(prompt_ids) + completion_mask)[:max_len]
    return examples


def _split(e: RenderedExample) -> tuple[list[int], tuple[list[int], list[bool]]]:
    """(prompt ids, (completion ids, mask)), cut where the scored tokens begin."""
    start = e.mask.index(True)
    return e.ids[:start], (e.ids[start:], e.mask[start:])


def collate_examples(examples: list[RenderedExample], pad_id: int) -> dict:
    """input_ids/labels (B, T) of each example, kl_input_ids/kl_labels (B, T') of its
    mismatched sequence, and `desirable` (B,) bool."""
    batch = {"desirable": torch.tensor([e.desirable for e in examples])}
    for prefix in ("", "kl_"):
        seqs = [getattr(e, f"{prefix}ids") for e in examples]
        masks = [getattr(e, f"{prefix}mask") for e in examples]
        batch[f"{prefix}input_ids"], batch[f"{prefix}labels"] = shifted_batch(
            seqs, masks, pad_id, max(map(len, seqs)) - 1)
    return batch


class KTOBatches(PreferenceBatches):
    """Shuffled epochs of collated KTO examples (`example_index` says which); resumable.
    Precomputed reference log-probs go under `ref_logps` and `ref_kl_logps`."""

    sides = (("input_ids", "labels", "ref_logps"), ("kl_input_ids", "kl_labels", "ref_kl_logps"))
    index_key = "example_index"

    def __init__(self, examples: list[RenderedExample], batch_size: int, pad_id: int = 0, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        super().__init__(examples, batch_size, pad_id, seed, rank, world_size, collate=collate_examples)
