"""The unit that flows through curation: one document, its text and where it came from.

    doc = Document(id="sample.warc.gz/3", text="...", url="http://...", html=b"<html>...")

Readers fill `html` (raw bytes, for the extractor) or `text`; the extractor replaces `html`
by `text`. `metadata` carries title, language, timestamps and scores into the output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Document:
    id: str
    text: str = ""
    url: str | None = None
    html: bytes | None = None  # raw page bytes until extraction; None afterwards
    encoding: str | None = None  # charset declared by HTTP headers or <meta>, if any
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """The output row: `text`, `id`, `url` first (what `lmforge tokenize` reads), then metadata."""
        return {"text": self.text, "id": self.id, "url": self.url, **self.metadata}
