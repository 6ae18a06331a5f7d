"""Run untrusted Python code in its own process, under limits, and get back what it printed.

    result = run_python("print(sum(range(10)))", timeout_s=5)
    result.status, result.stdout                     # "ok", "45\\n"
    run_python(code, stdin="3\\n", files={"data.txt": "..."}, memory_mb=256, max_processes=1)
    isolation()                                      # what this machine can enforce

Code evaluation (`eval/code.py`) and the chat server's Python tool both run code here; this
module knows neither. `status` is "ok", "error" (non-zero exit), "timeout" (wall clock or CPU
time), "memory" (a MemoryError under the memory limit), "output_limit" (stdout + stderr over
`max_output_bytes`) or "killed" (any other signal); writing a file past `max_file_bytes` fails
with OSError (EFBIG). Linux only.

How a run is confined. The child is this interpreter in isolated mode (`python -I -B`: no
PYTHON* variables, no user site, no script directory on sys.path) with a fresh environment
(PATH, HOME and TMPDIR = its directory; nothing of ours leaks), in a session of its own, in a
new temporary directory holding `main.py` and `files`, deleted afterwards. It runs this file,
which confines the process (`_confine`, trusted code that runs first) and then executes
`main.py` as `__main__`.

Enforced by the kernel:
- per process: CPU time (RLIMIT_CPU: SIGXCPU, SIGKILL a second later), address space
  (RLIMIT_AS: allocations fail with MemoryError), file size (RLIMIT_FSIZE), open files, no core
  dumps; PR_SET_NO_NEW_PRIVS, so setuid binaries grant nothing. Wall clock and output size: the
  parent reads at most `max_output_bytes` and kills everything on overflow or deadline.
- when we are root: the run gets a fresh uid of its own (random, above 2**20) and no groups.
  So RLIMIT_NPROC counts exactly this run's processes and threads (a fork bomb stops at
  `max_processes`); it can write only its own directory and world-writable ones, cannot read
  what is closed to others (/root, 0600 files), cannot signal another process; and at the end
  every process with that uid is killed by kill(-1) sent as that uid, which forking cannot
  race and `setsid` cannot escape.
- no network: a new, empty network namespace (unshare(CLONE_NEWNET)): only a loopback that is
  down, so localhost services (our own server) are unreachable too. Needs root, or
  unprivileged user namespaces (then CLONE_NEWUSER | CLONE_NEWNET).

Best effort, where the kernel cannot do it (`isolation()` says which case holds):
- not root: no uid of its own, so RLIMIT_NPROC counts all of the user's processes (forking
  mostly fails: closed, not open), and clean-up kills the process group, which `setsid`
  escapes.
- root that cannot switch uid: RLIMIT_NPROC does not apply to root, so fork, spawn and
  system are replaced by stubs that raise PermissionError; ctypes gets around them.
- no network namespace: sockets are replaced by a stub that raises PermissionError; ctypes
  or a fresh interpreter get around it.

Not prevented: reading world-readable files (/etc/passwd, this source) — that needs a mount
namespace or a chroot — and writing into world-writable directories (each file bounded by
RLIMIT_FSIZE).

When the interpreter lives where the run's uid cannot reach it (pyenv and uv install Python
under /root, mode 0700), those sys.path entries are opened as directories before the uid
changes and imported through /proc/self/fd/N: the standard library works, /root stays closed.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import math
import os
import random
import resource
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback
import types
from dataclasses import dataclass

MAIN = "main.py"
UID_RANGE = (1 << 20, 1 << 30)  # far above system and human uids: one fresh uid per run
SETUP_EXIT = 125
SETUP_FAILED = "lmforge.sandbox: setup failed"
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
PR_SET_NO_NEW_PRIVS = 38


@dataclass
class SandboxResult:
    status: str  # ok | error | timeout | memory | output_limit | killed
    returncode: int  # negative: killed by that signal
    stdout: str
    stderr: str
    seconds: float  # wall clock, start of the interpreter to its end


@dataclass(frozen=True)
class Isolation:
    """What this machine enforces; see the module docstring for what each means."""
    own_uid: bool  # a fresh uid per run (we are root): kernel process limit, clean-up by uid
    private_network: bool  # a network namespace; else a socket stub (best effort)


class SandboxError(RuntimeError):
    """The sandbox itself could not be set up (never the code's fault)."""


def run_python(code: str, *, stdin: str = "", timeout_s: float = 10.0, cpu_s: float = 5.0,
               memory_mb: int = 512, max_processes: int = 4, max_output_bytes: int = 1 << 20,
               max_file_bytes: int = 16 << 20, files: dict[str, str] | None = None) -> SandboxResult:
    """Run `code` as `python main.py` in a fresh directory that also holds `files` (relative
    paths -> text). `max_processes` counts threads as well as processes, the main one
    included; `cpu_s` and `memory_mb` bound each process."""
    iso = isolation()
    uid = random.SystemRandom().randrange(*UID_RANGE) if iso.own_uid else None
    plan = {"uid": uid, "private_network": iso.private_network, "cpu_s": cpu_s,
            "memory_mb": memory_mb, "max_processes": max_processes, "max_file_bytes": max_file_bytes}
    workdir = tempfile.mkdtemp(prefix="lmforge-sandbox-")
    try:
        _write_files(workdir, {**(files or {}), MAIN: code}, uid)
        return _execute(plan, workdir, stdin, timeout_s, max_output_bytes)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@functools.cache
def isolation() -> Isolation:
    """Probe once, in a child, which protections the kernel grants here."""
    done = subprocess.run([sys.executable, "-I", "-B", __file__, "--probe"], capture_output=True,
                          text=True, cwd="/", env=_child_env("/"), timeout=60)
    try:
        return Isolation(**json.loads(done.stdout))
    except (ValueError, TypeError) as e:
        raise SandboxError(f"sandbox probe failed: {done.stderr or done.stdout}") from e


# ---- the parent: start, watch, kill ---------------------------------------------------------

def _execute(plan: dict, workdir: str, stdin: str, timeout_s: float,
             max_output_bytes: int) -> SandboxResult:
    with tempfile.TemporaryFile() as stdin_file:  # a file, not a pipe: no writer to deadlock
        stdin_file.write(stdin.encode())
        stdin_file.seek(0)
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-I", "-B", __file__, json.dumps(plan)],
                                stdin=stdin_file, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=workdir, env=_child_env(workdir), start_new_session=True)
    output = _Output(proc, max_output_bytes)
    try:
        cut = output.read_until(start + timeout_s, stop=lambda: _exited(proc))
        seconds = time.monotonic() - start
    finally:
        _kill_all(proc, plan["uid"])
    if cut is None:  # what the main process left in the pipes; nothing writes any more
        cut = output.read_until(start + timeout_s + 1.0, stop=lambda: False)
    proc.stdout.close()
    proc.stderr.close()
    stdout, stderr = (bytes(b).decode("utf-8", "replace") for b in output.streams.values())
    if proc.returncode == SETUP_EXIT and stderr.startswith(SETUP_FAILED):
        raise SandboxError(stderr.strip())
    return SandboxResult(_status(proc.returncode, stderr, cut), proc.returncode, stdout, stderr,
                         seconds)


class _Output:
    """stdout and stderr of a run, read together up to a byte budget."""

    def __init__(self, proc: subprocess.Popen, max_bytes: int):
        self.streams = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
        self.open = set(self.streams)
        self.budget = max_bytes

    def read_until(self, deadline: float, stop) -> str | None:
        """Read until both streams close or `stop()`; "timeout" or "output_limit" if cut."""
        with selectors.DefaultSelector() as selector:
            for fd in self.open:
                selector.register(fd, selectors.EVENT_READ)
            while self.open:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "timeout"
                for key, _ in selector.select(min(remaining, 0.05)):
                    data = os.read(key.fd, 1 << 16)
                    if not data:
                        selector.unregister(key.fd)
                        self.open.discard(key.fd)
                    self.streams[key.fd] += data[:max(self.budget, 0)]
                    self.budget -= len(data)
                    if self.budget < 0:
                        return "output_limit"
                if stop():
                    return None
        return None


def _exited(proc: subprocess.Popen) -> bool:
    """Whether the main process ended, without reaping it: while it is a zombie its pid (also
    the process group id) cannot be reused, so killing the group stays safe."""
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


_SWEEP = """import os, sys
uid = int(sys.argv[1]); os.setgroups([]); os.setgid(uid); os.setuid(uid)
try: os.kill(-1, 9)
except ProcessLookupError: pass
"""


def _kill_all(proc: subprocess.Popen, uid: int | None) -> None:
    """Kill the run's process group and, with a uid of its own, every process of that uid
    (kill(-1) as that uid reaches exactly those, atomically with respect to fork); then reap."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if uid is not None:
        subprocess.run([sys.executable, "-I", "-S", "-B", "-c", _SWEEP, str(uid)], env={},
                       check=True, timeout=60)
    proc.wait()


def _status(returncode: int, stderr: str, cut: str | None) -> str:
    if cut:
        return cut
    if returncode == 0:
        return "ok"
    if returncode == -signal.SIGXCPU:
        return "timeout"
    if "MemoryError" in stderr.strip().rsplit("\n", 1)[-1]:
        return "memory"
    return "killed" if returncode < 0 else "error"


def _child_env(workdir: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
            "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1"}  # BLAS thread pools would count against max_processes


def _write_files(workdir: str, files: dict[str, str], uid: int | None) -> None:
    for name, text in files.items():
        path = os.path.normpath(os.path.join(workdir, name))
        if os.path.isabs(name) or not path.startswith(workdir + os.sep):
            raise ValueError(f"sandbox file {name!r} is outside its directory")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    if uid is not None:  # the run's uid owns its directory, and nothing else
        for root, _, names in os.walk(workdir):
            for path in [root, *(os.path.join(root, n) for n in names)]:
                os.chown(path, uid, uid)


# ---- the child: confine itself, then run main.py --------------------------------------------

def _child(argv: list[str]) -> None:
    if argv == ["--probe"]:
        print(json.dumps(_probe()))
        return
    try:
        _confine(json.loads(argv[0]))
    except Exception as e:  # noqa: BLE001 -- any failure here is the sandbox's, reported as such
        print(f"{SETUP_FAILED}: {e!r}", file=sys.stderr)
        sys.exit(SETUP_EXIT)
    _run_main()


def _confine(plan: dict) -> None:
    if plan["private_network"]:
        _unshare_network()
    _set_limits(plan)
    if _libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if plan["uid"] is not None:
        _become(plan["uid"])
    elif os.geteuid() == 0:
        _stub_processes()
    if not plan["private_network"]:
        _stub_sockets()


def _probe() -> dict:
    report = {"own_uid": False, "private_network": False}
    with contextlib.suppress(OSError):
        _unshare_network()
        report["private_network"] = True
    if os.geteuid() == 0:
        with contextlib.suppress(OSError, ImportError):
            _become(random.SystemRandom().randrange(*UID_RANGE))
            import decimal, json.tool  # noqa: F401,E401 -- the stdlib must still import
            report["own_uid"] = True
    return report


def _unshare_network() -> None:
    flags = CLONE_NEWNET if os.geteuid() == 0 else CLONE_NEWUSER | CLONE_NEWNET
    if _libc().unshare(flags) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")


def _set_limits(plan: dict) -> None:
    cpu_s = math.ceil(plan["cpu_s"])
    memory = plan["memory_mb"] << 20
    for limit, value in [(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1)),
                         (resource.RLIMIT_AS, (memory, memory)),
                         (resource.RLIMIT_NPROC, (plan["max_processes"],) * 2),
                         (resource.RLIMIT_FSIZE, (plan["max_file_bytes"],) * 2),
                         (resource.RLIMIT_NOFILE, (256, 256)),
                         (resource.RLIMIT_CORE, (0, 0))]:
        resource.setrlimit(limit, value)


def _become(uid: int) -> None:
    _reroute_unreachable_paths()
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)  # real, effective and saved: no way back


def _reroute_unreachable_paths() -> None:
    """Make sys.path entries that others cannot reach importable through directory
    descriptors opened now, while we still can; packages already imported follow."""
    moved = {}
    for i, entry in enumerate(sys.path):
        if os.path.isabs(entry) and os.path.isdir(entry) and not _open_to_others(entry):
            moved[entry] = f"/proc/self/fd/{os.open(entry, os.O_RDONLY | os.O_DIRECTORY)}"
            sys.path[i] = moved[entry]
    longest_first = sorted(moved.items(), key=lambda item: -len(item[0]))
    for module in list(sys.modules.values()):
        search = getattr(module, "__path__", None)
        if isinstance(search, list):
            search[:] = [_rerouted(path, longest_first) for path in search]
    sys.path_importer_cache.clear()


def _rerouted(path: str, moved: list[tuple[str, str]]) -> str:
    for old, new in moved:
        if path == old or path.startswith(old + os.sep):
            return new + path[len(old):]
    return path


def _open_to_others(path: str) -> bool:
    """Whether a user with no groups can list `path` and walk down to it."""
    if os.stat(path).st_mode & stat.S_IROTH == 0:
        return False
    while True:
        if os.stat(path).st_mode & stat.S_IXOTH == 0:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _refuse(*args, **kwargs):
    raise PermissionError("not allowed in the sandbox")


def _stub_processes() -> None:
    import _posixsubprocess
    for name in ["fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp"]:
        setattr(os, name, _refuse)
    _posixsubprocess.fork_exec = _refuse


def _stub_sockets() -> None:
    import _socket
    import socket

    class RefusedSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            _refuse()

    socket.socket = socket.SocketType = _socket.socket = RefusedSocket
    socket.socketpair = socket.fromfd = _refuse


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _run_main() -> None:
    """Execute main.py as `python main.py` would, its traceback free of our frames."""
    main = types.ModuleType("__main__")
    main.__file__ = MAIN
    sys.modules["__main__"] = main
    sys.argv = [MAIN]
    sys.path.insert(0, "")  # the working directory: `files` are importable
    try:
        with open(MAIN, encoding="utf-8") as f:
            exec(compile(f.read(), MAIN, "exec"), main.__dict__)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 -- reported as Python would, exit status 1
        traceback.print_exception(type(e), e, e.__traceback__.tb_next)
        sys.exit(1)


if __name__ == "__main__":
    _child(sys.argv[1:])
