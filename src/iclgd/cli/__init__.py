"""The command line: a thin layer that parses arguments and calls the Python API.

Each concern registers its commands from its own module (``cli/compare.py``, ``cli/data.py``,
``cli/linreg.py``, ``cli/models.py``, ``cli/pretrain.py``, ``cli/weights.py``). A :class:`~iclgd.errors.UserError`
anywhere, and any usage error (unknown option or command, a value of the wrong type, a missing argument), becomes
one line on stderr and exit status 2; nothing has been written by then.
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys
import threading

import typer

from iclgd.errors import UserError

app = typer.Typer(
    name="iclgd",
    help="Do pretrained transformers learn in context by gradient descent? Compare ICL and GD inside any causal LM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules that add commands to `app`, each through its register(app).
_COMMAND_MODULES = ("compare", "data", "linreg", "models", "pretrain", "report", "weights")
_registered = False


def _register() -> None:
    """Add every module's commands once (main() may run many times in one process, as in the tests)."""
    global _registered
    if _registered:
        return
    for name in _COMMAND_MODULES:
        importlib.import_module(f"iclgd.cli.{name}").register(app)
    _registered = True


def _command_path(args: list[str]) -> str:
    """The command that ``args`` name (``iclgd models fetch``): the subcommand words before the first other one."""
    words, group = ["iclgd"], typer.main.get_command(app)
    for arg in args:
        command = getattr(group, "commands", {}).get(arg)
        if command is None:
            break
        words.append(arg)
        group = command
    return " ".join(words)


def _usage_line(err: typer.TyperException, args: list[str]) -> str:
    """typer's usage error (its own copy of click's) as one line that points at the command's help. Some errors
    (an option missing its value) come without the command's context: the command is then read from ``args``."""
    ctx = getattr(err, "ctx", None)
    command = ctx.command_path if ctx is not None else _command_path(args)
    return f"error: {' '.join(err.format_message().split())} (see {command} --help)"


def main() -> None:
    """Run the CLI: bad input of any kind (our UserError, a typer usage error) is one stderr line and status 2."""
    _register()
    try:
        code = app(standalone_mode=False, prog_name="iclgd")
    except UserError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)
    except typer.TyperException as err:  # typer 0.29 raises its own copy of click's UsageError, BadParameter...
        if type(err).__name__ == "NoArgsIsHelpError":
            sys.exit(0)  # `iclgd` or `iclgd linreg` alone: the help is printed, as asked for
        print(_usage_line(err, sys.argv[1:]), file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(1)
    if isinstance(code, int) and code:  # typer.Exit(n) and Ctrl-C (130) come back as a return value
        sys.exit(code)


def run() -> None:
    """The ``iclgd`` process (``python -m iclgd`` and the console script): :func:`main`, then an exit that skips
    the interpreter's teardown. With torch and transformers loaded, that teardown (a last garbage collection over
    every object of both libraries) takes over a second of each command; by then every file iclgd writes is
    closed. The atexit handlers still run (logging, Ray, temporary folders). The exit is the ordinary one where
    something may still need the interpreter: a thread other than the main one still running, a profiler or
    debugger attached (``python -m cProfile -m iclgd ...`` writes its profile after this returns), ``python -i``."""
    try:
        main()
        code = 0
    except SystemExit as stop:
        code = stop.code
    if code is None:
        code = 0
    elif not isinstance(code, int):  # what sys.exit("message") does: the message on stderr, status 1
        print(code, file=sys.stderr)
        code = 1
    others_running = any(t.is_alive() and not t.daemon for t in threading.enumerate()
                         if t is not threading.main_thread())
    if others_running or sys.getprofile() is not None or sys.gettrace() is not None or sys.flags.inspect:
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # `iclgd ... | head` closed the pipe: nothing more can reach it
            pass
        except OSError:  # a full disk under a redirected stdout: output lost, so not a success (as Python's 120)
            code = code or 120
    os._exit(code)
