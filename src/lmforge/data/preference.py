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

import contextlib

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import torch

from lmforge.data.chat import ROLES
from lmforge.data.splits import bucket, text_key
from lmforge.errors import InputError, reading
from lmforge.train.objectives.lm import IGNORE_INDEX

Record = TypeVar("Record")  # anything with a `prompt`: a PreferencePair, a KTO example


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


def read_preferences(path: str | Path, on_error: str = "raise", allow_identical: bool = False) -> list[PreferencePair]:
    """Parse a JSONL file; a malformed record raises InputError naming file and line, or is
    counted and skipped with on_error="skip". A pair whose answers are the same teaches
    nothing and is malformed, except where the caller wants those (SPIN's played pairs)."""
    parse = parse_preference if allow_identical else _parse_distinct_preference
    return read_records(path, parse, on_error, "preference")


def read_pair_files(paths: list[str], on_error: str = "raise") -> list[PreferencePair]:
    """Every pair of every file; none at all is an error naming the files."""
    pairs = [p for path in paths for p in read_preferences(path, on_error)]
    if not pairs:
        raise InputError("no preference pairs to train on (empty files?)", ", ".join(map(str, paths)))
    return pairs


def _parse_distinct_preference(record: dict) -> PreferencePair:
    pair = parse_preference(record)
    chosen, rejected = pair.chosen["content"].strip(), pair.rejected["content"].strip()
    if not chosen or not rejected:
        raise ValueError(f"the {'chosen' if not chosen else 'rejected'} answer is empty")
    if chosen == rejected:
        raise ValueError("'chosen' and 'rejected' are the same answer: no preference to learn")
    return pair


def read_records(path: str | Path, parse: Callable[[dict], Record], on_error: str, kind: str) -> list[Record]:
    """`parse` applied to each JSON line; a ValueError/KeyError/TypeError it raises becomes an
    InputError naming file and line (or, with on_error="skip", a counted skip)."""
    records, skipped = [], 0
    with open(path, "rb") as f, reading(path):
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(parse(json.loads(line)))
            except (ValueError, KeyError, TypeError) as e:
                if on_error != "skip":
                    raise InputError(str(e), path, line_no) from None
                skipped += 1
    if skipped:
        print(f"{path}: skipped {skipped} malformed {kind} records")
    return records


def parse_preference(record: dict) -> PreferencePair:
    if not isinstance(record, dict):
        raise ValueError("a preference record must be a JSON object")
    for key in ("chosen", "rejected"):
        if key not in record:
            raise ValueError(f"missing field {key!r}")
    if "prompt" in record or "messages" in record:
        return PreferencePair(parse_prompt(record), parse_response(record["chosen"], "chosen"),
                              parse_response(record["rejected"], "rejected"))
    chosen, rejected = record["chosen"], record["rejected"]
    if not (isinstance(chosen, list) and isinstance(rejected, list)):
        raise ValueError("without 'prompt' or 'messages', 'chosen'/'rejected' must be conversations")
    check_messages(chosen, "chosen")
    check_messages(rejected, "rejected")
    if chosen[:-1] != rejected[:-1]:
        raise ValueError("'chosen' and 'rejected' conversations must differ only in the last turn")
    return PreferencePair(chosen[:-1], parse_response(chosen[-1], "chosen"),
                          parse_response(rejected[-1], "rejected"))


def prompt_key(record) -> str:
    """Records (pairs, KTO examples) with the same prompt, up to case, spacing and
    punctuation, are one problem."""
    return text_key(" ".join(m["content"] for m in record.prompt))


def hold_out_pairs(pairs: list[PreferencePair], eval_pairs: list[PreferencePair] | None,
                   eval_percent: int = 10) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, held-out) with no prompt on both sides and no repeated pair in train.

    Held-out pairs are `eval_pairs` (a separate file) or, without one, the pairs whose
    prompt key hashes into `eval_percent` of the key space: every pair of one prompt lands
    on one side, so a held-out prompt is never trained on under another pair. Training
    pairs whose prompt is held out, and exact repeats, are dropped and counted."""
    return hold_out(pairs, eval_pairs, eval_percent, lambda p: (p.chosen["content"], p.rejected["content"]),
                    "preference pairs")


def hold_out(records: list[Record], eval_records: list[Record] | None, eval_percent: int,
             response_key: Callable[[Record], tuple], kind: str) -> tuple[list[Record], list[Record]]:
    """hold_out_pairs for any records with a `prompt`; `response_key` tells exact repeats apart."""
    if eval_records is None:
        eval_records = [r for r in records if bucket(prompt_key(r)) < eval_percent]
    held_keys = {prompt_key(r) for r in eval_records}
    train, seen, leaked, repeated = [], set(), 0, 0
    for r in records:
        identity = (prompt_key(r), *response_key(r))
        if identity[0] in held_keys:
            leaked += 1
        elif identity in seen:
            repeated += 1
        else:
            seen.add(identity)
            train.append(r)
    if leaked or repeated:
        print(f"{kind}: {len(train)} train, {len(eval_records)} held out; dropped from train "
              f"{leaked} whose prompt is held out and {repeated} exact repeats")
    return train, eval_records


def render_pairs(tok, pairs: list[PreferencePair], max_len: int = 512) -> list[RenderedPair]:
    """Render both sides with the chat template; cut at max_len tokens. A pair whose
    response is cut away entirely is dropped (reported)."""
    rendered, dropped = [], 0
    for pair in pairs:
        chosen, rejected = (render_response(tok, pair.prompt, r, max_len) for r in (pair.chosen, pair.rejected))
        if chosen is None or rejected is None:
            dropped += 1
            continue
        rendered.append(RenderedPair(*chosen, *rejected))
    if dropped:
        print(f"dropped {dropped} preference pairs whose response did not fit in {max_len} tokens")
    return rendered


def render_response(tok, prompt: list[dict], response: dict, max_len: int) -> tuple[list[int], list[bool]] | None:
    """(ids, mask) of the prompt and response through the chat template, the mask on the
    response; cut at max_len tokens; None when nothing of the response is left to score."""
    from lmforge.tokenizer.chat import render_with_mask

    ids, mask = render_with_mask(tok, prompt + [response], train_on="last")
    ids, mask = list(ids)[:max_len], [bool(m) for m in mask][:max_len]
    return (ids, mask) if any(mask[1:]) else None


def collate_pairs(pairs: list[RenderedPair], pad_id: int) -> dict:
    """Both sides right-padded to one length T (so DPO runs them as one batch)."""
    T = max(max(len(p.chosen_ids), len(p.rejected_ids)) for p in pairs) - 1
    batch = {}
    for side in ("chosen", "rejected"):
        batch[f"{side}_input_ids"], batch[f"{side}_labels"] = shifted_batch(
            [getattr(p, f"{side}_ids") for p in pairs], [getattr(p, f"{side}_mask") for p in pairs], pad_id, T)
    return batch


def shifted_batch(seqs: list[list[int]], masks: list[list[bool]], pad_id: int,
                  T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels), both (B, T), right-padded: labels[:, t] is the token after
    input_ids[:, t] where the mask scores it, else -100."""
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), T), IGNORE_INDEX, dtype=torch.long)
    for i, (seq, mask) in enumerate(zip(seqs, masks)):
        n = len(seq) - 1
        ids[i, :n] = torch.tensor(seq[:-1])
        labels[i, :n] = torch.where(torch.tensor(mask[1:]), torch.tensor(seq[1:]), IGNORE_INDEX)
    return ids, labels


def collate_shared_prompt(pairs: list[RenderedPair], pad_id: int) -> dict:
    """One row per pair for a reward model: the tokens both sides share (the prompt, and any
    common start of the answers), then the chosen side's own tokens, then the rejected side's;
    `segments` (0 shared, 1 chosen, 2 rejected, -1 padding) make each side attend to the
    shared part and itself only (`shared_prefix_attention`) and `positions` restart after the
    shared part, so each side is computed as if alone and the shared part once. `score_index`
    (B, 2) is where each side is scored: its rightmost token that is not pad_id, the rule
    transformers' sequence classifiers apply to the side as a whole sequence."""
    rows = []
    for p in pairs:
        c, r = p.chosen_ids, p.rejected_ids
        shared = 0
        # Each side keeps at least one token of its own after the shared part.
        while shared < min(len(c), len(r)) - 1 and c[shared] == r[shared]:
            shared += 1
        ids = c[:shared] + c[shared:] + r[shared:]
        segments = [0] * shared + [1] * (len(c) - shared) + [2] * (len(r) - shared)
        positions = list(range(len(c))) + list(range(shared, len(r)))
        index = [_last_not_pad(c, pad_id), _last_not_pad(r, pad_id)]
        index[1] += len(c) - shared if index[1] >= shared else 0  # the rejected side's own tokens follow the chosen's
        rows.append((ids, segments, positions, index))
    T = max(len(ids) for ids, *_ in rows)
    batch = {"input_ids": torch.full((len(rows), T), pad_id, dtype=torch.long),
             "segments": torch.full((len(rows), T), -1, dtype=torch.long),
             "positions": torch.zeros((len(rows), T), dtype=torch.long),
             "score_index": torch.tensor([index for *_, index in rows])}
    for i, (ids, segments, positions, _) in enumerate(rows):
        for key, values in (("input_ids", ids), ("segments", segments), ("positions", positions)):
            batch[key][i, :len(values)] = torch.tensor(values)
    return batch


def _last_not_pad(ids: list[int], pad_id: int) -> int:
    return max((i for i, t in enumerate(ids) if t != pad_id), default=0)


class PreferenceBatches:
    """Shuffled epochs of collated pairs (`pair_index` says which); resumable (`state_dict`).

    `sides` names the sequences a collated batch scores per record (input ids, labels) and
    the key its precomputed reference log-prob goes under; KTOBatches has other sides."""

    sides = (("chosen_input_ids", "chosen_labels", "ref_chosen_logps"),
             ("rejected_input_ids", "rejected_labels", "ref_rejected_logps"))
    index_key = "pair_index"

    def __init__(self, records: list, batch_size: int, pad_id: int = 0, seed: int = 0,
                 rank: int = 0, world_size: int = 1, collate=collate_pairs):
        if not records:
            raise ValueError("no preference records to train on")
        self.records, self.batch_size, self.pad_id, self.seed = records, batch_size, pad_id, seed
        self.collate = collate
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position = 0, 0
        self.ref_logps: torch.Tensor | None = None  # (N, len(sides)), when precomputed

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        indices = []
        while len(indices) < self.batch_size:
            order = list(range(len(self.records)))
            random.Random(self.seed * 7919 + self.epoch).shuffle(order)
            mine = order[self.rank::self.world_size]
            take = mine[self.position:self.position + self.batch_size - len(indices)]
            indices += take
            self.position += len(take)
            if self.position >= len(mine):
                self.epoch, self.position = self.epoch + 1, 0
        return self.batch(indices)

    def batch(self, indices: list[int]) -> dict:
        batch = self.collate([self.records[i] for i in indices], self.pad_id)
        batch[self.index_key] = torch.tensor(indices)
        if self.ref_logps is not None:
            for column, (_, _, ref_key) in enumerate(self.sides):
                batch[ref_key] = self.ref_logps[indices, column]
        return batch

    def in_order(self, batch_size: int) -> Iterator[dict]:
        """Every record once, in order (for evaluation)."""
        for start in range(0, len(self.records), batch_size):
            yield self.batch(list(range(start, min(start + batch_size, len(self.records)))))

    @torch.no_grad()
    def precompute_reference(self, model, autocast=contextlib.nullcontext, batch_size: int = 16) -> None:
        """Score every record once under `model` (the reference), so training needs no copy.
        `autocast` is the training forward's (`rt.autocast`): the reference must round as the
        policy does, or policy = reference would not give margins of exactly 0."""
        from lmforge.train.logprobs import label_mask, masked_sum, policy_logprobs

        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        rows = []
        for start in range(0, len(self.records), batch_size):
            batch = self.collate(self.records[start:start + batch_size], self.pad_id)
            columns = []
            for ids_key, labels_key, _ in self.sides:
                x, y = batch[ids_key].to(device), batch[labels_key].to(device)
                with autocast():
                    logps = policy_logprobs(model, x, y)
                columns.append(masked_sum(logps, label_mask(y)).float().cpu())
            rows.append(torch.stack(columns, 1))
        self.ref_logps = torch.cat(rows)
        model.train(was_training)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "ref_logps": self.ref_logps}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        self.ref_logps = state["ref_logps"]


def parse_prompt(record: dict) -> list[dict]:
    """The conversation before the response: `messages`, or `prompt` as one user turn."""
    if "messages" not in record:
        return [{"role": "user", "content": string_field(record, "prompt")}]
    check_prompt(record["messages"], "messages")
    return record["messages"]


def parse_response(value, key: str) -> dict:
    """A response: a string, or an assistant message {"role": "assistant", "content": str}."""
    if isinstance(value, str):
        return {"role": "assistant", "content": value}
    if isinstance(value, dict) and isinstance(value.get("content"), str) and \
            value.get("role", "assistant") == "assistant":
        return {"role": "assistant", "content": value["content"]}
    raise ValueError(f"field {key!r} must be a string or an assistant message")


def string_field(record: dict, key: str) -> str:
    if key not in record:
        raise ValueError(f"missing field {key!r}")
    if not isinstance(record[key], str):
        raise ValueError(f"field {key!r} must be a string")
    return record[key]


def check_messages(messages, key: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"field {key!r} must be a non-empty list of messages")
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)):
            raise ValueError(f"field '{key}[{i}]' must be {{'role': {' | '.join(ROLES)}, 'content': str}}")


def check_prompt(messages, key: str) -> None:
    """A conversation a response can follow: a system turn only first, a user (or tool) turn last."""
    check_messages(messages, key)
    roles = [m["role"] for m in messages]
    if "system" in roles[1:]:
        raise ValueError(f"field {key!r}: a system message may only come first")
    if roles[-1] not in ("user", "tool"):
        raise ValueError(f"field {key!r}: roles out of order ({', '.join(roles)}); the prompt must end "
                         "with a user (or tool) turn for the response to answer")
