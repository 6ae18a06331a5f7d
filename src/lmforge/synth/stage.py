"""What every `lmforge data …` command shares: the prompt set, the generator's settings, a
resumable JSONL writer and the provenance manifest.

    prompts = read_prompt_set("prompts.jsonl")        # or a task: "arithmetic:200"
    counts = write_resumable(out, prompts, make_rows, batch_size=8, manifest=manifest)
    # make_rows(batch_no, prompts) -> (rows, Counter of drop reasons)

A datatrove-style pipeline per command: source (the prompt set) -> generate -> filter ->
write. Prompts go in fixed batches; each batch's rows are appended to OUT and flushed, then
the batch is marked done in OUT.progress with OUT's length after it. A killed job restarts
by cutting OUT back to the last marked length (a half-written batch goes) and skipping the
marked prompts, so no row is lost or written twice. Sampling is seeded per batch, so the
restarted batches write the rows an uninterrupted run writes. OUT.manifest.json records the
inputs (sha256), generator models, settings and the counts kept and dropped, and why.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

from lmforge.errors import InputError
from lmforge.eval.tasks import read_records
from lmforge.synth.backend import BackendError, open_backend

# Settings that change how a job runs but not which rows it writes: a resumed job may alter them.
RUN_ONLY_FIELDS = ("output", "overwrite", "progress", "endpoint", "device")


@dataclass
class EndpointOptions:
    timeout_s: float = 60.0  # per request
    retries: int = 4  # tries after the first, with exponential backoff
    backoff_s: float = 1.0  # first wait between tries (then 2x, 4x, ...)
    concurrency: int = 4  # requests in flight at once


@dataclass
class Prompt:
    index: int  # position in the prompt set
    messages: list[dict]  # the conversation to answer (ends with a user turn)
    record: dict  # the source record, for verifiers (its "answer", ...)

    @property
    def key(self) -> str:
        """Index and content: a resumed job skips exactly the prompts already done."""
        digest = hashlib.sha256(json.dumps(self.messages, sort_keys=True).encode()).hexdigest()[:16]
        return f"{self.index}:{digest}"

    @property
    def text(self) -> str:
        """The conversation as a judge reads it: the user's words for one turn, else role-labelled."""
        if len(self.messages) == 1:
            return self.messages[0]["content"]
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in self.messages)


def read_prompt_set(spec: str, seed: int = 0) -> list[Prompt]:
    """A JSONL file of {"prompt"} / {"question"} / {"messages"} records (a chat whose last turn
    is the assistant's is asked without it), or a built-in task "NAME:N" (arithmetic, compare,
    word; their records carry the "answer" a verifier checks)."""
    path = Path(spec)
    if path.is_file():
        return [Prompt(i, _prompt_messages(r, path, line), r) for i, (line, r) in enumerate(read_records(path))]
    name, sep, n = spec.rpartition(":")
    if not sep or not n.isdigit():
        raise InputError("no such prompt file (or task NAME:N, e.g. arithmetic:200)", spec)
    from lmforge.rewards.tasks import make_problems

    try:
        problems = make_problems(name, int(n), seed, "train")
    except ValueError as e:
        raise InputError(str(e), spec) from None
    return [Prompt(i, p["messages"], p) for i, p in enumerate(problems)]



def _prompt_messages(record: dict, path: Path, line: int) -> list[dict]:
    text = record.get("prompt", record.get("question"))
    if isinstance(text, str):
        return [{"role": "user", "content": text}]
    messages = record.get("messages")
    if isinstance(messages, list) and messages and all(isinstance(m, dict) and "role" in m for m in messages):
        if messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        if messages and messages[-1]["role"] == "user":
            return [{"role": m["role"], "content": m.get("content", "")} for m in messages]
    raise InputError("a prompt record needs 'prompt', 'question' or 'messages' ending with a user turn", path, line)


def with_system(messages: list[dict], system_prompt: str) -> list[dict]:
    return [{"role": "system", "content": system_prompt}, *messages] if system_prompt else messages


def open_generator(model: str, url: str, api_key_env: str, endpoint: EndpointOptions, device: str,
                   batch_size: int):
    """A back end for `model`: an endpoint's model name when `url` is set, else a model to load."""
    if not model:
        raise InputError("no model given (a model lmforge loads, or with --*url an endpoint's model name)")
    if url:
        return open_backend(model, url, api_key_env, **dataclasses.asdict(endpoint))
    return open_backend(model, device=device, batch_size=batch_size)


def batch_seed(seed: int, batch_no: int) -> int:
    """A 31-bit seed per batch, hashed so the `seed + i` an endpoint gets per conversation
    does not run into the next batch's."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{batch_no}".encode()).digest()[:4], "big") >> 1


class ResumableWriter:
    """Appends rows batch by batch to `path`; OUT.progress marks each finished batch."""

    def __init__(self, path: Path, fingerprint: dict, overwrite: bool = False):
        self.path, self.marks_path = Path(path), Path(str(path) + ".progress")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for p in (self.path, self.marks_path):
                p.unlink(missing_ok=True)
        self.done: set[str] = set()
        self.rows, self.dropped, self.resumed_batches = 0, Counter(), 0
        self._resume(json.loads(json.dumps(fingerprint)))
        self._out = open(self.path, "ab")
        self._marks = open(self.marks_path, "a", encoding="utf-8")

    def _resume(self, fingerprint: dict) -> None:
        marks = self._read_marks()
        if not marks:
            if self.path.exists() and self.path.stat().st_size:
                raise InputError("exists and was not written by a resumable job; pass --overwrite true "
                                 "or choose another --output", self.path)
            self.path.write_bytes(b"")
            self.marks_path.write_text(json.dumps({"fingerprint": fingerprint}) + "\n")
            return
        if marks[0].get("fingerprint") != fingerprint:
            changed = sorted(k for k in set(fingerprint) | set(marks[0].get("fingerprint", {}))
                             if fingerprint.get(k) != marks[0].get("fingerprint", {}).get(k))
            raise InputError(f"was started with other settings or inputs (changed: {', '.join(changed)}); "
                             "pass --overwrite true or choose another --output", self.path)
        for mark in marks[1:]:
            self.done.update(mark["keys"])
            self.rows += mark["rows"]
            self.dropped.update(mark["dropped"])
        self.resumed_batches = len(marks) - 1
        with open(self.path, "ab") as f:  # drop the rows of a batch that was never marked done
            f.truncate(marks[-1].get("offset", 0))

    def _read_marks(self) -> list[dict]:
        if not self.marks_path.exists():
            return []
        marks = []
        for line in self.marks_path.read_text(encoding="utf-8").splitlines():
            try:
                marks.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a mark cut off by the kill: its batch is not done
        return marks

    def write_batch(self, keys: list[str], rows: list[dict], dropped: Counter) -> None:
        self._out.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
        _sync(self._out)
        mark = {"keys": keys, "offset": self._out.tell(), "rows": len(rows), "dropped": dict(dropped)}
        self._marks.write(json.dumps(mark) + "\n")
        _sync(self._marks)
        self.done.update(keys)
        self.rows += len(rows)
        self.dropped.update(dropped)

    def close(self) -> None:
        self._out.close()
        self._marks.close()


def _sync(f) -> None:
    f.flush()
    os.fsync(f.fileno())


@dataclass
class Manifest:
    """The provenance record written next to an output file."""
    command: str  # e.g. "data distill"
    cfg: object  # the command's config dataclass
    inputs: list[Path]  # files read (hashed)
    generators: dict[str, str]  # role -> model name or "model @ url"

    def write(self, out: Path, counts: dict, status: str, error: str = "") -> Path:
        path = Path(str(out) + ".manifest.json")
        from lmforge.runtime import git_revision

        record = {"command": f"lmforge {self.command}", "argv": sys.argv, "status": status,
                  **({"error": error} if error else {}),
                  "output": {"path": str(out), "sha256": sha256_file(Path(out)) if Path(out).exists() else None},
                  "inputs": {str(p): sha256_file(Path(p)) for p in self.inputs},
                  "generators": self.generators, "settings": dataclasses.asdict(self.cfg), "counts": counts,
                  "lmforge_version": metadata.version("lmforge"), "git_revision": git_revision(),
                  "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        tmp = path.with_name(path.name + ".tmp")  # a reader never sees half a manifest
        tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n")
        os.replace(tmp, path)
        return path


def prompt_manifest(command: str, cfg, generators: dict) -> Manifest:
    """The manifest of a job over `cfg.prompts`: a file is hashed; a built-in task (NAME:N) is
    recorded by its spec and the seed, which make it."""
    inputs = [Path(cfg.prompts)] if Path(cfg.prompts).is_file() else []
    return Manifest(command, cfg, inputs, generators)


def generator_name(model: str, url: str) -> str:
    return f"{model} @ {url}" if url else model


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Whole or not at all (for the commands that do not generate): written beside, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(cfg, inputs: list[Path]) -> dict:
    """What the rows depend on: the settings (less RUN_ONLY_FIELDS) and the inputs' hashes."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RUN_ONLY_FIELDS}
    return {**settings, "input_sha256": [sha256_file(Path(p)) for p in inputs]}


MakeRows = Callable[[int, list[Prompt]], tuple[list[dict], Counter]]


def write_resumable(out: Path, prompts: list[Prompt], make_rows: MakeRows, batch_size: int,
                    manifest: Manifest, overwrite: bool = False, progress: bool = True) -> dict:
    """Run make_rows over the prompts not yet done, batch by batch, into `out`; returns the
    counts (also in the manifest). A back-end failure keeps every finished batch, records the
    error in the manifest and becomes an InputError saying how to resume."""
    from tqdm.auto import tqdm

    writer = ResumableWriter(out, fingerprint(manifest.cfg, manifest.inputs), overwrite)
    keys = {p.key for p in prompts}
    counts = lambda: {"prompts": len(prompts), "prompts_done": len(writer.done & keys),  # noqa: E731
                      "rows": writer.rows, "dropped": dict(sorted(writer.dropped.items()))}
    bar = tqdm(total=len(prompts), initial=counts()["prompts_done"], unit="prompt", disable=not progress,
               desc=manifest.command)
    try:
        for start in range(0, len(prompts), batch_size):
            todo = [p for p in prompts[start:start + batch_size] if p.key not in writer.done]
            if todo:
                rows, dropped = make_rows(start // batch_size, todo)
                writer.write_batch([p.key for p in todo], rows, dropped)
                bar.update(len(todo))
                bar.set_postfix(rows=writer.rows, dropped=sum(writer.dropped.values()))
    except BackendError as e:
        manifest.write(out, counts(), "interrupted", str(e))
        raise InputError(f"{e}; the {writer.rows} rows written so far are kept; run the same command "
                         "again to resume", out) from None
    except BaseException as e:
        manifest.write(out, counts(), "interrupted", f"{type(e).__name__}: {e}")
        raise
    finally:
        bar.close()
        writer.close()
    manifest.write(out, counts(), "complete")
    return counts()
