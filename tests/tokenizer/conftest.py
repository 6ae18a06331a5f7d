from pathlib import Path

import pytest

from lmforge.stages.tokenizer import TokenizerTrainConfig, train_tokenizer

CORPUS = Path(__file__).resolve().parents[2] / "data" / "corpus"


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
