"""Preference pairs for DPO-style objectives: JSONL -> rendered pairs -> padded batches.

    pairs = read_preferences("data/preference/arith_pairs.jsonl")
    train, held_out = hold_out_pairs(pairs, eval_pairs=None, eval_percent=10)  # by prompt
    rendered = render_pairs(tok, train, max_len=256)
    batches = PreferenceBatches(rendered, batch_size=8, pad_id=tok.pad_id, seed=0)
    batches.precompute_reference(model)        # reference log-probs once, no second model

A record is one of
    {"prompt": "Q", "chosen": "good answer", "rejected": "bad answer"}
    {"messages": [{"role": "user", ...}, ...], "chosen": "..." | {"role": "assistant", ...},
     "rejected": ...}
    {"chosen": [full conversation], "rejected": [full conversation]}   (shared prefix = prompt)
Each side is rendered through the tokenizer's chat template; only the final assistant
response is scored (labels -100 elsewhere).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from lmforge.data.splits import bucket, text_key
from lmforge.errors import InputError
from lmforge.train.objectives.lm import IGNORE_INDEX


@dataclass
class PreferencePair:
    prompt: list[dict]  # the conversation so far (ends with a user turn)
    chosen: dict  # preferred assistant message
    rejected: dict  # dispreferred assistant message


@dataclass
class RenderedPair:
    chosen_ids: list[int]
    chosen_mask: list[bool]  # True on the tokens the objective scores
    rejected_ids: list[int]
    rejected_mask: list[bool]


def read_preferences(path: str | Path, on_error: str = "raise") -> list[PreferencePair]:
    """Parse a JSONL file; a malformed record raises InputError naming file and line, or is
    counted and skipped with on_error="skip"."""
    pairs, skipped = [], 0
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                pairs.append(parse_preference(json.loads(line)))
            except (ValueError, KeyError, TypeError) as e:
                if on_error != "skip":
                    raise InputError(str(e), path, line_no) from None
                skipped += 1
    if skipped:
        print(f"{path}: skipped {skipped} malformed preference records")
    return pairs


def parse_preference(record: dict) -> PreferencePair:
    if not isinstance(record, dict):
        raise ValueError("a preference record must be a JSON object")
    for key in ("chosen", "rejected"):
        if key not in record:
            raise ValueError(f"missing field {key!r}")
    if "prompt" in record or "messages" in record:
        prompt = record.get("messages") or [{"role": "user", "content": _text(record, "prompt")}]
        _check_messages(prompt, "messages")
        return PreferencePair(prompt, _response(record["chosen"], "chosen"),
                              _response(record["rejected"], "rejected"))
    chosen, rejected = record["chosen"], record["rejected"]
    if not (isinstance(chosen, list) and isinstance(rejected, list)):
        raise ValueError("without 'prompt' or 'messages', 'chosen'/'rejected' must be conversations")
    _check_messages(chosen, "chosen")
    _check_messages(rejected, "rejected")
    if chosen[:-1] != rejected[:-1]:
        raise ValueError("'chosen' and 'rejected' conversations must differ only in the last turn")
    return PreferencePair(chosen[:-1], _response(chosen[-1], "chosen"), _response(rejected[-1], "rejected"))


def prompt_key(pair: PreferencePair) -> str:
    """Pairs with the same prompt (up to case, spacing and punctuation) are one problem."""
    return text_key(" ".join(m["content"] for m in pair.prompt))


def hold_out_pairs(pairs: list[PreferencePair], eval_pairs: list[PreferencePair] | None,
                   eval_percent: int = 10) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, held-out) with no prompt on both sides and no repeated pair in train.

    Held-out pairs are `eval_pairs` (a separate file) or, without one, the pairs whose
    prompt key hashes into `eval_percent` of the key space: every pair of one prompt lands
    on one side, so a held-out prompt is never trained on under another pair. Training
    pairs whose prompt is held out, and exact repeats, are dropped and counted."""
    if eval_pairs is None:
        eval_pairs = [p for p in pairs if bucket(prompt_key(p)) < eval_percent]
    held_keys = {prompt_key(p) for p in eval_pairs}
    train, seen, leaked, repeated = [], set(), 0, 0
    for p in pairs:
        identity = (prompt_key(p), p.chosen["content"], p.rejected["content"])
        if identity[0] in held_keys:
            leaked += 1
        elif identity in seen:
            repeated += 1
        else:
            seen.add(identity)
            train.append(p)
    if leaked or repeated:
        print(f"preference pairs: {len(train)} train, {len(eval_pairs)} held out; dropped from train "
              f"{leaked} whose prompt is held out and {repeated} exact repeats")
    return train, eval_pairs


def render_pairs(tok, pairs: list[PreferencePair], max_len: int = 512) -> list[RenderedPair]:
    """Render both sides with the chat template; cut at max_len tokens. A pair whose
    response is cut away entirely is dropped (reported)."""
    from lmforge.tokenizer.chat import render_with_mask

    rendered, dropped = [], 0
    for pair in pairs:
        sides = [render_with_mask(tok, pair.prompt + [r], train_on="last")
                 for r in (pair.chosen, pair.rejected)]
        (c_ids, c_mask), (r_ids, r_mask) = [(list(i)[:max_len], [bool(m) for m in mk][:max_len])
                                            for i, mk in sides]
        if not any(c_mask[1:]) or not any(r_mask[1:]):
            dropped += 1
            continue
        rendered.append(RenderedPair(c_ids, c_mask, r_ids, r_mask))
    if dropped:
        print(f"dropped {dropped} preference pairs whose response did not fit in {max_len} tokens")
    return rendered


def collate_pairs(pairs: list[RenderedPair], pad_id: int) -> dict:
    """Both sides right-padded to one length T (so DPO runs them as one batch)."""
    T = max(max(len(p.chosen_ids), len(p.rejected_ids)) for p in pairs) - 1
    batch = {}
    for side in ("chosen", "rejected"):
        ids = torch.full((len(pairs), T), pad_id, dtype=torch.long)
        labels = torch.full((len(pairs), T), IGNORE_INDEX, dtype=torch.long)
        for i, p in enumerate(pairs):
            seq, mask = getattr(p, f"{side}_ids"), getattr(p, f"{side}_mask")
            n = len(seq) - 1
            ids[i, :n] = torch.tensor(seq[:-1])
            target = torch.tensor(seq[1:])
            labels[i, :n] = torch.where(torch.tensor(mask[1:]), target, IGNORE_INDEX)
        batch[f"{side}_input_ids"], batch[f"{side}_labels"] = ids, labels
    return batch


class PreferenceBatches:
    """Shuffled epochs of collated pairs; resumable (`state_dict`)."""

    def __init__(self, pairs: list[RenderedPair], batch_size: int, pad_id: int = 0, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if not pairs:
            raise ValueError("no preference pairs to train on")
        self.pairs, self.batch_size, self.pad_id, self.seed = pairs, batch_size, pad_id, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position = 0, 0
        self.ref_logps: torch.Tensor | None = None  # (N, 2) chosen/rejected, when precomputed

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        indices = []
        while len(indices) < self.batch_size:
            order = list(range(len(self.pairs)))
            random.Random(self.seed * 7919 + self.epoch).shuffle(order)
            mine = order[self.rank::self.world_size]
            take = mine[self.position:self.position + self.batch_size - len(indices)]
            indices += take
            self.position += len(take)
            if self.position >= len(mine):
                self.epoch, self.position = self.epoch + 1, 0
        batch = collate_pairs([self.pairs[i] for i in indices], self.pad_id)
        if self.ref_logps is not None:
            batch["ref_chosen_logps"] = self.ref_logps[indices, 0]
            batch["ref_rejected_logps"] = self.ref_logps[indices, 1]
        return batch

    @torch.no_grad()
    def precompute_reference(self, model, batch_size: int = 16) -> None:
        """Score every pair once under `model` (the reference), so training needs no copy."""
        from lmforge.train.logprobs import label_mask, masked_sum, policy_logprobs

        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        rows = []
        for start in range(0, len(self.pairs), batch_size):
            batch = collate_pairs(self.pairs[start:start + batch_size], self.pad_id)
            sides = []
            for side in ("chosen", "rejected"):
                x, y = batch[f"{side}_input_ids"].to(device), batch[f"{side}_labels"].to(device)
                sides.append(masked_sum(policy_logprobs(model, x, y), label_mask(y)).float().cpu())
            rows.append(torch.stack(sides, 1))
        self.ref_logps = torch.cat(rows)
        model.train(was_training)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "ref_logps": self.ref_logps}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        self.ref_logps = state["ref_logps"]


def _text(record: dict, key: str) -> str:
    value = record[key]
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} must be a string")
    return value


def _response(value, key: str) -> dict:
    if isinstance(value, str):
        return {"role": "assistant", "content": value}
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return {"role": value.get("role", "assistant"), "content": value["content"]}
    raise ValueError(f"field {key!r} must be a string or an assistant message")


def _check_messages(messages, key: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"field {key!r} must be a non-empty list of messages")
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise ValueError(f"{key}[{i}] must be {{'role': str, 'content': str}}")
