"""The `iclgd` process exits without the interpreter's teardown: what must still happen at exit, happens."""

import subprocess
import sys


def _run(body: str, *argv: str) -> subprocess.CompletedProcess:
    script = "\n".join(["import atexit, sys, threading, time", "from iclgd import cli", body,
                        f"sys.argv = ['iclgd', *{list(argv)!r}]", "cli.run()", "print('not reached')"])
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


def test_atexit_handlers_and_buffered_output_survive_the_fast_exit():
    proc = _run("atexit.register(lambda: print('atexit ran', flush=False))\nprint('buffered', end='')", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("buffered") and "Usage" in proc.stdout and proc.stdout.endswith("atexit ran\n")
    assert "not reached" not in proc.stdout


def test_exit_statuses_pass_through():
    assert _run("", "nosuch").returncode == 2
    message = _run("cli.main = lambda: sys.exit('stopped here')")
    assert message.returncode == 1 and message.stderr == "stopped here\n"
    assert _run("cli.main = lambda: sys.exit(3)").returncode == 3
    crash = _run("cli.main = lambda: 1 / 0")
    assert crash.returncode == 1 and "ZeroDivisionError" in crash.stderr


def test_a_running_thread_is_waited_for():
    body = "threading.Thread(target=lambda: (time.sleep(0.5), print('thread done', flush=True))).start()"
    proc = _run(body, "--help")
    assert proc.returncode == 0 and "thread done" in proc.stdout, proc.stderr
