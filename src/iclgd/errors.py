"""One error type for bad user input: the CLI prints its message on one line and exits with status 2.

:func:`warn` is its mild sibling: input that we accept but change (an eval size larger than the split), said
on one stderr line so that it is never silent.
"""

import sys


class UserError(Exception):
    """Bad input from the user. The message says what was wrong, where, and what to do."""

    exit_code = 2


def warn(message: str) -> None:
    """One line on stderr: ``warning: <message>``."""
    print(f"warning: {' '.join(message.split())}", file=sys.stderr, flush=True)


_SAID: set[tuple] = set()  # the keys warn_once has said in this process


def warn_once(key: tuple, message: str) -> None:
    """:func:`warn`, once per process for each ``key``: what holds for a whole sweep (a task's split, a k, a
    setting) would otherwise be said again by each of its units."""
    if key not in _SAID:
        _SAID.add(key)
        warn(message)
