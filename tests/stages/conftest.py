import json
from pathlib import Path

import pytest
import torch

from lmforge.model.transformer import Transformer
from lmforge.stages.common import export_model
from lmforge.stages.tokenizer import TokenizerTrainConfig, train_tokenizer
from lmforge.tokenizer import Tokenizer
from tests.conftest import CORPUS, tiny_config


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
