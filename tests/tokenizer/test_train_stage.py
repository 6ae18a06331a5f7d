import json

import pytest

from lmforge.errors import InputError
from lmforge.stages.tokenizer import TokenizerTrainConfig, train_tokenizer
from lmforge.tokenizer import SPECIAL_TOKENS


def write_corpus(path, bad_line=True, after_bad_line=None):
    lines = [json.dumps({"id": str(i), "text": f"document {i}: the whale, 鯨魚 {i * 7}"})
             for i in range(200)]
    if after_bad_line:
        lines.insert(3, json.dumps({"id": "after", "text": after_bad_line}))
    if bad_line:
        lines.insert(3, '{"id": "broken", "text": ')
    path.write_text("\n".join(lines) + "\n")


def test_malformed_line_is_an_error_naming_file_and_line(tmp_path):
    write_corpus(tmp_path / "docs.jsonl")
    cfg = TokenizerTrainConfig(input=[str(tmp_path / "docs.jsonl")], output=str(tmp_path / "tok"),
                               vocab_size=300)
    with pytest.raises(InputError, match=r"docs\.jsonl:4: invalid JSON"):
        train_tokenizer(cfg)


def train(tmp_path, corpus, out, **overrides):
    cfg = dict(input=[str(tmp_path / corpus)], output=str(tmp_path / out), vocab_size=300)
    return train_tokenizer(TokenizerTrainConfig(**{**cfg, **overrides}))


def test_skip_trains_on_the_rest(tmp_path, capsys):
    # The document right after the broken line is the only one with "ahab", three times.
    write_corpus(tmp_path / "docs.jsonl", after_bad_line="ahab ahab ahab")
    tok = train(tmp_path, "docs.jsonl", "tok", on_error="skip")
    out = capsys.readouterr().out
    assert "skipped 1 (1 invalid JSON)" in out and "docs.jsonl:4" in out
    assert (tmp_path / "tok" / "special_tokens_map.json").exists()
    # The good documents run out of pairs seen twice after 24 merges: 9 + 256 + 24 ids, the
    # last 3 (aha, ahab, " ahab") learnt from the document after the broken line (without
    # it: 286, see below).
    assert tok.vocab_size == 289 and "only 289 of 300 ids" in out
    assert [tok.id_to_token(i) for i in (286, 287, 288)] == ["aha", "ahab", "Ġahab"]
    assert tok.encode("ahab ahab") == [287, 288]
    # Skipping the broken line trains exactly what the corpus without it trains.
    write_corpus(tmp_path / "clean.jsonl", bad_line=False, after_bad_line="ahab ahab ahab")
    train(tmp_path, "clean.jsonl", "clean")
    tokenizer_json = [(tmp_path / d / "tokenizer.json").read_bytes() for d in ("tok", "clean")]
    assert tokenizer_json[0] == tokenizer_json[1]


def test_training_is_deterministic_and_pinned(tmp_path):
    write_corpus(tmp_path / "docs.jsonl", bad_line=False)
    tok = train(tmp_path, "docs.jsonl", "a")
    train(tmp_path, "docs.jsonl", "b")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert tok.special_tokens == {name: i for i, name in enumerate(SPECIAL_TOKENS)}
    # Observed on this corpus: the words and the Chinese pair become single tokens, digits
    # stay one per token, and the last (21st) merge completes "document".
    text = "document 42: the whale, 鯨魚 294"
    ids = tok.encode(text)
    assert [tok.decode([i]) for i in ids] == ["document", " ", "4", "2", ":", " the", " whale", ",",
                                              " 鯨魚", " ", "2", "9", "4"]
    # All 21 merges in order (byte-level symbols: Ġ is a space, é¯¨éŃļ the UTF-8 of 鯨魚).
    assert [tok.id_to_token(i) for i in range(265, 286)] == [
        "al", "cu", "do", "en", "he", "hal", "men", "the", "whal", "¨é", "¯¨é", "é¯¨é", "Ġthe",
        "Ġwhal", "Ġé¯¨é", "Ńļ", "cumen", "documen", "Ġwhale", "Ġé¯¨éŃļ", "document"]
    assert tok.decode(ids) == text


def test_vocab_size_is_exact_and_too_small_is_refused(tmp_path):
    write_corpus(tmp_path / "docs.jsonl", bad_line=False)
    with pytest.raises(ValueError, match="vocab_size must exceed 265"):
        train(tmp_path, "docs.jsonl", "t", vocab_size=265)
    # 266 = the 9 specials + 256 bytes + exactly one merge.
    tok = train(tmp_path, "docs.jsonl", "u", vocab_size=266)
    assert tok.vocab_size == 266 and tok.id_to_token(265) == "al"  # the first merge below
