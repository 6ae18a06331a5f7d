"""Streaming detokenisation: turn generated ids into text increments as they arrive.

    stream = tokenizer.stream_decoder()
    for token_id in generated:
        print(stream.feed([token_id]), end="", flush=True)
    print(stream.flush())

One token may hold part of a UTF-8 character (a Chinese character or an emoji is often
split over two or three byte-level tokens), and for SentencePiece-style tokenizers a
token's text depends on its neighbours. So, as in TGI and vLLM, we decode a short window
twice (with and without the new ids) and emit the difference, holding it back while it
ends in U+FFFD, the mark of an incomplete character. Works for any tokenizer's `decode`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT_CHAR = "\ufffd"


class StreamDecoder:
    def __init__(self, decode: Callable[[list[int]], str]):
        self._decode = decode
        self._ids: list[int] = []
        self._prefix_start = 0  # window start: context so the next piece decodes right
        self._read_end = 0  # ids before this are already emitted

    def feed(self, ids: Sequence[int]) -> str:
        """Add ids; return the newly printable text ("" while a character is incomplete)."""
        self._ids.extend(int(i) for i in ids)
        prefix_text = self._decode(self._ids[self._prefix_start:self._read_end])
        full_text = self._decode(self._ids[self._prefix_start:])
        if len(full_text) <= len(prefix_text) or full_text.endswith(REPLACEMENT_CHAR):
            return ""
        self._prefix_start, self._read_end = self._read_end, len(self._ids)
        return full_text[len(prefix_text):]

    def flush(self) -> str:
        """Emit whatever is held back (an incomplete character decodes as U+FFFD)."""
        prefix_text = self._decode(self._ids[self._prefix_start:self._read_end])
        full_text = self._decode(self._ids[self._prefix_start:])
        self._prefix_start = self._read_end = len(self._ids)
        return full_text[len(prefix_text):]
