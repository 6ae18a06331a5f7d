import json

import pytest

from lmforge.errors import InputError
from lmforge.stages.tokenizer import TokenizerTrainConfig, train_tokenizer


def write_corpus(path, bad_line=True):
    lines = [json.dumps({"id": str(i), "text": f"document {i}: the whale, 鯨魚 {i * 7}"})
             for i in range(200)]
    if bad_line:
        lines.insert(3, '{"id": "broken", "text": ')
    path.write_text("\n".join(lines) + "\n")


def test_malformed_line_is_an_error_naming_file_and_line(tmp_path):
    write_corpus(tmp_path / "docs.jsonl")
    cfg = TokenizerTrainConfig(input=[str(tmp_path / "docs.jsonl")], output=str(tmp_path / "tok"),
                               vocab_size=300)
    with pytest.raises(InputError, match=r"docs\.jsonl:4: invalid JSON"):
        train_tokenizer(cfg)


def test_skip_trains_on_the_rest(tmp_path, capsys):
    write_corpus(tmp_path / "docs.jsonl")
    cfg = TokenizerTrainConfig(input=[str(tmp_path / "docs.jsonl")], output=str(tmp_path / "tok"),
                               vocab_size=300, on_error="skip")
    tok = train_tokenizer(cfg)
    assert tok.vocab_size <= 300  # a tiny corpus runs out of frequent pairs first
    out = capsys.readouterr().out
    assert "skipped 1 (1 invalid JSON)" in out and "docs.jsonl:4" in out
    assert (tmp_path / "tok" / "special_tokens_map.json").exists()


def test_vocab_too_small_is_refused(tmp_path):
    write_corpus(tmp_path / "docs.jsonl", bad_line=False)
    with pytest.raises(ValueError, match="vocab_size must exceed 265"):
        train_tokenizer(TokenizerTrainConfig(input=[str(tmp_path)], output=str(tmp_path / "t"),
                                             vocab_size=200))
