"""`Tokenizer`: encode/decode with any Hugging Face `tokenizer.json` directory, ours or a model's.

    tok = Tokenizer.from_dir("runs/tok")            # or a SmolLM2 / Qwen2.5 model directory
    ids = [tok.bos_id] + tok.encode("Hello")        # encode() never yields special tokens
    tok.decode(ids, skip_special=True)
    tok.encode_batch(texts)                         # multi-threaded (Rust, all cores)

Special tokens come only from an explicit API: code adds their ids, or calls
`encode(text, allow_special=True)` for trusted text such as a rendered chat template.
Plain `encode` turns a user's literal "<|im_end|>" into ordinary byte tokens, so text in
a document or a chat message can never forge a turn boundary. Which tokens are special,
and which are BOS/EOS/PAD, is read from the directory, never assumed to be ours.

When tiktoken is installed and the tokenizer is a byte-level BPE of our construction,
`encode`/`encode_batch` run through an equivalent tiktoken Encoding (same ids; see
tiktoken_bridge.py), 3.4-4.5x faster on one thread; `use_tiktoken=False` keeps `tokenizers` only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer as Backend

from lmforge.errors import InputError
from lmforge.tokenizer.hf_config import (our_tokenizer_config, read_tokenizer_config, token_content,
                                         write_tokenizer_config)
from lmforge.tokenizer.stream import StreamDecoder


class Tokenizer:
    def __init__(self, backend: Backend, config: dict, use_tiktoken: bool = True):
        self._backend = backend
        # Added tokens are otherwise matched in raw text before BPE; this makes plain
        # encode() treat them as text. Decoding is unaffected.
        self._backend.encode_special_tokens = True
        self.config = config  # tokenizer_config.json contents, written back by save()
        self._special_tokens = {token.content: token_id for token_id, token in
                                backend.get_added_tokens_decoder().items() if token.special}
        self._special_split = _alternation(self._special_tokens)
        self._tiktoken = _tiktoken_twin(backend, self._special_tokens) if use_tiktoken else None

    @classmethod
    def from_dir(cls, path: str | Path, use_tiktoken: bool = True) -> Tokenizer:
        directory = Path(path)
        tokenizer_json = directory / "tokenizer.json"
        if not tokenizer_json.exists():
            raise InputError("no tokenizer.json (only Hugging Face fast-tokenizer directories "
                             "are supported)", directory)
        try:
            backend = Backend.from_file(str(tokenizer_json))
        except Exception as e:  # noqa: BLE001 (the tokenizers library raises a bare Exception)
            raise InputError(f"unreadable tokenizer.json: {e}", tokenizer_json) from None
        return cls(backend, read_tokenizer_config(directory), use_tiktoken)

    @classmethod
    def from_trained(cls, backend: Backend) -> Tokenizer:
        """Wrap a backend from `train_bpe`, adding our BOS/EOS/PAD and chat template."""
        specials = [t.content for _, t in sorted(backend.get_added_tokens_decoder().items())]
        return cls(backend, our_tokenizer_config(specials))

    def save(self, path: str | Path) -> None:
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        self._backend.save(str(directory / "tokenizer.json"))
        write_tokenizer_config(directory, self.config)

    # --- encoding -----------------------------------------------------------------------
    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Token ids of `text`; special-token strings in it become specials only if allowed."""
        if not allow_special or self._special_split is None:
            return self._encode_ordinary(text)
        ids: list[int] = []
        for piece in self._special_split.split(text):
            if piece in self._special_tokens:
                ids.append(self._special_tokens[piece])
            elif piece:
                ids += self._encode_ordinary(piece)
        return ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Like `encode` on each text, in parallel threads (no special tokens)."""
        if self._tiktoken is not None:
            return self._tiktoken.encode_ordinary_batch(list(texts), num_threads=os.cpu_count() or 1)
        encodings = self._backend.encode_batch_fast(list(texts), add_special_tokens=False)
        return [e.ids for e in encodings]

    def _encode_ordinary(self, text: str) -> list[int]:
        if self._tiktoken is not None:
            return self._tiktoken.encode_ordinary(text)
        return self._backend.encode(text, add_special_tokens=False).ids

    # --- decoding -----------------------------------------------------------------------
    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    def stream_decoder(self, skip_special: bool = False) -> StreamDecoder:
        return StreamDecoder(lambda ids: self.decode(ids, skip_special=skip_special))

    # --- vocabulary ---------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._backend.id_to_token(token_id)

    @property
    def special_ids(self) -> set[int]:
        return set(self._special_tokens.values())

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special_tokens)

    @property
    def bos_id(self) -> int | None:
        return self._config_token_id("bos_token")

    @property
    def eos_id(self) -> int | None:
        return self._config_token_id("eos_token")

    @property
    def pad_id(self) -> int | None:
        return self._config_token_id("pad_token")

    @property
    def chat_template(self) -> str | None:
        return self.config.get("chat_template")

    @property
    def backend(self) -> Backend:
        """The underlying `tokenizers.Tokenizer` (offsets, truncation, ...); note that it is
        set to treat special-token strings in text as plain text, like `encode`."""
        return self._backend

    def _config_token_id(self, key: str) -> int | None:
        content = token_content(self.config.get(key))
        return None if content is None else self.token_to_id(content)

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}, bos_id={self.bos_id}, "
                f"eos_id={self.eos_id}, pad_id={self.pad_id}, specials={len(self._special_tokens)})")


def _tiktoken_twin(backend: Backend, special_tokens: dict[str, int]):
    """The same BPE in tiktoken (about 2x faster), if installed and the structure matches."""
    try:
        from lmforge.tokenizer.tiktoken_bridge import to_tiktoken
        return to_tiktoken(backend, special_tokens)
    except ImportError:
        return None


def _alternation(tokens: dict[str, int]) -> re.Pattern | None:
    """A regex that splits text at any of `tokens`, longest first so prefixes don't win."""
    if not tokens:
        return None
    ordered = sorted(tokens, key=len, reverse=True)
    return re.compile("(" + "|".join(map(re.escape, ordered)) + ")")
