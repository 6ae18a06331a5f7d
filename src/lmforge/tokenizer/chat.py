"""Render conversations with a tokenizer's own Jinja `chat_template`, and find what to train.

    ids, mask = render_with_mask(tok, messages)            # mask[i]: train on token i
    ids, mask = render_with_mask(tok, messages, train_on="last")
    prompt = render_prompt(tok, messages)                  # ends with the assistant header

No chat format is hard-coded: ours (`<|im_start|>user<|im_sep|>…<|im_end|>`), ChatML
(SmolLM2, Qwen) and others are rendered by their template. The assistant spans are found
by rendering prefixes: for assistant message i, the trained text is what rendering
messages[:i+1] adds after rendering messages[:i] with the generation prompt; i.e. exactly
what the model must produce when `render_prompt` is its input, end-of-turn token included
(so it learns to stop), trailing whitespace after that token excluded (it is never
generated). Message contents are encoded as plain text, so a user typing "<|im_end|>" gets
byte tokens, never the special token; only the template's own text may yield specials.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Literal

from jinja2.sandbox import ImmutableSandboxedEnvironment

from lmforge.tokenizer.hf_config import token_content

TrainOn = Literal["all", "last"]


class ChatTemplateError(ValueError):
    """A chat template that cannot be used for training (the message says why)."""


def render_text(tok, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The template's string for `messages` (as transformers' apply_chat_template renders it)."""
    template = tok.chat_template
    if not template:
        raise ChatTemplateError("the tokenizer has no chat_template")
    config = getattr(tok, "config", {}) or {}
    specials = {k: token_content(config.get(k)) or "" for k in
                ("bos_token", "eos_token", "pad_token", "unk_token")}
    return _compile(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                     tools=None, **specials)


def render_prompt(tok, messages: list[dict]) -> list[int]:
    """Token ids of `messages` followed by the assistant header: the input for generation."""
    text = render_text(tok, messages, add_generation_prompt=True)
    spans = _content_spans(tok, messages, text)
    return [i for piece, _ in _pieces(text, spans, []) for i in _encode(tok, piece, text, spans)]


def render_with_mask(tok, messages: list[dict], train_on: TrainOn = "all"
                     ) -> tuple[list[int], list[bool]]:
    """Token ids of the whole conversation and, per token, whether it is trained on
    (assistant turns: all of them, or only the last)."""
    text = render_text(tok, messages)
    spans = _content_spans(tok, messages, text)
    trained = _assistant_spans(tok, messages, text)
    if train_on == "last":
        trained = trained[-1:]
    ids, mask = [], []
    for (start, end), is_trained in _pieces(text, spans, trained):
        piece_ids = _encode(tok, (start, end), text, spans)
        ids += piece_ids
        mask += [is_trained] * len(piece_ids)
    return ids, mask


# --- internals ------------------------------------------------------------------------
@lru_cache(maxsize=16)
def _compile(template: str):
    # The environment transformers uses: sandboxed, trim_blocks, lstrip_blocks, loopcontrols.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, indent=indent,
                                                                    ensure_ascii=False)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def _raise(message: str):
    raise ChatTemplateError(f"the chat template raised: {message}")


def _segment_ends(tok, messages: list[dict]) -> list[tuple[int, int]]:
    """For each message i: (len of render(messages[:i]), len of render(messages[:i+1])),
    after checking each rendering is a prefix of the next."""
    ends, previous = [], ""
    for i in range(len(messages)):
        current = render_text(tok, messages[:i + 1])
        if not current.startswith(previous):
            raise ChatTemplateError(
                f"rendering messages[:{i}] is not a prefix of rendering messages[:{i + 1}]; "
                "the template rewrites earlier turns, so prompts and training text disagree")
        ends.append((len(previous), len(current)))
        previous = current
    return ends


def _content_spans(tok, messages: list[dict], text: str) -> list[tuple[int, int]]:
    """Character span of each message's content in `text` (searched in its own segment)."""
    spans = []
    for message, (start, end) in zip(messages, _segment_ends(tok, messages)):
        content = message.get("content") or ""
        segment = text[start:end]
        at = segment.rfind(content)
        if at < 0 and content.strip():
            content = content.strip()  # templates that `| trim` the content
            at = segment.rfind(content)
        if at < 0:
            raise ChatTemplateError(f"cannot find message {len(spans)}'s content in its rendering")
        spans.append((start + at, start + at + len(content)))
    return spans


def _assistant_spans(tok, messages: list[dict], text: str) -> list[tuple[int, int]]:
    """Character spans the model must generate: header-less assistant turns + end token."""
    spans = []
    for i, (_, end) in enumerate(_segment_ends(tok, messages)):
        if messages[i]["role"] != "assistant":
            continue
        prompt = render_text(tok, messages[:i], add_generation_prompt=True)
        if not text.startswith(prompt):
            raise ChatTemplateError(
                f"the generation prompt for message {i} is not a prefix of the conversation; "
                "a model prompted with it would not see its training format")
        stop = len(text[:end].rstrip())
        spans.append((len(prompt), max(stop, len(prompt))))
    return spans


def _pieces(text: str, content: list[tuple[int, int]], trained: list[tuple[int, int]]):
    """Cut `text` at every content and trained-span boundary -> [((start, end), trained)]."""
    cuts = sorted({0, len(text)} | {c for span in content + trained for c in span})
    out = []
    for start, end in zip(cuts, cuts[1:]):
        if start < end:
            out.append(((start, end), any(a <= start and end <= b for a, b in trained)))
    return out


def _encode(tok, piece: tuple[int, int], text: str, content: list[tuple[int, int]]) -> list[int]:
    start, end = piece
    is_content = any(a <= start and end <= b for a, b in content)
    return tok.encode(text[start:end], allow_special=not is_content)
