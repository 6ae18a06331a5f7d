import json
from itertools import islice
from pathlib import Path

import pytest

from lmforge.data.documents import read_documents
from lmforge.tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS, Tokenizer

ROUND_TRIP_TEXTS = [
    "Call me Ishmael. Some years ago—never mind how long precisely—",
    "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。",
    "学而时习之，不亦说乎？",
    "emoji 🤖 family 👩‍👩‍👧 flag 🇨🇳 skin 👍🏽",
    "combining: e\u0301 a\u0308 \u0915\u093f n\u0303 and precomposed é",
    "whitespace  runs \t\t tabs\n\n\n newlines \r\n crlf   \u00a0nbsp \u3000 ideographic   ",
    "   leading and trailing   ",
    "special look-alikes: <|im_end|> <|endoftext|><|im_start|>user<|im_sep|> <|pad|>",
    "digits 1234567890 and 3.14159, 1,000,000",
    "mixed 中文 and English 混合 text 😀!",
    "",
    "\x00 control \x1b[31m chars \ufeff bom",
]


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_decode_inverts_encode(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_special_token_strings_in_text_stay_ordinary_tokens(tok):
    for special in SPECIAL_TOKENS:
        ids = tok.encode(f"user typed {special} here")
        assert not set(ids) & tok.special_ids
        assert tok.decode(ids) == f"user typed {special} here"


def test_allow_special_inserts_special_ids(tok):
    ids = tok.encode("<|im_start|>user<|im_sep|>hi<|im_end|>", allow_special=True)
    assert ids[0] == tok.token_to_id("<|im_start|>")
    assert ids[-1] == tok.token_to_id("<|im_end|>")
    assert tok.token_to_id("<|im_sep|>") in ids
    assert tok.decode(ids, skip_special=True) == "userhi"


def test_encode_batch_matches_encode(tok):
    assert tok.encode_batch(ROUND_TRIP_TEXTS) == [tok.encode(t) for t in ROUND_TRIP_TEXTS]


def test_digits_are_split_one_per_token(tok):
    pieces = [tok.decode([i]) for i in tok.encode("year 1851")]
    assert pieces[-4:] == ["1", "8", "5", "1"]


def test_special_ids_and_named_tokens(tok):
    assert tok.vocab_size == 2048
    assert tok.special_ids == {tok.token_to_id(t) for t in SPECIAL_TOKENS}
    assert tok.bos_id == tok.eos_id == tok.token_to_id("<|endoftext|>")
    assert tok.pad_id == tok.token_to_id("<|pad|>")
    assert tok.chat_template == CHAT_TEMPLATE


def test_save_and_reload_gives_same_ids(tok, tmp_path):
    tok.save(tmp_path)
    again = Tokenizer.from_dir(tmp_path)
    text = " ".join(ROUND_TRIP_TEXTS)
    assert again.encode(text) == tok.encode(text)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["bos_token"] == config["eos_token"] == "<|endoftext|>"
    assert config["pad_token"] == "<|pad|>"


def test_stream_decoder_emits_only_complete_characters(tok):
    text = "鯨魚 whale 🐋 e\u0301 東海"
    stream = tok.stream_decoder()
    pieces = [stream.feed([i]) for i in tok.encode(text)] + [stream.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_stream_decoder_flushes_incomplete_bytes(tok):
    ids = tok.encode("🐋")
    stream = tok.stream_decoder()
    held = "".join(stream.feed([i]) for i in ids[:-1])
    assert "🐋" not in held
    assert stream.flush() != ""  # the incomplete tail comes out (as U+FFFD) instead of vanishing



def test_tiktoken_fast_path_gives_the_same_ids(trained_dir, tok):
    pytest.importorskip("tiktoken")
    plain = Tokenizer.from_dir(trained_dir, use_tiktoken=False)
    assert tok._tiktoken is not None and plain._tiktoken is None
    corpus = Path(__file__).resolve().parents[2] / "data" / "corpus"
    texts = ROUND_TRIP_TEXTS + [d["text"] for d in islice(read_documents(corpus), 0, None, 20)]
    assert tok.encode_batch(texts) == plain.encode_batch(texts)
    assert [tok.encode(t) for t in texts] == [plain.encode(t) for t in texts]
