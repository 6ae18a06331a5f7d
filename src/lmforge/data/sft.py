"""Chat conversations -> (B, T) training batches with labels only on assistant tokens.

    examples, stats = tokenize_conversations(tok, convs, seq_len=512)
    batches = ChatBatches(examples, batch_size=16, seq_len=512, pad_id=tok.pad_id, seed=0)
    batch = next(batches)     # {"input_ids": (B, T), "labels": (B, T)}; -100 = not trained
    state = batches.state_dict()   # exact resume, as PackedBatches

By default each row holds ONE conversation, right-padded: padding comes after the real
tokens, so causal attention never lets a real token see it. Rows are padded only to the
longest row of their batch (less wasted compute on CPU); set `fixed_shape` for static
(B, seq_len) shapes under torch.compile or CUDA graphs.

`pack=True` concatenates conversations up to seq_len+1 tokens per row (fewer pad tokens
on short chats) and adds `segments` (B, T): which conversation of its row each token
belongs to (-1 for padding). `lm_objective` turns them into a block-diagonal causal mask
and positions that restart at 0 per conversation, so a packed conversation computes
exactly what it would alone: no attention across conversations (tests check the logits).
The price on a GPU: a dense mask rules out the flash kernel (SDPA falls back to the
memory-efficient one).

Conversations longer than seq_len+1 tokens are cut at the end; `TokenizeStats` counts
them, and drops (and counts) any left with no trained token.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from lmforge.config import ConfigError
from lmforge.tokenizer.chat import TrainOn, render_with_mask
from lmforge.train.objectives.lm import IGNORE_INDEX

Example = tuple[list[int], list[bool]]  # token ids, trained-on mask
PackedRow = tuple[list[int], list[bool], list[int]]  # ids, mask, conversation index per token


@dataclass
class TokenizeStats:
    conversations: int = 0  # conversations given
    examples: int = 0  # kept
    truncated: int = 0  # cut to seq_len + 1 tokens
    dropped_no_target: int = 0  # nothing left to train on (after truncation)
    tokens: int = 0  # kept tokens
    trained_tokens: int = 0  # tokens with a loss

    def summary(self) -> str:
        return (f"{self.examples}/{self.conversations} conversations, {self.tokens:,} tokens "
                f"({self.trained_tokens:,} trained), {self.truncated} truncated, "
                f"{self.dropped_no_target} dropped without assistant tokens")


def tokenize_conversations(tok, conversations: list[list[dict]], seq_len: int,
                           train_on: TrainOn = "all") -> tuple[list[Example], TokenizeStats]:
    stats = TokenizeStats(conversations=len(conversations))
    examples = []
    for messages in conversations:
        ids, mask = render_with_mask(tok, messages, train_on)
        if len(ids) > seq_len + 1:
            ids, mask = ids[:seq_len + 1], mask[:seq_len + 1]
            stats.truncated += 1
        if not any(mask[1:]):  # the first token is never a label
            stats.dropped_no_target += 1
            continue
        examples.append((ids, mask))
        stats.tokens += len(ids)
        stats.trained_tokens += sum(mask[1:])
    stats.examples = len(examples)
    return examples, stats


def pack_examples(examples: list[Example], seq_len: int) -> list[PackedRow]:
    """Greedily concatenate examples in order into rows of at most seq_len + 1 tokens,
    remembering which conversation each token came from."""
    rows: list[PackedRow] = []
    ids, mask, segments = [], [], []
    for e_ids, e_mask in examples:
        if ids and len(ids) + len(e_ids) > seq_len + 1:
            rows.append((ids, mask, segments))
            ids, mask, segments = [], [], []
        segment = segments[-1] + 1 if segments else 0
        ids, mask, segments = ids + e_ids, mask + e_mask, segments + [segment] * len(e_ids)
    if ids:
        rows.append((ids, mask, segments))
    return rows


def collate(rows: list[Example] | list[PackedRow], pad_id: int, width: int | None = None) -> dict:
    """Rows -> input_ids (B, T) and labels (B, T), T = longest row - 1 (or `width`); packed
    rows add segments (B, T), -1 on padding."""
    T = width if width is not None else max(len(row[0]) for row in rows) - 1
    input_ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
    packed = len(rows[0]) == 3
    segments = torch.full((len(rows), T), -1, dtype=torch.long)
    for r, (ids, mask, *seg) in enumerate(rows):
        n = len(ids) - 1
        ids_t, mask_t = torch.tensor(ids), torch.tensor(mask)
        input_ids[r, :n] = ids_t[:-1]
        labels[r, :n] = torch.where(mask_t[1:], ids_t[1:], IGNORE_INDEX)
        if packed:
            segments[r, :n] = torch.tensor(seg[0][:-1])
    batch = {"input_ids": input_ids, "labels": labels}
    return {**batch, "segments": segments} if packed else batch


class ChatBatches:
    """Infinite, seeded, rank-sharded batches of chat rows with exact resume."""

    def __init__(self, examples: list[Example], batch_size: int, seq_len: int, pad_id: int,
                 seed: int = 0, pack: bool = False, fixed_shape: bool = False,
                 rank: int = 0, world_size: int = 1):
        self.rows = pack_examples(examples, seq_len) if pack else list(examples)
        self.batch_size, self.seq_len, self.pad_id = batch_size, seq_len, pad_id
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.width = seq_len if fixed_shape else None
        self.batches_per_epoch = len(self.rows) // world_size // batch_size
        if self.batches_per_epoch == 0:
            raise ConfigError(f"data.batch_size: {len(self.rows)} chat rows are fewer than batch_size {batch_size}"
                             f" x world_size {world_size}; use more data or a smaller batch")
        self.epoch, self.batch = 0, 0
        self._order = self._order_for_epoch(0)

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        if self.batch == self.batches_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0
            self._order = self._order_for_epoch(self.epoch)
        take = self._order[self.batch * self.batch_size:(self.batch + 1) * self.batch_size]
        self.batch += 1
        return collate([self.rows[i] for i in take], self.pad_id, self.width)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed,
                "batch_size": self.batch_size, "world_size": self.world_size,
                "num_rows": len(self.rows)}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        for key in ("seed", "batch_size", "world_size", "num_rows"):
            if state.get(key, mine[key]) != mine[key]:
                raise ValueError(f"cannot resume: chat batches {key} was {state[key]}, now {mine[key]}")
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self._order = self._order_for_epoch(self.epoch)

    def _order_for_epoch(self, epoch: int) -> np.ndarray:
        permutation = np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))
        used = self.batches_per_epoch * self.batch_size * self.world_size
        return permutation[:used][self.rank::self.world_size]


def iter_chat_eval_batches(examples: list[Example], batch_size: int, pad_id: int,
                           max_batches: int | None = None) -> Iterator[dict]:
    """The same batches in the same order every call (for validation loss)."""
    for number, start in enumerate(range(0, len(examples), batch_size)):
        if max_batches is not None and number >= max_batches:
            return
        yield collate(examples[start:start + batch_size], pad_id)
