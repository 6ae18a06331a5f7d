"""`lmforge lineage RUN_DIR`: where a run came from, back to the raw pages.

    lmforge lineage runs/demo/dpo
    runs/demo/dpo  [dpo, git 1a2b3c4, lmforge 0.1.0]
      model: runs/demo/sft/model -> runs/demo/sft  [sft, git 1a2b3c4, lmforge 0.1.0]
        model: runs/demo/pretrain/model -> runs/demo/pretrain  [pretrain, ...]
          data.shards: runs/demo/shards  [tokenize: 1,234,567 tokens]
            runs/demo/curated  [curate: 812 of 1,000 documents kept]
              data/web/sample.warc.gz  sha256:...

Every artifact already says what made it: a training run's run.json and config.yaml
(`record_run`), token shards' index.json (its inputs and tokenizer), a curation's stats.json
(its input files). This walks those records; an input path that a config names and that
exists is a parent. run.json also keeps each parent's manifest (`parent_manifests`), so the
chain stays readable after a parent directory is deleted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from lmforge.errors import InputError
from lmforge.report import file_digest, input_paths

@dataclass
class LineageConfig:
    run_dir: str = ""  # a run directory, model directory, token shards or curated output


def lineage(cfg: LineageConfig) -> list[str]:
    path = Path(cfg.run_dir)
    if not path.exists():
        raise InputError("no such run directory", path)
    lines = lineage_lines(path)
    print("\n".join(lines))
    return lines


def lineage_lines(path: Path, depth: int = 0, seen: set | None = None, label: str = "") -> list[str]:
    seen = set() if seen is None else seen
    indent, head = "  " * depth, f"{label}: " if label else ""
    home, kind, summary, parents = describe(path)
    shown = f"{path} -> {home}" if home != path else str(path)
    if home in seen:
        return [f"{indent}{head}{shown}  (see above)"]
    seen.add(home)
    lines = [f"{indent}{head}{shown}  [{kind}{': ' + summary if summary else ''}]"]
    for name, parent in parents:
        lines += lineage_lines(parent, depth + 1, seen, name)
    return lines


def describe(path: Path) -> tuple[Path, str, str, list[tuple[str, Path]]]:
    """(the directory holding the record, what made it, a summary, [(field, parent path)])."""
    for home in (path, path.parent):
        if (home / "run.json").exists() and (home / "config.yaml").exists():
            return home, *_training_run(home)
    if (path / "index.json").exists():
        index = json.loads((path / "index.json").read_text())
        tokens = sum(s.get("tokens", 0) for s in index.get("splits", {}).values())
        parents = [("input", Path(p)) for p in index.get("inputs", [])]
        parents += [("tokenizer", Path(index["tokenizer"]["path"]))] if "tokenizer" in index else []
        return path, "tokenize", f"{tokens:,} tokens", [(n, p) for n, p in parents if p.exists()]
    if (path / "stats.json").exists():
        stats = json.loads((path / "stats.json").read_text())
        summary = f"{stats.get('documents_kept')} of {stats.get('documents_read')} documents kept"
        return path, "curate", summary, [("input", Path(p)) for p in stats.get("inputs", []) if Path(p).exists()]
    if path.is_file():
        return path, "file", file_digest(path), []
    files = [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else []
    return path, "no record", f"{len(files)} files" if files else "", []


def _training_run(home: Path) -> tuple[str, str, list[tuple[str, Path]]]:
    run = json.loads((home / "run.json").read_text())
    config = yaml.safe_load((home / "config.yaml").read_text()) or {}
    stage = run.get("stage", "run")
    version = (run.get("libraries") or {}).get("lmforge")
    summary = f"git {str(run.get('git_revision') or '?')[:7]}, lmforge {version}"
    return stage, summary, [(name, Path(p)) for name, p in input_paths(config) if Path(p).resolve() != home.resolve()]
