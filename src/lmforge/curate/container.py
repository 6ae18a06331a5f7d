"""Text trafilatura dropped from inside the main content: the whole container, when it is safe.

    text = widen_to_container(html, extracted, max_growth=1.5)  # `extracted` or the container's text

trafilatura drops parts of the main text it takes for boilerplate: code blocks, definition lists
(API signatures), admonitions, and whole sections whose id contains a word such as "menu" or
"cookie" ("Highlighting Active Menu Items"). Here the page is walked from <body> down to the
deepest element that still holds (almost) every word trafilatura kept; its text, without
navigation-like children, replaces the extraction when it adds at most `max_growth` times the
words. On Sphinx pages (bench/extract_eval.py, tuning part) this raised word recall from 0.978 to
0.995 at a precision cost of 0.001; a growth limit of 1.2 recovered half as much. Not yet
measured on open-web pages, where comments or related links inside the container would be kept
as long as they stay within the growth limit.
"""

from __future__ import annotations

import re
from collections import Counter

import lxml.html

_WORD = re.compile(r"\w+")
_SPACES = re.compile(r"\s+")
_SKIP_TAGS = {"script", "style", "noscript", "nav", "aside", "footer", "header", "form", "button", "select",
              "template", "svg", "iframe", "textarea"}
_SKIP_ROLES = {"navigation", "search", "banner", "contentinfo", "complementary"}
# whole class names or ids only: a substring match ("menu" in a section's id) is what loses text
_SKIP_NAMES = {"sidebar", "sphinxsidebar", "related", "breadcrumb", "breadcrumbs", "footer", "header", "menu",
               "navbar", "nav", "navigation", "share", "social", "comments", "cookie-banner", "headerlink",
               "skip-link", "toc", "masthead", "site-header", "site-footer", "wy-nav-side", "rst-versions"}
_BLOCK_TAGS = {"p", "div", "pre", "li", "dt", "dd", "dl", "ul", "ol", "table", "tr", "td", "th", "h1", "h2",
               "h3", "h4", "h5", "h6", "blockquote", "section", "article", "main", "br", "hr", "figure",
               "figcaption", "caption"}
MIN_COVERAGE = 0.97  # of trafilatura's words the container must hold
_DESCEND_SLACK = 0.005  # a child is the container when it loses at most this share of them


def widen_to_container(html: str, extracted: str, max_growth: float = 1.5) -> str:
    want = _words(extracted)
    total = sum(want.values())
    if not total or max_growth <= 0:
        return extracted
    node = lxml.html.fromstring(html).find("body")
    if node is None:
        return extracted
    # descend on the raw text (lxml's text_content, fast), render the chosen container once
    coverage = _coverage(node.text_content(), want, total)
    descended = True
    while descended:
        descended = False
        for child in node:
            if _skipped(child):
                continue
            raw = child.text_content()
            if len(_WORD.findall(raw)) < (coverage - _DESCEND_SLACK) * total:
                continue  # too few words to hold them: no need to count
            child_coverage = _coverage(raw, want, total)
            if child_coverage >= coverage - _DESCEND_SLACK:
                node, coverage, descended = child, child_coverage, True
                break
    text = _text(node)
    if _coverage(text, want, total) >= MIN_COVERAGE and len(_WORD.findall(text)) <= max_growth * total:
        return text
    return extracted


def _words(text: str) -> Counter:
    return Counter(_WORD.findall(text.casefold()))


def _coverage(text: str, want: Counter, total: int) -> float:
    return sum((_words(text) & want).values()) / total


def _skipped(el) -> bool:
    if not isinstance(el.tag, str) or el.tag in _SKIP_TAGS or el.get("role") in _SKIP_ROLES:
        return True
    names = (el.get("class") or "").lower().split() + [(el.get("id") or "").lower()]
    return not _SKIP_NAMES.isdisjoint(names)


def _text(el) -> str:
    """The element's text without skipped children: a line per block, <pre> as it is."""
    out: list[str] = []
    _render(el, out, in_pre=False)
    text = re.sub(r"[ \t]+\n", "\n", "".join(out))
    return re.sub(r"\n\s*\n", "\n", text).strip("\n")


def _render(el, out: list[str], in_pre: bool) -> None:
    if _skipped(el):
        return
    in_pre = in_pre or el.tag == "pre"
    space = (lambda s: s or "") if in_pre else (lambda s: _SPACES.sub(" ", s or ""))  # noqa: E731
    block = "\n" if el.tag in _BLOCK_TAGS else ""
    out += [block, space(el.text)]
    for child in el:
        _render(child, out, in_pre)
        out.append(space(child.tail))
    out.append(block)
