"""The command line: a thin layer that parses arguments and calls the Python API.

Each concern registers its commands from its own module (``cli/compare.py``, ``cli/data.py``,
``cli/linreg.py``, ``cli/models.py``, ``cli/pretrain.py``). A :class:`~iclgd.errors.UserError` anywhere becomes one
line on stderr and exit status 2.
"""

from __future__ import annotations

import importlib
import sys

import typer

from iclgd.errors import UserError

app = typer.Typer(
    name="iclgd",
    help="Do pretrained transformers learn in context by gradient descent? Compare ICL and GD inside any causal LM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules that add commands to `app`; a module not written yet is skipped.
_COMMAND_MODULES = ("compare", "data", "linreg", "models", "pretrain", "report")


def _register() -> None:
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"iclgd.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"iclgd.cli.{name}":
                continue
            raise
        module.register(app)


def main() -> None:
    _register()
    try:
        app(standalone_mode=False)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except SystemExit:
        raise
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except Exception as err:  # click usage errors carry their own exit code
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(2)
        if isinstance(err, click.exceptions.Abort):
            sys.exit(1)
        raise
