import json
from pathlib import Path

import pytest
import torch

from lmforge.model.transformer import ModelConfig, Transformer
from lmforge.stages.common import export_model
from lmforge.stages.tokenizer import TokenizerTrainConfig, train_tokenizer
from lmforge.tokenizer import Tokenizer

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"


def tiny_config(**overrides) -> ModelConfig:
    base = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                max_position_embeddings=128)
    base.update(overrides)
    return ModelConfig(**base)


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory) -> Path:
    """A small tokenizer trained on the bundled corpus (English + Chinese), ~1 s."""
    out = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(TokenizerTrainConfig(input=[str(CORPUS)], output=str(out), vocab_size=2048,
                                         max_chars=2_000_000))
    return out


@pytest.fixture(scope="session")
def tok(trained_dir):
    from lmforge.tokenizer import Tokenizer
    return Tokenizer.from_dir(trained_dir)


@pytest.fixture(scope="session")
def chat_model_dir(tmp_path_factory) -> Path:
    """A tiny random model + small tokenizer saved as an HF directory (~1 s)."""
    out = tmp_path_factory.mktemp("chat_model")
    train_tokenizer(TokenizerTrainConfig(input=[str(CORPUS)], output=str(out), vocab_size=512,
                                         max_chars=300_000))
    tok = Tokenizer.from_dir(out)
    torch.manual_seed(0)
    model = Transformer(tiny_config(vocab_size=512, hidden_size=64, head_dim=16,
                                    max_position_embeddings=256))
    export_model(model, tok, out)
    return out


@pytest.fixture(scope="session")
def chat_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("chat") / "arith.jsonl"
    with open(path, "w") as f:
        for i in range(48):
            messages = [{"role": "user", "content": f"What is {i} + 2?"},
                        {"role": "assistant", "content": f"{i} + 2 = {i + 2}."}]
            if i % 4 == 0:
                messages.insert(0, {"role": "system", "content": "Be brief."})
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return Transformer(tiny_config())


class ToyBatches:
    """A resumable batch source of random token windows (stands in for a data loader)."""

    def __init__(self, vocab=128, batch_size=4, seq_len=16, seed=0):
        self.vocab, self.batch_size, self.seq_len, self.seed, self.position = (
            vocab, batch_size, seq_len, seed, 0)

    def __iter__(self):
        return self

    def __next__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.position)
        self.position += 1
        # A learnable pattern: each sequence counts upward from a random start.
        start = torch.randint(0, self.vocab, (self.batch_size, 1), generator=g)
        seq = (start + torch.arange(self.seq_len + 1)) % self.vocab
        return {"input_ids": seq[:, :-1], "labels": seq[:, 1:]}

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]
