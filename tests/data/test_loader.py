import numpy as np
import pytest
import torch

from lmforge.data.loader import PackedBatches, TokenShards, iter_eval_batches
from lmforge.data.shards import ShardWriter, write_index


@pytest.fixture
def shard_dir(tmp_path):
    """Two train shards whose token at position p is p (mod 50k): windows are easy to check."""
    tokens = np.arange(10_000) % 50_000
    splits = {}
    for split, parts in {"train": [tokens[:6001], tokens[6001:]], "val": [tokens[:1000]]}.items():
        with ShardWriter(tmp_path, split, np.uint16, shard_size_tokens=1) as writer:
            for part in parts:
                writer.add_document(part)
        splits[split] = {"shards": writer.shards}
    write_index(tmp_path, {"dtype": "uint16", "vocab_size": 50_000, "bos_id": 0, "splits": splits})
    return tmp_path


def take(batches, n):
    return [next(batches) for _ in range(n)]


def test_labels_are_the_next_tokens_of_a_contiguous_window(shard_dir):
    batch = next(PackedBatches(TokenShards(shard_dir), batch_size=4, seq_len=32))
    x, y = batch["input_ids"], batch["labels"]
    assert x.shape == y.shape == (4, 32) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(y[:, -1], x[:, -1] + 1)
    assert torch.all(x[:, 1:] - x[:, :-1] == 1)  # never spans the two shards


def test_resume_reproduces_the_following_batches(shard_dir):
    shards = TokenShards(shard_dir)
    uninterrupted = PackedBatches(shards, batch_size=8, seq_len=64, seed=3)
    expected = take(uninterrupted, 40)  # crosses epoch boundaries (19 batches per epoch)

    first = PackedBatches(shards, batch_size=8, seq_len=64, seed=3)
    take(first, 23)
    state = first.state_dict()
    resumed = PackedBatches(shards, batch_size=8, seq_len=64, seed=3)
    resumed.load_state_dict(state)
    for want, got in zip(expected[23:], take(resumed, 17)):
        assert torch.equal(want["input_ids"], got["input_ids"])
        assert torch.equal(want["labels"], got["labels"])


def test_resume_with_a_different_layout_is_refused(shard_dir):
    state = PackedBatches(TokenShards(shard_dir), batch_size=8, seq_len=64).state_dict()
    with pytest.raises(ValueError, match="batch_size was 8, now 4"):
        PackedBatches(TokenShards(shard_dir), batch_size=4, seq_len=64).load_state_dict(state)


def test_each_epoch_is_a_new_permutation_of_all_windows(shard_dir):
    batches = PackedBatches(TokenShards(shard_dir), batch_size=5, seq_len=64, seed=0)  # 155 windows
    per_epoch = batches.batches_per_epoch
    epochs = [torch.cat([b["input_ids"][:, 0] for b in take(batches, per_epoch)]) for _ in range(2)]
    assert not torch.equal(epochs[0], epochs[1])
    assert sorted(epochs[0].tolist()) == sorted(epochs[1].tolist())
    assert len(set(epochs[0].tolist())) == per_epoch * 5 == 155  # each window once per epoch


def test_ranks_take_disjoint_slices_of_the_same_size(shard_dir):
    shards = TokenShards(shard_dir)
    starts = []
    for rank in range(3):
        batches = PackedBatches(shards, batch_size=4, seq_len=64, seed=7, rank=rank, world_size=3)
        starts.append({w for b in take(batches, batches.batches_per_epoch)
                       for w in b["input_ids"][:, 0].tolist()})
    assert len(starts[0]) == len(starts[1]) == len(starts[2]) > 0
    assert not (starts[0] & starts[1] or starts[0] & starts[2] or starts[1] & starts[2])


def test_too_little_data_is_a_clear_error(shard_dir):
    with pytest.raises(ValueError, match="fewer than batch_size"):
        PackedBatches(TokenShards(shard_dir, "val"), batch_size=64, seq_len=512)


def test_eval_batches_are_sequential_and_repeatable(shard_dir):
    shards = TokenShards(shard_dir, "val")
    first = list(iter_eval_batches(shards, batch_size=4, seq_len=100))
    again = list(iter_eval_batches(shards, batch_size=4, seq_len=100))
    assert [b["input_ids"][:, 0].tolist() for b in first] == [[0, 100, 200, 300], [400, 500, 600, 700],
                                                              [800]]
    assert all(torch.equal(a["labels"], b["labels"]) for a, b in zip(first, again))
    assert len(list(iter_eval_batches(shards, 4, 100, max_batches=2))) == 2
