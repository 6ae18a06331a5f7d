"""Read chat data in the common formats into one conversation type: a list of messages.

    convs = read_conversations(["data/chat/train.jsonl"], on_error="skip", stats=stats)
    convs[0]  # [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]

One JSON object per line (`.jsonl`, `.jsonl.gz`), or a `.json` file holding a list. Each
record may be, detected by its keys:
- OpenAI `{"messages": [{"role", "content"}, ...]}`; roles system, user, assistant, tool;
  `tool_calls`, `tool_call_id` and `name` are kept for templates that render them;
- ShareGPT `{"conversations": [{"from": "human"|"gpt"|"system"|"tool"|..., "value"}]}`;
- Alpaca `{"instruction", "input"?, "output", "system"?}` -> user = instruction (+ input).
A malformed record raises `InputError` naming file, line and field, or with
`on_error="skip"` is counted in `ChatReadStats` and left out.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

from lmforge.errors import InputError, reading

Message = dict
Conversation = list[Message]
ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "chatgpt": "assistant", "bing": "assistant",
                  "tool": "tool", "observation": "tool", "function_response": "tool",
                  "function_call": "assistant"}
KEPT_KEYS = ("tool_calls", "tool_call_id", "name")


@dataclass
class ChatReadStats:
    read: int = 0  # conversations returned
    skipped: int = 0  # malformed records left out (on_error="skip")
    errors: list[str] = field(default_factory=list)  # the first few skip reasons

    def add_error(self, message: str) -> None:
        self.skipped += 1
        if len(self.errors) < 10:
            self.errors.append(message)


def read_conversations(paths: list[str | Path] | str | Path,
                       on_error: Literal["raise", "skip"] = "raise",
                       stats: ChatReadStats | None = None) -> list[Conversation]:
    stats = stats if stats is not None else ChatReadStats()
    paths = [paths] if isinstance(paths, (str, Path)) else paths
    conversations = []
    for path in _expand(paths):
        for line, record in _records(path):
            try:
                conversations.append(parse_record(record, path, line))
            except InputError as e:
                if on_error == "raise":
                    raise
                stats.add_error(str(e))
    stats.read += len(conversations)
    return conversations


def parse_record(record: object, path: object = None, line: int | None = None) -> Conversation:
    """One record in any supported format -> validated messages."""
    if isinstance(record, _BadJSON):
        raise InputError(f"invalid JSON: {record}", path, line)
    if not isinstance(record, dict):
        raise InputError(f"expected a JSON object, got {type(record).__name__}", path, line)
    if "messages" in record:
        messages = [_openai_message(m, k, path, line) for k, m in enumerate(_list(record, "messages", path, line))]
    elif "conversations" in record:
        messages = [_sharegpt_message(m, k, path, line)
                    for k, m in enumerate(_list(record, "conversations", path, line))]
    elif "instruction" in record and "output" in record:
        messages = _alpaca_messages(record, path, line)
    else:
        raise InputError(f"unknown record format (keys {sorted(record)[:6]}); expected 'messages', "
                         "'conversations' or 'instruction'+'output'", path, line)
    if not any(m["role"] == "assistant" for m in messages):
        raise InputError("conversation has no assistant message to train on", path, line)
    _check_turns(messages, path, line)
    return messages


def _check_turns(messages: Conversation, path, line) -> None:
    """System messages lead; the conversation starts with the user; no turn is empty (an
    assistant turn that only calls tools, and tool results, may be)."""
    body = [m for m in messages if m["role"] != "system"]
    if any(m["role"] == "system" for m in messages[len(messages) - len(body):]):
        raise InputError("a system message after the conversation started", path, line)
    if body and body[0]["role"] != "user":
        raise InputError(f"the conversation starts with {body[0]['role']!r}, expected 'user'", path, line)
    for k, m in enumerate(messages):
        if not m["content"].strip() and m["role"] != "tool" and not m.get("tool_calls"):
            raise InputError(f"field 'messages[{k}].content' ({m['role']}) is empty", path, line)


def _openai_message(m: object, k: int, path, line) -> Message:
    if not isinstance(m, dict):
        raise InputError(f"field 'messages[{k}]' is not an object", path, line)
    role, content = m.get("role"), m.get("content")
    if role not in ROLES:
        raise InputError(f"field 'messages[{k}].role' is {role!r}, expected one of {ROLES}", path, line)
    if content is None and role == "assistant" and m.get("tool_calls"):
        content = ""
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise InputError(f"field 'messages[{k}].content' must be a string", path, line)
    message = {"role": role, "content": content}
    message.update({key: m[key] for key in KEPT_KEYS if key in m})
    return message


def _sharegpt_message(m: object, k: int, path, line) -> Message:
    if not isinstance(m, dict):
        raise InputError(f"field 'conversations[{k}]' is not an object", path, line)
    speaker, value = m.get("from"), m.get("value")
    if speaker not in SHAREGPT_ROLES:
        raise InputError(f"field 'conversations[{k}].from' is {speaker!r}, expected one of "
                         f"{sorted(SHAREGPT_ROLES)}", path, line)
    if not isinstance(value, str):
        raise InputError(f"field 'conversations[{k}].value' must be a string", path, line)
    return {"role": SHAREGPT_ROLES[speaker], "content": value}


def _alpaca_messages(record: dict, path, line) -> Conversation:
    for key in ("instruction", "input", "output", "system"):
        if key in record and not isinstance(record[key], str):
            raise InputError(f"field '{key}' must be a string", path, line)
    user = record["instruction"] + (f"\n\n{record['input']}" if record.get("input") else "")
    messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
    return messages + [{"role": "user", "content": user},
                       {"role": "assistant", "content": record["output"]}]


def _list(record: dict, key: str, path, line) -> list:
    value = record[key]
    if not isinstance(value, list) or not value:
        raise InputError(f"field '{key}' must be a non-empty list", path, line)
    return value


def _expand(paths) -> list[Path]:
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.name.endswith((".jsonl", ".jsonl.gz", ".json")))
        elif p.exists():
            files.append(p)
        else:
            raise InputError("no such file or directory", p)
    return files


def _records(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed JSON) per record; a `.json` file is one list (line = index + 1)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f, reading(path):
        if path.suffix == ".json":
            try:
                data = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise InputError(f"invalid JSON: {e}", path) from None
            if not isinstance(data, list):
                raise InputError("a .json chat file must hold a list of records", path)
            yield from enumerate(data, start=1)
            return
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as e:
                yield number, _BadJSON(str(e))
            except UnicodeDecodeError as e:
                yield number, _BadJSON(f"invalid UTF-8 ({e.reason})")


class _BadJSON(str):
    """An unparsable line, surfaced by parse_record as a not-an-object error."""
