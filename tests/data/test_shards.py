import json
from pathlib import Path

import numpy as np
import pytest

from lmforge.data.documents import read_documents
from lmforge.data.shards import choose_dtype, read_index
from lmforge.errors import InputError
from lmforge.stages.tokenize import TokenizeConfig, is_validation, tokenize

CORPUS = Path(__file__).resolve().parents[2] / "data" / "corpus"


@pytest.mark.parametrize("vocab, dtype", [(8192, np.uint16), (65536, np.uint16),
                                          (65537, np.uint32), (151_936, np.uint32)])
def test_dtype_is_the_smallest_that_holds_every_id(vocab, dtype):
    assert choose_dtype(vocab) == dtype


def test_forcing_uint16_on_a_large_vocab_is_refused():
    assert choose_dtype(1000, "uint32") == np.uint32
    with pytest.raises(ValueError, match="cannot hold"):
        choose_dtype(100_000, "uint16")


def make_docs(path, count=60):
    texts = [f"Doc {i}. Call me Ishmael {'ha ' * (i % 7)}— 鯨魚 {i} 🐋" for i in range(count)]
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    return texts


def test_shards_decode_back_to_the_documents(tmp_path, trained_dir, tok):
    texts = make_docs(tmp_path / "docs.jsonl")
    cfg = TokenizeConfig(input=[str(tmp_path / "docs.jsonl")], tokenizer=str(trained_dir),
                         output=str(tmp_path / "shards"), val_fraction=0.2, shard_size_tokens=300)
    index = tokenize(cfg)

    assert index == read_index(tmp_path / "shards")
    assert index["dtype"] == "uint16" and index["bos_id"] == tok.bos_id
    train, val = index["splits"]["train"], index["splits"]["val"]
    assert len(train["shards"]) > 1 and train["documents"] + val["documents"] == len(texts)
    decoded = {}
    for split in ("train", "val"):
        for shard in index["splits"][split]["shards"]:
            ids = np.fromfile(tmp_path / "shards" / shard["file"], dtype=np.uint16)
            assert len(ids) == shard["tokens"] and ids[0] == tok.bos_id  # shards start at a doc
            docs = np.split(ids, np.flatnonzero(ids == tok.bos_id))[1:]
            assert len(docs) == shard["documents"]
            for doc in docs:
                decoded[tok.decode(doc[1:].tolist())] = split
    assert sorted(decoded) == sorted(texts)
    assert {t for t, s in decoded.items() if s == "val"} == {
        t for i, t in enumerate(texts) if is_validation(f"d{i}", 0.2)}
    assert (tmp_path / "shards" / "tokenizer" / "tokenizer.json").exists()


def test_validation_split_is_deterministic_and_near_the_fraction():
    ids = [f"doc-{i}" for i in range(20_000)]
    chosen = [is_validation(i, 0.05) for i in ids]
    assert chosen == [is_validation(i, 0.05) for i in ids]
    assert 0.04 < sum(chosen) / len(ids) < 0.06
    assert chosen != [is_validation(i, 0.05, seed=1) for i in ids]


def test_rerun_replaces_old_shards(tmp_path, trained_dir):
    make_docs(tmp_path / "docs.jsonl", count=60)
    cfg = TokenizeConfig(input=[str(tmp_path / "docs.jsonl")], tokenizer=str(trained_dir),
                         output=str(tmp_path / "out"), shard_size_tokens=100)
    first = tokenize(cfg)
    make_docs(tmp_path / "docs.jsonl", count=5)
    second = tokenize(cfg)
    files = sorted(p.name for p in (tmp_path / "out").glob("*.bin"))
    assert len(first["splits"]["train"]["shards"]) > len(second["splits"]["train"]["shards"])
    assert files == sorted(s["file"] for split in second["splits"].values() for s in split["shards"])


def test_reading_a_folder_without_index_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no index.json"):
        read_index(tmp_path)


def test_bundled_corpus_tokenizes(tmp_path, trained_dir):
    cfg = TokenizeConfig(input=[str(CORPUS)], tokenizer=str(trained_dir),
                         output=str(tmp_path / "s"), val_fraction=0.05)
    index = tokenize(cfg)
    total_docs = sum(1 for _ in read_documents(cfg.input))
    assert index["splits"]["train"]["documents"] + index["splits"]["val"]["documents"] == total_docs
    assert index["splits"]["val"]["tokens"] > 10_000
