"""What every bench script shares: repeats interleaved across the compared sides, median and
spread, and the metadata that says where a number came from.

    from common import add_repeats, Meta, interleave, summary, ratio
    meta = Meta(["torch", "transformers"])            # load average before, versions, revision
    runs = interleave({"ours": f, "theirs": g}, args.repeats)   # ours, theirs, ours, theirs, ...
    print(meta.dump({"ours": summary([r["tokens_per_s"] for r in runs["ours"]]), ...}))

A number is the median over `--repeats` runs (default 3); its spread is the min and max of
those runs. Sides alternate within each round so that background load on a shared machine
hits both alike. `Meta.dump` adds the git revision (`-dirty` when the tree has changes), the
load average before and after, the CPU, library versions, the date and the command line.
`Remote` keeps a measuring process warm in another venv (datatrove, datasketch) so that its
runs can be interleaved with ours as well.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]


def add_repeats(parser, default: int = 3) -> None:
    parser.add_argument("--repeats", type=int, default=default,
                        help="measurements per side, interleaved across sides; median and min/max reported")


def git_revision() -> str:
    """`git rev-parse --short HEAD`, plus -dirty when `git status` lists any change; a tree
    without .git (a copy on a device machine) can pass its revision in $BENCH_REVISION."""
    if os.environ.get("BENCH_REVISION"):
        return os.environ["BENCH_REVISION"]
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions(packages) -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for p in packages:
        try:
            found[p] = version(p)
        except PackageNotFoundError:
            found[p] = None
    return found


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Meta:
    """Taken at start (load average before); `dump` adds the load average after."""

    def __init__(self, packages=("torch",)):
        self.data = {
            "revision": git_revision(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": shlex.join(["python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
            "python": f"{sys.executable} ({platform.python_version()})",
            "cpu": cpu_name(), "cores": os.cpu_count(),
            "load_average_before": load_average(),  # 1, 5, 15 minutes
            "versions": versions(packages),
        }
        torch = sys.modules.get("torch")  # only where the script uses it
        if torch is not None and torch.cuda.is_available():
            self.data["gpu"] = torch.cuda.get_device_name()

    def add(self, **fields) -> None:
        self.data.update(fields)

    def dump(self, result: dict, indent: int | None = 2) -> str:
        meta = dict(self.data, load_average_after=load_average())
        return dumps({**result, "meta": meta}, indent)


def dumps(obj, indent: int | None = 2, width: int = 100, _level: int = 0) -> str:
    """JSON, indented, but any object or list that fits in `width` characters on one line."""
    flat = json.dumps(obj)
    if indent is None or len(flat) + _level * indent <= width or not isinstance(obj, (dict, list)) or not obj:
        return flat
    pad, inner = " " * (indent * _level), " " * (indent * (_level + 1))
    if isinstance(obj, dict):
        items = [f"{inner}{json.dumps(k)}: {dumps(v, indent, width, _level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    items = [inner + dumps(v, indent, width, _level + 1) for v in obj]
    return "[\n" + ",\n".join(items) + "\n" + pad + "]"


def interleave(sides: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list]:
    """Call each side once per round, in order (ours, theirs, ours, theirs, ...)."""
    runs: dict[str, list] = {name: [] for name in sides}
    for r in range(repeats):
        for name, fn in sides.items():
            print(f"[round {r + 1}/{repeats}] {name}", file=sys.stderr, flush=True)
            runs[name].append(fn())
    return runs


def summary(values, digits: int = 3) -> dict:
    """Median and spread (min, max) of one side's runs."""
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "n": 0}
    r = lambda x: round(x, digits)  # noqa: E731
    return {"median": r(statistics.median(values)), "min": r(min(values)), "max": r(max(values)),
            "n": len(values), "runs": [r(v) for v in values]}


def ratio(a: dict | None, b: dict | None, digits: int = 3) -> float | None:
    """Ratio of two summaries' medians."""
    if not a or not b or not a.get("median") or not b.get("median"):
        return None
    return round(a["median"] / b["median"], digits)


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def run_json(cmd: list[str], **kw) -> dict:
    """Run a command that prints one JSON object on its last line; {'error': ...} if it fails."""
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode == 0:
        try:
            return last_json(out.stdout)
        except (ValueError, IndexError):
            pass
    return {"error": (out.stderr.strip().splitlines() or ["exit %d" % out.returncode])[-3:]}


class Remote:
    """A warm measuring process, e.g. in another venv: `cmd` runs a script whose main calls
    `serve(handler)`. Each call sends keyword arguments and returns the handler's result."""

    def __init__(self, cmd: list[str], env: dict | None = None):
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, env=env)

    def __call__(self, **request):
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise RuntimeError(f"remote process died: {self._tail()}") from None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"remote process died: {self._tail()}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"remote error: {reply['error']}")
        return reply["result"]

    def _tail(self, n: int = 20) -> str:
        self.log.flush()
        return "".join(Path(self.log.name).read_text().splitlines(True)[-n:])

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            self.proc.wait(timeout=60)
        Path(self.log.name).unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def serve(handler: Callable[..., Any]) -> None:
    """The other end of `Remote`: one JSON request per stdin line, one reply per line on the
    original stdout; anything libraries print goes to stderr instead."""
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    for line in sys.stdin:
        try:
            reply = {"result": handler(**json.loads(line))}
        except Exception:  # noqa: BLE001 — reported to the driver, which raises it
            reply = {"error": traceback.format_exc()}
        channel.write(json.dumps(reply) + "\n")
        channel.flush()
