"""The sandbox holds: each attack is cut off, this process carries on, the next run works.

Limits are tight on purpose (the suite shares a small machine): 3 processes, 256 MB, 2 s.
"""

import os
import socket
import sys

import pytest

from lmforge import sandbox
from lmforge.sandbox import Isolation, run_python

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux-only")

TIGHT = dict(timeout_s=2.0, cpu_s=1.0, memory_mb=256, max_processes=3, max_output_bytes=10_000)


def still_works():
    result = run_python("print(input()[::-1])", stdin="olleh\n")
    assert (result.status, result.stdout) == ("ok", "hello\n")


def test_runs_code_with_stdin_files_and_clean_errors():
    result = run_python("import helper\nprint(helper.X, open('data/in.txt').read())",
                        files={"helper.py": "X = 41 + 1", "data/in.txt": "hi"})
    assert (result.status, result.returncode, result.stdout) == ("ok", 0, "42 hi\n")
    result = run_python("def f():\n    return 1 / 0\nf()")
    assert result.status == "error" and result.returncode == 1
    assert 'File "main.py", line 2' in result.stderr and "sandbox" not in result.stderr
    assert result.stderr.strip().endswith("ZeroDivisionError: division by zero")
    assert run_python("import sys; sys.exit(3)").returncode == 3
    with pytest.raises(ValueError):
        run_python("", files={"../escape.py": ""})
    still_works()


def test_environment_and_directory_are_fresh_and_removed():
    os.environ["LMFORGE_SECRET"] = "hunter2"
    try:
        result = run_python("import os; print(sorted(os.environ)); print(os.getcwd())")
    finally:
        del os.environ["LMFORGE_SECRET"]
    env, cwd = result.stdout.splitlines()
    assert "LMFORGE_SECRET" not in env and "hunter2" not in result.stdout
    assert os.path.basename(cwd).startswith("lmforge-sandbox-") and not os.path.exists(cwd)


def test_the_standard_library_imports_under_the_sandbox_uid():
    # packages imported before the uid changed (json, encodings) must still find submodules
    code = "import decimal, json.tool, xml.dom.minidom; print('é'.encode('cp1252'), decimal.Decimal(1) / 8)"
    assert run_python(code).stdout == "b'\\xe9' 0.125\n"


def test_network_is_unreachable_even_on_localhost():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        result = run_python("import socket\n"
                            f"socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                            "print('connected')", **TIGHT)
        assert result.status == "error" and "connected" not in result.stdout
    result = run_python("import socket; socket.create_connection(('1.1.1.1', 53), timeout=1)", **TIGHT)
    assert result.status == "error"
    still_works()


def test_files_outside_are_closed_when_the_run_has_its_own_uid():
    if not sandbox.isolation().own_uid:
        pytest.skip("not root: the run shares our uid (see sandbox docstring)")
    outside = os.path.join(os.path.dirname(sandbox.__file__), "sandbox_was_here")
    result = run_python(f"open({outside!r}, 'w').write('x')")
    assert "PermissionError" in result.stderr and not os.path.exists(outside)
    result = run_python("print(open('/root/.bashrc').read())")  # /root is 0700
    assert result.status == "error" and "PermissionError" in result.stderr
    result = run_python("import os; os.kill(1, 9)")
    assert "PermissionError" in result.stderr
    still_works()


def test_fork_bomb_stops_at_the_process_limit_and_is_killed():
    count = ("import os, time\nn = 0\nfor _ in range(20):\n    try:\n        if os.fork() == 0:\n"
             "            time.sleep(30)\n            os._exit(0)\n        n += 1\n"
             "    except OSError:\n        pass\nprint(n)")
    result = run_python(count, **TIGHT)
    if sandbox.isolation().own_uid:
        assert (result.status, result.stdout) == ("ok", "2\n")  # 3 processes: main + 2
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = run_python(bomb, **TIGHT)
    assert result.status in ("timeout", "error") and result.seconds < 4
    still_works()


def test_a_process_that_escapes_the_session_is_killed_too():
    if not sandbox.isolation().own_uid:
        pytest.skip("without a uid of its own, clean-up is by process group, which setsid escapes")
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    print(os.getpid(), flush=True)\n"
            "    time.sleep(30)\nelse:\n    time.sleep(0.2)")
    result = run_python(code, **TIGHT)
    pid = int(result.stdout)
    assert not os.path.exists(f"/proc/{pid}") or _state(pid) in ("Z", "X")  # dead (maybe unreaped)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_unbounded_allocation_hits_the_memory_limit():
    result = run_python("a = []\nwhile True:\n    a.append(bytearray(10**7))", **TIGHT)
    assert result.status == "memory" and result.stderr.strip().endswith("MemoryError")
    still_works()


def test_endless_loop_and_sleep_are_cut_off():
    result = run_python("while True: pass", **TIGHT)  # the CPU limit, or the clock on a busy machine
    assert result.status == "timeout" and result.seconds < 3
    result = run_python("import time; time.sleep(60)", **dict(TIGHT, timeout_s=1.0))  # the clock
    assert (result.status, result.returncode) == ("timeout", -9) and result.seconds < 2
    still_works()


def test_endless_output_and_files_are_cut_off():
    result = run_python("while True: print('x' * 1000)", **TIGHT)
    assert result.status == "output_limit" and len(result.stdout) == TIGHT["max_output_bytes"]
    result = run_python("f = open('big', 'wb')\nwhile True: f.write(bytes(10**6))",
                        max_file_bytes=4 << 20, **TIGHT)
    assert result.status == "error" and "File too large" in result.stderr
    still_works()


def test_fallback_stubs_refuse_sockets_and_forks(monkeypatch):
    """Where the kernel cannot help (no namespaces, no uid change), stubs refuse instead."""
    monkeypatch.setattr(sandbox, "isolation", lambda: Isolation(own_uid=False, private_network=False))
    result = run_python("import socket; socket.socket()", **TIGHT)
    assert "PermissionError" in result.stderr
    if os.geteuid() == 0:  # otherwise RLIMIT_NPROC counts all our processes: not a stub's job
        assert "PermissionError" in run_python("import os; os.fork()", **TIGHT).stderr
    still_works()
