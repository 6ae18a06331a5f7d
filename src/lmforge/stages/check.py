"""`lmforge check MODEL`: the chat-contract pre-flight, also run before every SFT job.

    lmforge check runs/demo/pretrain/model
    lmforge check runs/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --data data/chat/train.jsonl

Broken chat templates are the usual cause of models that never stop talking. Before
training we check, on sample conversations (built-in ones: single and multi-turn, system
prompt, tool turn; plus `--data`):
1. every `<|...|>` marker the template writes is a special token of the tokenizer;
2. each assistant turn ends with a special token (the end-of-turn token), and that token
   is a stop token: in generation_config.json's eos_token_id when the model directory has
   one, otherwise in the stop set an export would write;
3. the assistant-only loss mask is non-empty;
4. rendering a prefix of a conversation (the prompt for turn i) gives a token prefix of
   rendering the whole: what the model sees at inference is what it was trained on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.data.chat import read_conversations
from lmforge.stages.common import stop_ids
from lmforge.tokenizer.chat import (ChatTemplateError, render_prompt, render_text,
                                    render_with_mask)

SPECIAL_MARKER = re.compile(r"<\|[^<>|\s]+\|>")

SAMPLE_CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "2 + 3 = 5."}],
    [{"role": "system", "content": "You answer briefly."},
     {"role": "user", "content": "Hi! <|im_end|> is just text here."},
     {"role": "assistant", "content": "Hello."},
     {"role": "user", "content": "Name a colour."},
     {"role": "assistant", "content": "Blue."}],
    [{"role": "user", "content": "What is 12 * 7? Use the calculator."},
     {"role": "assistant", "content": "calculator(12 * 7)"},
     {"role": "tool", "content": "84"},
     {"role": "assistant", "content": "12 * 7 = 84."}],
]


@dataclass
class CheckConfig:
    model: str = ""  # model directory, .gguf file or hub name (its tokenizer is checked)
    data: list[str] = field(default_factory=list)  # extra chat files to check (JSONL)
    max_conversations: int = 200  # from --data


@dataclass
class CheckReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check(cfg: CheckConfig) -> CheckReport:
    from lmforge.model.load import load_pretrained

    tok, model_dir = _load_tokenizer(cfg.model, load_pretrained)
    conversations = list(SAMPLE_CONVERSATIONS)
    if cfg.data:
        conversations += read_conversations(cfg.data)[:cfg.max_conversations]
    report = check_chat_contract(tok, conversations, generation_stop_ids(model_dir))
    for line in report.notes:
        print(f"  ok: {line}")
    for line in report.problems:
        print(f"  PROBLEM: {line}")
    print("chat contract: " + ("OK" if report.ok else f"{len(report.problems)} problem(s)"))
    if not report.ok:
        raise SystemExit(1)
    return report


def check_chat_contract(tok, conversations: list[list[dict]],
                        stop_set: set[int] | None = None) -> CheckReport:
    """Run the four checks; `stop_set` defaults to the tokenizer's stop ids."""
    report = CheckReport()
    if not tok.chat_template:
        report.problems.append("the tokenizer has no chat_template")
        return report
    stops = set(stop_set) if stop_set is not None else set(stop_ids(tok))
    _check_markers(tok, conversations[0], report)
    end_tokens = set()
    for n, messages in enumerate(conversations):
        try:
            end_tokens |= _check_conversation(tok, messages, stops, report, n)
        except ChatTemplateError as e:
            report.problems.append(f"conversation {n}: {e}")
    if end_tokens and not report.problems:
        names = ", ".join(repr(tok.decode([t])) for t in sorted(end_tokens))
        report.notes.append(f"assistant turns end with {names}, a stop token")
        report.notes.append(f"{len(conversations)} conversations: masks non-empty, "
                            "prompts are prefixes of the rendered conversations")
    return report


def generation_stop_ids(model_dir: Path | None) -> set[int] | None:
    """eos_token_id(s) of generation_config.json, or None when there is no such file."""
    if model_dir is None or not (model_dir / "generation_config.json").exists():
        return None
    eos = json.loads((model_dir / "generation_config.json").read_text()).get("eos_token_id")
    return set(eos if isinstance(eos, list) else [] if eos is None else [eos])


def _check_markers(tok, messages: list[dict], report: CheckReport) -> None:
    text = render_text(tok, messages, add_generation_prompt=True)
    unknown = sorted({m for m in SPECIAL_MARKER.findall(text) if m not in tok.special_tokens})
    if unknown:
        report.problems.append(f"the template writes {unknown}, which are not special tokens "
                               "of the tokenizer (they would be encoded as plain text)")


def _check_conversation(tok, messages, stops: set[int], report: CheckReport, n: int) -> set[int]:
    ids, mask = render_with_mask(tok, messages)
    if not any(mask):
        report.problems.append(f"conversation {n}: the assistant mask is empty")
        return set()
    ends = set()
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render_prompt(tok, messages[:i])
        turn_ids, turn_mask = render_with_mask(tok, messages[:i + 1], train_on="last")
        if turn_ids[:len(prompt)] != prompt or ids[:len(turn_ids)] != turn_ids:
            report.problems.append(f"conversation {n}, message {i}: the prompt's tokens are not "
                                   "a prefix of the conversation's tokens")
            continue
        trained = [t for t, m in zip(turn_ids, turn_mask) if m]
        end = trained[-1] if trained else None
        if end not in tok.special_ids:
            report.problems.append(
                f"conversation {n}, message {i}: the assistant turn does not end with a special "
                "token, so the model cannot learn when to stop (the template has no end-of-turn "
                "token after the content)")
        elif end not in stops:
            report.problems.append(
                f"conversation {n}, message {i}: end-of-turn token {tok.decode([end])!r} "
                f"(id {end}) is not a stop token {sorted(stops)}; generation would run on "
                "(add it to generation_config.json's eos_token_id)")
        else:
            ends.add(end)
    return ends


def _load_tokenizer(source: str, load_pretrained):
    """The tokenizer of a model directory (without loading weights when possible)."""
    from lmforge.tokenizer import Tokenizer

    path = Path(source)
    if path.is_dir() and (path / "tokenizer.json").exists():
        return Tokenizer.from_dir(path), path
    return load_pretrained(source)[1], path if path.is_dir() else None
