"""What the CLI does to a flag's text before it reaches a config."""

from iclgd.cli.compare import unescape


def test_separator_escapes_mean_what_they_do_in_a_task_files_double_quotes():
    """A shell passes --separator '\\n' as a backslash and an n; a task file's "\\n" is a newline."""
    assert unescape(r"\n") == "\n" and unescape(r"\n\n") == "\n\n" and unescape(r"\t|") == "\t|"
    assert unescape(r"a\\nb") == "a\\nb"  # an escaped backslash stays one backslash, then n
    assert unescape("\n") == "\n" and unescape(r"\x") == r"\x" and unescape(None) is None


def test_compare_takes_no_progress_and_passes_it_on(monkeypatch):
    import sys

    import pytest

    import iclgd.experiments.run as run
    from iclgd.cli import main

    seen = {}

    def fake_run_and_store(cfg, *, show_progress=True):
        seen["show_progress"] = show_progress
        raise SystemExit(0)

    monkeypatch.setattr(run, "run_and_store", fake_run_and_store)
    monkeypatch.setattr(sys, "argv", ["iclgd", "compare", "--model", "m", "--task", "sst2", "--lr", "0.01",
                                      "--no-progress"])
    with pytest.raises(SystemExit):
        main()
    assert seen == {"show_progress": False}


def test_an_option_missing_its_value_points_at_its_own_commands_help(monkeypatch, capsys):
    """click raises this error without the command's context: the command is read from the arguments."""
    import sys

    import pytest

    from iclgd.cli import main

    for argv, command in ((["momentum", "--momentum"], "iclgd momentum"),
                          (["models", "fetch", "--wheels"], "iclgd models fetch"),
                          (["--out"], "iclgd")):
        monkeypatch.setattr(sys, "argv", ["iclgd", *argv])
        with pytest.raises(SystemExit) as stop:
            main()
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.count("\n") == 1
        assert err.endswith(f"(see {command} --help)\n"), err
