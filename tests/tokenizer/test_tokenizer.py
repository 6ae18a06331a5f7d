import json
from itertools import islice
from pathlib import Path

import pytest
from tokenizers import Tokenizer as Backend
from tokenizers import pre_tokenizers

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


def test_special_token_strings_in_text_stay_ordinary_tokens(tok, trained_dir):
    raw = Backend.from_file(str(trained_dir / "tokenizer.json"))  # HF default: matches specials
    for special in SPECIAL_TOKENS:
        text = f"user typed {special} here"
        # Without the guard the string would become its special id (so the check has teeth).
        assert tok.special_tokens[special] in raw.encode(text, add_special_tokens=False).ids
        ids = tok.encode(text)
        assert not set(ids) & tok.special_ids
        assert len(tok.encode(special)) > 1
        assert tok.encode(special, allow_special=True) == [tok.special_tokens[special]]
        assert tok.decode(ids) == text
        assert tok.encode_batch([text]) == [ids]


def test_allow_special_inserts_special_ids(tok):
    ids = tok.encode("<|im_start|>user<|im_sep|>hi<|im_end|>", allow_special=True)
    assert ids == [2] + tok.encode("user") + [3] + tok.encode("hi") + [4]
    assert tok.decode(ids, skip_special=True) == "userhi"
    assert tok.decode(ids) == "<|im_start|>user<|im_sep|>hi<|im_end|>"


def test_ids_equal_hf_tokenizers_ids(tok, trained_dir):
    """Our encode (tiktoken fast path when installed) gives the ids of the plain HF
    `tokenizers` library loading the same tokenizer.json."""
    raw = Backend.from_file(str(trained_dir / "tokenizer.json"))
    for text in ROUND_TRIP_TEXTS:
        if not any(special in text for special in SPECIAL_TOKENS):
            assert tok.encode(text) == raw.encode(text, add_special_tokens=False).ids, text


# A tokenizer trained on the bundled corpus (2M characters, vocabulary 2048) is deterministic,
# so these are exact, observed values: the English line takes 25 tokens (2.5 characters
# per token), the Classical Chinese line 15 (0.7), the Tang line 52: traditional
# characters the simplified-script poems rarely use, mostly left as UTF-8 bytes.
PINNED_COUNTS = [("Call me Ishmael. Some years ago—never mind how long precisely—", 25),
                 ("学而时习之，不亦说乎？", 15),
                 ("床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。", 52)]


@pytest.mark.parametrize("text,count", PINNED_COUNTS)
def test_pinned_token_counts(tok, text, count):
    assert len(tok.encode(text)) == count


def test_pinned_pieces(tok):
    pieces = [tok.decode([i]) for i in tok.encode("Call me Ishmael. Some years ago")]
    assert pieces == ["C", "all", " me", " Is", "h", "m", "a", "el", ".", " S", "ome", " years", " ago"]


def test_encode_batch_matches_encode(tok):
    assert tok.encode_batch(ROUND_TRIP_TEXTS) == [tok.encode(t) for t in ROUND_TRIP_TEXTS]


def test_digits_are_split_one_per_token(tok):
    pieces = [tok.decode([i]) for i in tok.encode("year 1851")]
    assert pieces[-4:] == ["1", "8", "5", "1"]
    # No token in the whole vocabulary holds two digits.
    assert all(sum(c.isdigit() for c in tok.decode([i])) <= 1 for i in range(tok.vocab_size))


def test_special_ids_and_named_tokens(tok):
    assert tok.vocab_size == 2048
    assert len(tok.backend.get_vocab()) == 2048 and max(tok.backend.get_vocab().values()) == 2047
    # Specials take ids 0..8 in SPECIAL_TOKENS' order, then the 256 byte symbols, then merges.
    assert len(SPECIAL_TOKENS) == 9
    assert tok.special_tokens == {name: i for i, name in enumerate(SPECIAL_TOKENS)}
    assert tok.special_ids == set(range(9))
    assert {tok.id_to_token(i) for i in range(9, 265)} == set(pre_tokenizers.ByteLevel.alphabet())
    assert tok.id_to_token(265) == "Ġt"  # the first merge: " t" (Ġ is the byte-level space)
    assert tok.bos_id == tok.eos_id == 0 and tok.token_to_id("<|endoftext|>") == 0
    assert tok.pad_id == 1 and tok.token_to_id("<|pad|>") == 1
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
    assert len(ids) == 4 and held == ""  # 4 byte tokens: nothing printable until the last
    assert stream.flush() == "\ufffd"  # the incomplete tail comes out instead of vanishing
    assert stream.flush() == ""  # and only once



def test_tiktoken_fast_path_gives_the_same_ids(trained_dir, tok):
    pytest.importorskip("tiktoken")
    plain = Tokenizer.from_dir(trained_dir, use_tiktoken=False)
    assert tok._tiktoken is not None and plain._tiktoken is None
    corpus = Path(__file__).resolve().parents[2] / "data" / "corpus"
    texts = ROUND_TRIP_TEXTS + [d["text"] for d in islice(read_documents(corpus), 0, None, 20)]
    assert tok.encode_batch(texts) == plain.encode_batch(texts)
    assert [tok.encode(t) for t in texts] == [plain.encode(t) for t in texts]
