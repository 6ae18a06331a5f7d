"""What a run records about itself, and the short report it ends with.

    record_run(run_dir, cfg, runtime)            # config.yaml + run.json at the start
    write_report(run_dir, "Pretraining", lines, plots={"loss.png": plot_fn})
"""

from __future__ import annotations

import hashlib
import json
import sys
from importlib import metadata
from pathlib import Path
from typing import Callable

from lmforge.config import save_config, to_dict
from lmforge.runtime import Runtime, git_revision

LIBRARIES = ("torch", "numpy", "tokenizers", "safetensors", "transformers", "lmforge")


def record_run(run_dir: Path, cfg, runtime: Runtime | None = None, data_files: list[Path] = ()) -> None:
    """Resolved config, git revision, library versions, data hashes and device."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    info = {"stage": type(cfg).__name__.removesuffix("Config").lower(),
            "command": sys.argv, "git_revision": git_revision(),
            "libraries": {name: _version(name) for name in LIBRARIES},
            "runtime": runtime.describe() if runtime else None,
            "data": {str(p): file_digest(Path(p)) for p in data_files},
            # what each input is: a file's hash, a directory's own record (`lmforge lineage`)
            "parent_manifests": parent_manifests(to_dict(cfg), run_dir)}
    (run_dir / "run.json").write_text(json.dumps(info, indent=2) + "\n")


# Config fields that name outputs, not inputs.
OUTPUT_FIELDS = {"run_dir", "output", "dst"}


def input_paths(config: dict, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted field, value) for every string in a resolved config that names an existing
    file or directory, outputs excepted."""
    found = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if key in OUTPUT_FIELDS:
            continue
        if isinstance(value, dict):
            found += input_paths(value, f"{name}.")
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item and Path(item).exists():
                found.append((name, item))
    return found


def parent_manifests(config: dict, run_dir: Path) -> dict:
    """For run.json: each input's hash (a file) or its own record (a directory), so the
    chain survives its parents' deletion."""
    manifests = {}
    for name, value in input_paths(config):
        path = Path(value)
        if path.resolve() in (run_dir.resolve(), (run_dir / "model").resolve()):
            continue  # a resumed run's own directory
        if path.is_file():
            manifests[value] = {"field": name, "digest": file_digest(path)}
            continue
        for home in (path, path.parent):
            for record in ("run.json", "index.json", "stats.json"):
                if (home / record).exists():
                    manifests[value] = {"field": name, record: json.loads((home / record).read_text())}
                    break
            if value in manifests:
                break
    return manifests


def file_digest(path: Path, max_bytes: int = 1 << 26) -> str:
    """sha256 of the first 64 MiB (plus the size): cheap, and enough to tell data apart."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(max_bytes))
    return f"sha256:{h.hexdigest()[:16]}:{path.stat().st_size}"


def write_report(run_dir: Path, title: str, lines: list[str],
                 plots: dict[str, Callable] | None = None) -> Path:
    """report.md with the given lines and one PNG per plot function (fn(ax) draws it)."""
    run_dir = Path(run_dir)
    body = [f"# {title}", "", *lines, ""]
    for name, draw in (plots or {}).items():
        _plot(run_dir / name, draw)
        body += [f"![{name}]({name})", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(body))
    return path


def plot_series(series: dict[str, tuple[list, list]], xlabel: str, ylabel: str) -> Callable:
    def draw(ax):
        for label, (xs, ys) in series.items():
            ax.plot(xs, ys, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend()
        ax.grid(alpha=0.3)
    return draw


def _plot(path: Path, draw: Callable) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    draw(ax)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
