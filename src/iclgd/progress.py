"""Progress where it can be seen: rich bars on a terminal, and where stdout is a file (nohup, a batch job's log),
which bars cannot redraw, a plain line per finished piece of work instead."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import Progress


def on_terminal(console: Console) -> bool:
    """Whether ``console`` writes to a terminal (FORCE_COLOR or TTY_COMPATIBLE only make rich think a file is one)."""
    try:
        return console.is_terminal and console.file.isatty()
    except (AttributeError, ValueError):  # a closed or file-like stream without a descriptor
        return False


def log_line(bar: Progress, text: str, task: Any = None) -> None:
    """``text`` as a line of its own where ``bar`` cannot redraw (there it shows only at the end, and a log would stay
    empty for hours), prefixed with ``task``'s count and elapsed time where given: "[3/8, 120 s] ..."."""
    if bar.disable or on_terminal(bar.console):
        return
    if task is not None:
        done = next(t for t in bar.tasks if t.id == task)
        text = f"[{int(done.completed)}/{int(done.total or 0)}, {done.elapsed or 0:.0f} s] {text}"
    bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
