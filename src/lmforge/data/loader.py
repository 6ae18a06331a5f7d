"""Batches of packed token windows from memory-mapped shards, resumable to the exact batch.

    shards = TokenShards("runs/shards", "train")
    batches = PackedBatches(shards, batch_size=32, seq_len=512, seed=0, rank=r, world_size=w)
    batch = next(batches)     # {"input_ids": (B, T) int64, "labels": (B, T) int64}
    state = batches.state_dict()            # {"epoch": 0, "batch": 1, ...}: JSON-able
    PackedBatches(shards, 32, 512).load_state_dict(state)  # continues with the same batches

The token stream of each shard is cut into windows of T+1 tokens on a grid of stride T
(so every token is a target once per epoch, and documents are packed across window
edges, separated by their BOS). Each epoch visits the windows in a fresh seeded
permutation; rank r takes every world_size-th window of it, so ranks never overlap and
all ranks get the same number of batches. A batch is B slices of the memmap copied into
one array: no Python work per token.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from lmforge.data.shards import read_index


class TokenShards:
    """The shards of one split, memory-mapped read-only, addressed as windows of T+1 tokens."""

    def __init__(self, directory: str | Path, split: str = "train"):
        self.directory, self.split = Path(directory), split
        self.index = read_index(self.directory)
        if split not in self.index["splits"]:
            raise ValueError(f"unknown split {split!r}; have {list(self.index['splits'])}")
        self.dtype = np.dtype(self.index["dtype"])
        self.arrays = [np.memmap(self.directory / s["file"], dtype=self.dtype, mode="r")
                       for s in self.index["splits"][split]["shards"] if s["tokens"] > 0]

    @property
    def vocab_size(self) -> int:
        return self.index["vocab_size"]

    @property
    def bos_id(self) -> int:
        return self.index["bos_id"]

    @property
    def num_tokens(self) -> int:
        return sum(len(a) for a in self.arrays)

    def window_starts(self, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard number, offset) of every window of seq_len + 1 tokens, in storage order."""
        shard_ids, offsets = [], []
        for k, array in enumerate(self.arrays):
            count = max(0, (len(array) - 1) // seq_len)
            shard_ids.append(np.full(count, k, dtype=np.int64))
            offsets.append(np.arange(count, dtype=np.int64) * seq_len)
        if not shard_ids:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(shard_ids), np.concatenate(offsets)

    def gather(self, shard_ids: np.ndarray, offsets: np.ndarray, seq_len: int) -> dict:
        """Copy windows into a batch: inputs are tokens [0, T), labels the next tokens [1, T]."""
        windows = np.empty((len(offsets), seq_len + 1), dtype=np.int64)
        for row, (k, start) in enumerate(zip(shard_ids.tolist(), offsets.tolist())):
            windows[row] = self.arrays[k][start:start + seq_len + 1]
        tokens = torch.from_numpy(windows)
        return {"input_ids": tokens[:, :-1].contiguous(), "labels": tokens[:, 1:].contiguous()}


class PackedBatches:
    """Infinite, seeded, rank-sharded iterator of training batches with exact resume."""

    def __init__(self, shards: TokenShards, batch_size: int, seq_len: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.shards, self.batch_size, self.seq_len = shards, batch_size, seq_len
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self._shard_ids, self._offsets = shards.window_starts(seq_len)
        # Every rank gets the same count, so DDP ranks take the same number of steps.
        windows_per_rank = len(self._offsets) // world_size
        self.batches_per_epoch = windows_per_rank // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{shards.split} split has {shards.num_tokens:,} tokens = {len(self._offsets)} "
                f"windows of {seq_len + 1}: fewer than batch_size {batch_size} x world_size "
                f"{world_size}; use more data or a smaller batch/sequence")
        self.epoch, self.batch = 0, 0
        self._epoch_order = self._order_for_epoch(0)

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        if self.batch == self.batches_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0
            self._epoch_order = self._order_for_epoch(self.epoch)
        take = self._epoch_order[self.batch * self.batch_size:(self.batch + 1) * self.batch_size]
        self.batch += 1
        return self.shards.gather(self._shard_ids[take], self._offsets[take], self.seq_len)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed,
                "batch_size": self.batch_size, "seq_len": self.seq_len,
                "world_size": self.world_size, "num_windows": len(self._offsets)}

    def load_state_dict(self, state: dict) -> None:
        """Continue where `state` was taken; refuses a state from a different data layout."""
        mine = self.state_dict()
        for key in ("seed", "batch_size", "seq_len", "world_size", "num_windows"):
            if state.get(key, mine[key]) != mine[key]:
                raise ValueError(f"cannot resume: data loader {key} was {state[key]}, now {mine[key]}")
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self._epoch_order = self._order_for_epoch(self.epoch)

    def _order_for_epoch(self, epoch: int) -> np.ndarray:
        """This rank's window numbers for `epoch`: an interleaved slice of a seeded permutation."""
        permutation = np.random.default_rng([self.seed, epoch]).permutation(len(self._offsets))
        used = self.batches_per_epoch * self.batch_size * self.world_size
        return permutation[:used][self.rank::self.world_size]


def iter_eval_batches(shards: TokenShards, batch_size: int, seq_len: int,
                      max_batches: int | None = None, rank: int = 0,
                      world_size: int = 1) -> Iterator[dict]:
    """Windows in storage order (the same every call), this rank's every world_size-th one.

    The last batch may be smaller than batch_size; weight losses by tokens when averaging.
    """
    shard_ids, offsets = shards.window_starts(seq_len)
    shard_ids, offsets = shard_ids[rank::world_size], offsets[rank::world_size]
    for number, start in enumerate(range(0, len(offsets), batch_size)):
        if max_batches is not None and number >= max_batches:
            return
        stop = start + batch_size
        yield shards.gather(shard_ids[start:stop], offsets[start:stop], seq_len)
