"""The `iclgd` process exits without the interpreter's teardown: what must still happen at exit, happens."""

import subprocess
import sys

# A module-level object whose finaliser runs only in the interpreter's teardown (it writes to fd 1 itself: by then
# sys.stdout may be gone).
_TEARDOWN_PROBE = ("import os\nclass Probe:\n    def __del__(self, write=os.write):\n"
                   "        write(1, b'teardown ran\\n')\nprobe = Probe()")


def _script(body: str, *argv: str) -> str:
    """A program that runs `body`, then the iclgd process entry on `argv`."""
    return "\n".join(["import atexit, sys, threading, time", "from iclgd import cli", _TEARDOWN_PROBE, body,
                      f"sys.argv = ['iclgd', *{list(argv)!r}]", "cli.run()", "print('not reached')"])


def _run(body: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _script(body, *argv)], capture_output=True, text=True, timeout=120)


def test_the_teardown_is_skipped_and_atexit_handlers_and_buffered_output_survive():
    proc = _run("atexit.register(lambda: print('atexit ran', flush=False))\nprint('buffered', end='')", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("buffered") and "Usage" in proc.stdout and proc.stdout.endswith("atexit ran\n")
    assert "not reached" not in proc.stdout and "teardown ran" not in proc.stdout


def test_exit_statuses_pass_through():
    assert _run("", "nosuch").returncode == 2
    message = _run("cli.main = lambda: sys.exit('stopped here')")
    assert message.returncode == 1 and message.stderr == "stopped here\n"
    assert _run("cli.main = lambda: sys.exit(3)").returncode == 3
    crash = _run("cli.main = lambda: 1 / 0")
    assert crash.returncode == 1 and "ZeroDivisionError" in crash.stderr


def test_a_thread_still_running_gets_the_ordinary_exit():
    """main returns while its thread still sleeps: the process waits for it, and tears down as usual."""
    body = ("cli.main = lambda: threading.Thread(target=lambda: (time.sleep(0.5), print('thread done', "
            "flush=True))).start()")
    proc = _run(body)
    assert proc.returncode == 0, proc.stderr
    assert "thread done" in proc.stdout and "teardown ran" in proc.stdout


def test_a_profiler_or_tracer_gets_the_ordinary_exit(tmp_path):
    """`python -m cProfile -o F -m iclgd ...` writes F after iclgd returns; a tracer (coverage) needs the same."""
    assert "teardown ran" in _run("sys.settrace(lambda *a: None)", "--help").stdout
    script = tmp_path / "entry.py"
    script.write_text(_script("", "--help"))
    profile = tmp_path / "profile.out"
    proc = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(profile), str(script)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert profile.stat().st_size > 0
