import pytest
from rich.console import Console

from iclgd.errors import UserError
from iclgd.report import PAPERS, paper_lines, paper_table, summary_rows, summary_table
from iclgd.report.tables import cell, side_by_side_table, task_key
from iclgd.runner import UnitResult, metric_row, open_results, write_unit


def render(table) -> str:
    console = Console(record=True, width=400)
    console.print(table)
    return console.export_text()


def _row(rows, **match):
    found = [row for row in rows if all(row[k] == v for k, v in match.items())]
    assert len(found) == 1, found
    return found[0]


def _ours_of(lines, label):
    return [x for x in lines if x.row.label == label and x.source == "ours"]


def test_summary_per_unit_reads_the_layer_means(con):
    rows = summary_rows(con)
    assert len(rows) == 11
    row = _row(rows, task="sst2", seed=2, variant="trained")
    assert row["acc ICL"].mean == pytest.approx(0.8) and row["acc ICL"].std is None
    assert row["SimAOU"].mean == pytest.approx(0.4)  # mean of 2 * [0.1, 0.2, 0.3]
    assert row["SimAOU_norm"].mean == pytest.approx(0.22)
    assert row["SimAM_Δ"].mean == pytest.approx(0.3)
    assert row["SimAM before"].mean == pytest.approx(0.25)  # stored under method "icl"
    assert row["Kendall"].mean == pytest.approx(0.3)
    assert row["Rec2FTP"].mean == pytest.approx(70)
    assert row["α"] is None
    assert row["true_k"] == {5}
    assert _row(summary_rows(con, ft_method="lcgd"), task="sst2", seed=2, variant="trained")["SimAM_Δ"].mean == 0.5


def test_summary_over_seeds_is_mean_and_sample_std(con):
    rows = summary_rows(con, over=("seed",), where="variant = 'trained'")
    assert [row["task"] for row in rows] == ["cb", "sst2", "toy"]
    sst2 = _row(rows, task="sst2")
    assert sst2["n"] == 3
    assert (sst2["acc ICL"].mean, sst2["acc ICL"].std) == pytest.approx((0.8, 0.1))  # 0.7, 0.8, 0.9
    assert (sst2["SimAOU"].mean, sst2["SimAOU"].std) == pytest.approx((0.4, 0.2))  # 0.2, 0.4, 0.6
    assert (sst2["Rec2FTP"].mean, sst2["Rec2FTP"].std) == pytest.approx((70, 10))
    assert sst2["true_k"] == {4, 5, 6}
    text = render(summary_table(con, over=("seed",), where="variant = 'trained'"))
    assert "80.0 ± 10.0" in text and "0.400 ± 0.200" in text and "70.00 ± 10.00" in text
    assert "4–6" in text  # true k over seeds
    assert "model=tiny" in text and "variant=trained" in text  # constant keys go to the caption
    assert "α" not in text and "fv-acc" not in text  # columns without any value are left out


def test_summary_errors(con):
    with pytest.raises(UserError, match="cannot average over"):
        summary_rows(con, over=("layer",))
    with pytest.raises(UserError, match="no metrics match"):
        summary_table(con, where="task = 'nope'")
    with pytest.raises(UserError, match="query failed"):
        summary_table(con, where="nonsense_column = 1")


def test_task_names_match_the_papers():
    assert [task_key(t) for t in ("SST2", "sst-2", "tasks/ag_news.yaml", "AGNews", "Subj")] == [
        "sst2", "sst2", "agnews", "agnews", "subj"]


def _line(lines, label, source, model=None):
    found = [x for x in lines if x.row.label == label and x.source == source and (model is None or x.model == model)]
    assert len(found) == 1, found
    return found[0]


def test_dai_table_ours_beside_published(con):
    lines = paper_lines(con, "dai2023")
    ours = _line(lines, "SimAOU_norm", "ours")
    assert ours.model == "tiny"
    assert ours.values == pytest.approx({"SST2": 0.22, "CB": 0.32, "toy": 0.42})  # mean over seeds 1-3
    assert ours.avg == pytest.approx(0.27)  # over the paper's tasks only (SST2, CB)
    assert _line(lines, "ZSL accuracy (%)", "ours").values["SST2"] == pytest.approx(50.0)
    published = _line(lines, "SimAOU_norm", "published", "1.3B")
    assert published.values["SST2"] == 0.110 and published.avg == 0.186
    assert _line(lines, "Rec2FTP", "published", "2.7B").values["CB"] == 100.0
    assert not [x for x in lines if x.row.label == "SimAOU random" and x.source == "ours"]  # not in our results
    text = render(paper_table(con, "dai2023"))
    header = next(line for line in text.splitlines() if "SST2" in line)
    columns = ["metric", "model", "source", "SST2", "SST5", "MR", "Subj", "AGNews", "CB", "toy", "Avg"]
    assert header.replace("┃", " ").split() == columns
    assert "0.220" in text and "0.186" in text and "published" in text
    toy_only = paper_lines(con, "dai2023", where="task = 'toy'")
    assert _line(toy_only, "SimAOU_norm", "ours").avg == pytest.approx(0.42)


def test_deutch_table_includes_untrained_baselines(con):
    lines = paper_lines(con, "deutch2024")
    assert _line(lines, "SimAM_Δ LCGD", "ours").values["SST2"] == pytest.approx(0.5)
    assert _line(lines, "SimAOU no training (all random)", "ours").values == pytest.approx({"SST2": 0.05})
    assert _line(lines, "SimAM_Δ trained embeddings", "ours").values == pytest.approx({"SST2": 0.12})
    # Both readings of "No Training" sit beside the one published row; these results hold only `all`.
    for reading in ("all random", "norms kept"):
        no_training = _line(lines, f"SimAOU no training ({reading})", "published")
        assert no_training.values["Subj"] == 0.17 and "AGNews" not in no_training.values
    assert not [x for x in lines if x.row.label == "SimAOU no training (norms kept)" and x.source == "ours"]
    text = render(paper_table(con, "deutch2024", where="seed = 1"))
    assert "0.09" in text and "0.050" in text


def test_paper_tables_show_the_spread_over_units_or_a_lone_units_interval(con, tmp_path):
    sst2 = _line(paper_lines(con, "deutch2024"), "SimAOU GD", "ours").cells["SST2"]
    assert (sst2.mean, sst2.std, sst2.n) == pytest.approx((0.4, 0.2, 3))  # seeds 1-3: 0.2, 0.4, 0.6
    assert "0.400 ± 0.200" in render(paper_table(con, "deutch2024"))
    keys = dict(model="tiny", variant="trained", task="sst2", template=0, seed=1, order=0, k=4, true_k=4)
    write_unit(tmp_path, "u", {"task": "sst2"}, UnitResult(
        metrics=[metric_row("accuracy", 0.75, 40, method="icl", ci=(0.6, 0.875), **keys)], predictions=[]))
    text = render(paper_table(open_results(tmp_path), "dai2023"))
    assert "75.0 [60.0, 87.5]" in text and "mean ± std (ddof=1) over a task's units" in text


def test_paper_tables_keep_units_of_other_settings_on_lines_of_their_own(tmp_path):
    """Two sst2 units at k = 4, lr 0.01 and k = 32, lr 0.5 are two lines, not one mean ± std; an lr set per task
    (Dai's published ones) stays one line."""
    def unit(name, task, k, lr, value):
        keys = dict(model="tiny", variant="trained", task=task, template=0, seed=1, order=0, k=k, true_k=k)
        write_unit(tmp_path, name, {"task": task, "shots": k, "lr": lr, "seed": 1}, UnitResult(
            metrics=[metric_row("simaou_norm", value, 10, method="gd", ci=(value - 0.05, value + 0.05), **keys)],
            predictions=[]))

    unit("a", "sst2", 4, 0.01, 0.1)
    unit("b", "sst2", 32, 0.5, 0.9)
    unit("c", "sst2", 4, 0.02, 0.3)
    lines = [x for x in paper_lines(open_results(tmp_path), "dai2023") if x.source == "ours"]
    assert sorted((x.model, x.values["SST2"]) for x in lines) == [("tiny (lr=0.01, shots=4)", pytest.approx(0.1)),
                                                                  ("tiny (lr=0.02, shots=4)", pytest.approx(0.3)),
                                                                  ("tiny (shots=32)", pytest.approx(0.9))]
    other = tmp_path / "per-task"
    for name, task, lr, value in (("a", "sst2", 0.01, 0.1), ("b", "cb", 0.5, 0.3)):
        keys = dict(model="tiny", variant="trained", task=task, template=0, seed=1, order=0, k=4, true_k=4)
        write_unit(other, name, {"task": task, "shots": 4, "lr": lr, "seed": 1}, UnitResult(
            metrics=[metric_row("simaou_norm", value, 10, method="gd", **keys)], predictions=[]))
    (line,) = [x for x in paper_lines(open_results(other), "dai2023") if x.source == "ours"]
    assert line.model == "tiny" and line.values == pytest.approx({"SST2": 0.1, "CB": 0.3})


def test_untrained_variants_over_several_k_keep_one_line_per_k(tmp_path):
    """An untrained variant inherits each trained unit's lr, one per (task, k, seed): within a k it is pooled like
    the seed, so two tasks x two k x two seeds give two lines per row, the trained and the untrained alike."""
    for task in ("sst2", "cb"):
        for k in (4, 8):
            for seed in (1, 2):
                lr = 0.001 * (k + seed + len(task))  # searched: a different lr for every trained unit
                for variant, untrained in (("trained", None), ("untrained:all", "all")):
                    keys = dict(model="tiny", variant=variant, task=task, template=0, seed=seed, order=0, k=k,
                                true_k=k)
                    config = {"task": task, "shots": k, "seed": seed, "lr": lr, "untrained": untrained}
                    write_unit(tmp_path, f"{task}-{k}-{seed}-{untrained}", config, UnitResult(
                        metrics=[metric_row("simaou", 0.1 * seed + k, 10, method="gd", **keys)], predictions=[]))
    lines = paper_lines(open_results(tmp_path), "deutch2024")
    for label in ("SimAOU GD", "SimAOU no training (all random)"):
        ours = sorted((x.model, x.values["SST2"], x.values["CB"]) for x in _ours_of(lines, label))
        assert ours == [("tiny (shots=4)", pytest.approx(4.15), pytest.approx(4.15)),
                        ("tiny (shots=8)", pytest.approx(8.15), pytest.approx(8.15))]


def test_published_rows_have_a_computed_row_and_six_tasks():
    for paper in PAPERS.values():
        labels = {row.published_label for block in paper.blocks for row in block}
        for published in paper.published:
            assert published.label in labels
            assert set(published.values) <= set(paper.tasks)
            if published.avg is not None:  # the printed Avg is the mean of the printed cells
                mean = sum(published.values.values()) / len(published.values)
                assert mean == pytest.approx(published.avg, abs=0.006)


def test_unknown_paper(con):
    with pytest.raises(UserError, match="dai2023, deutch2024"):
        paper_table(con, "smith2020")


def test_side_by_side_flags_columns_without_icl():
    from iclgd.report.tables import shows_icl

    def cells(**acc):
        return {f"acc {name}": cell([value]) for name, value in acc.items()}

    assert shows_icl(cells(majority=0.3, ZS=0.5, ICL=0.7))
    assert not shows_icl(cells(majority=0.3, ZS=0.5, ICL=0.5))  # ICL not above ZS
    assert not shows_icl(cells(majority=0.6, ZS=0.2, ICL=0.5))  # above ZS, below the most frequent label
    assert not shows_icl(cells(ZS=0.5))  # no ICL accuracy: nothing shown
    # a lone unit: the low end of ICL's interval must clear ZS and the majority, not just its mean
    lone = {"acc majority": cell([0.254]), "acc ZS": cell([0.244], [(0.19, 0.30)])}
    assert not shows_icl(lone | {"acc ICL": cell([0.264], [(0.20, 0.33)])})  # one example above the majority
    assert shows_icl(lone | {"acc ICL": cell([0.87], [(0.82, 0.91)])})


def test_side_by_side_caption_names_the_columns_without_icl(con):
    table = side_by_side_table(con, by="task", where="variant = 'trained' AND seed = 1")
    assert table.caption is None  # every task: ICL 0.7 > ZS 0.5
    flagged = side_by_side_table(con, by="seed", where="variant = 'trained' AND task = 'sst2' AND seed = 1 "
                                                         "AND NOT (metric = 'accuracy' AND method = 'icl')")
    assert "no ICL" in flagged.caption and "1" in flagged.caption


def test_summary_caption_names_the_rows_without_icl(con):
    assert "no ICL" not in summary_table(con, where="variant = 'trained' AND seed = 1").caption
    flagged = summary_table(con, where="variant = 'trained' AND seed = 1 AND NOT (metric = 'accuracy' AND "
                                       "method = 'icl' AND task = 'sst2')")
    assert "no ICL" in flagged.caption and "sst2" in flagged.caption.split("no ICL")[1]


def test_a_lone_unit_shows_its_interval_and_a_group_its_spread():
    assert cell([0.5], [(0.4, 0.6)]).text() == "0.500 [0.400, 0.600]"
    assert cell([0.5], [(0.4, 0.6)]).text(scale=100, digits=1) == "50.0 [40.0, 60.0]"
    assert cell([0.4, 0.6], [(0.3, 0.5), (0.5, 0.7)]).text() == "0.500 ± 0.141"  # over units: mean ± std
    assert cell([0.5], [(None, None)]).text() == "0.500"
    # units without a finite value (Rec2FTP where FT fixed nothing) are named, not silently left out of the mean
    nan = float("nan")
    assert cell([0.0, nan, nan], [(0.0, 0.0), (nan, nan), (nan, nan)]).text() == "0.000 [0.000, 0.000] (1 of 3)"
    assert cell([0.4, 0.6, nan]).text() == "0.500 ± 0.141 (2 of 3)"
    assert cell([nan, None]) is None


def test_a_score_that_does_not_beat_its_baseline_is_marked(tmp_path):
    from iclgd.runner import UnitResult, layer_rows, metric_row, open_results, write_unit

    keys = dict(model="m", variant="trained", task="t", template=0, seed=1, order=0, k=4, true_k=4)
    rows = [metric_row("accuracy", 0.5, 10, method="zs", **keys), metric_row("accuracy", 0.8, 10, method="icl", **keys)]
    rows += layer_rows("simaou_norm", [0.3, 0.3], 10, method="gd", mean_ci=(0.2, 0.4), **keys)
    rows += layer_rows("simaou", [0.01, 0.01], 10, method="gd", mean_ci=(-0.05, 0.07), **keys)
    rows += [metric_row("simaou_norm_vs_random", 0.29, 10, method="gd", ci=(0.2, 0.38), **keys),
             metric_row("simaou_vs_random", 0.005, 10, method="gd", ci=(-0.04, 0.05), **keys)]
    write_unit(tmp_path, "u", {"seed": 1}, UnitResult(metrics=rows, predictions=[]))
    table = side_by_side_table(open_results(tmp_path), by="unit")
    console = Console(width=200, record=True)
    console.print(table)
    text = console.export_text()
    assert "0.300 [0.200, 0.400]" in text and "0.010† [-0.050, 0.070]" in text and "† not above" in text


def test_over_seed_names_the_column_that_varies_with_it(tmp_path):
    """Deutch et al.'s runs pair each seed with its own order: --over seed alone leaves one unit per row."""
    for seed, order in ((2, 0), (3, 1), (4, 2)):
        keys = dict(model="tiny", variant="trained", task="sst2", template=0, seed=seed, order=order, k=4, true_k=4)
        write_unit(tmp_path, f"u{seed}", {"seed": seed}, UnitResult(
            metrics=[metric_row("accuracy", 0.5 + seed / 10, 10, method="icl", **keys)], predictions=[]))
    con = open_results(tmp_path)
    assert "in order too; --over seed,order averages over them" in summary_table(con, over=("seed",)).caption
    rows = summary_rows(con, over=("seed", "order"))
    assert len(rows) == 1 and rows[0]["n"] == 3 and rows[0]["acc ICL"].std == pytest.approx(0.1)
    assert "averages over them" not in summary_table(con, over=("seed", "order")).caption


def test_summary_keeps_the_rec2ftp_column_where_ft_fixed_nothing(tmp_path):
    """Rec2FTP is undefined where FT fixed no ZS error: the summary shows "—" beside its chance level, as compare
    and the side-by-side table do, instead of dropping the column; without FT neither column shows."""
    from iclgd.runner import UnitResult, metric_row, open_results, write_unit

    keys = dict(model="m", variant="trained", task="t", template=0, seed=1, order=0, k=4, true_k=4)
    rows = [metric_row("accuracy", 0.5, 10, method="zs", **keys), metric_row("accuracy", 0.8, 10, method="icl", **keys),
            metric_row("accuracy", 0.5, 10, method="gd", **keys),
            metric_row("rec2ftp_chance", 40, 5, method="gd", **keys)]
    write_unit(tmp_path / "ft", "u", {"seed": 1}, UnitResult(metrics=rows, predictions=[]))
    table = summary_table(open_results(tmp_path / "ft"))
    headers = [column.header for column in table.columns]
    assert "Rec2FTP" in headers and "Rec2FTP chance" in headers
    assert list(table.columns[headers.index("Rec2FTP")].cells) == ["—"]
    write_unit(tmp_path / "icl", "u", {"seed": 1}, UnitResult(metrics=rows[:2], predictions=[]))
    assert "Rec2FTP" not in [column.header for column in summary_table(open_results(tmp_path / "icl")).columns]


def test_over_seed_never_averages_across_other_settings(tmp_path):
    """Units that differ in a config field that is no key column (lr here; epochs, ft_shots, methods alike) are
    never pooled: --over seed keeps them apart and names the field that differs."""
    for name, seed, lr, accuracy in (("a", 1, 0.01, 0.875), ("b", 1, 0.05, 0.5), ("c", 2, 0.01, 0.625)):
        keys = dict(model="m", variant="trained", task="t", template=0, seed=seed, order=0, k=4, true_k=4)
        write_unit(tmp_path, name, {"seed": seed, "lr": lr, "batch_size": seed}, UnitResult(
            metrics=[metric_row("accuracy", accuracy, 8, method="icl", **keys)], predictions=[]))
    con = open_results(tmp_path)
    rows = summary_rows(con, over=("seed",))
    assert len(rows) == 2
    assert _row(rows, setting="lr=0.01")["n"] == 2 and _row(rows, setting="lr=0.01")["acc ICL"].mean == 0.75
    assert _row(rows, setting="lr=0.05")["n"] == 1
    text = render(summary_table(con, over=("seed",)))
    assert "setting" in text and "lr=0.05" in text  # batch_size changes no value: not a setting
    side = render(side_by_side_table(con, by="variant"))
    assert "trained (lr=0.01)" in side and "trained (lr=0.05)" in side


def test_a_setting_decided_by_the_pooled_columns_is_pooled_with_them(tmp_path):
    """An lr searched per seed, or an untrained unit's lr inherited from its seed's trained unit (Deutch et al.),
    is one value per seed: --over seed averages over it, as over the seed, and names no setting."""
    for name, seed, lr in (("d", 1, 0.01), ("e", 2, 0.05)):
        keys = dict(model="m", variant="untrained:all", task="t", template=0, seed=seed, order=0, k=4, true_k=4)
        write_unit(tmp_path, name, {"seed": seed, "lr": lr}, UnitResult(
            metrics=[metric_row("accuracy", 0.5, 8, method="icl", **keys)], predictions=[]))
    rows = summary_rows(open_results(tmp_path), over=("seed",))
    assert len(rows) == 1 and rows[0]["n"] == 2 and rows[0]["setting"] == ""
    assert "setting" not in render(summary_table(open_results(tmp_path), over=("seed",)))



def test_a_trained_model_is_never_averaged_with_its_untrained_variants(con):
    """--over variant is refused, the every-row-is-one-unit hint never suggests it, and a side-by-side table by
    task keeps the variants in columns of their own."""
    with pytest.raises(UserError, match=r"cannot average over \['variant'\] \(a trained model and its untrained"):
        summary_rows(con, over=("seed", "variant"))
    text = render(summary_table(con, over=("seed",), where="task = 'sst2' AND seed = 1"))
    assert "averages over them" not in text  # the units differ only in the variant: no column to add to --over
    side = render(side_by_side_table(con, by="task", where="task = 'sst2' AND seed = 1"))
    header = next(line for line in side.splitlines() if "metric" in line)
    assert "untrained:all" in header and "untrained:trained_embeddings" in header


def _seeds_with_icl(tmp_path, icl_by_seed: dict[int, float], variant: str = "trained"):
    """One unit per seed: ZS 0.5, majority 0.3, ICL as given with a ±0.05 interval."""
    for seed, icl in icl_by_seed.items():
        keys = dict(model="tiny", variant=variant, task="sst2", template=0, seed=seed, order=0, k=4, true_k=4)
        rows = [metric_row("accuracy", 0.3, 10, method="majority", **keys),
                metric_row("accuracy", 0.5, 10, method="zs", ci=(0.4, 0.6), **keys),
                metric_row("accuracy", icl, 10, method="icl", ci=(icl - 0.05, icl + 0.05), **keys),
                metric_row("simaou_norm", 0.2, 10, method="gd", **keys)]
        write_unit(tmp_path, f"{variant}-unit-with-a-long-id-{seed}", {"seed": seed},
                   UnitResult(metrics=rows, predictions=[]))
    return open_results(tmp_path)


def test_a_mean_over_seeds_does_not_hide_the_seeds_without_icl(tmp_path):
    """ICL 0.9, 0.52, 0.52 over ZS 0.5: the mean (0.65) clears ZS, but two seeds alone show no ICL; the row says so."""
    con = _seeds_with_icl(tmp_path, {1: 0.9, 2: 0.52, 3: 0.52})
    table = summary_table(con, over=("seed",))
    assert "no ICL" in table.caption and "(2 of 3 units)" in table.caption
    assert "mean ± std over seed" in table.title and "where a row is one unit" in table.title
    assert "(2 of 3 units)" in side_by_side_table(con, by="variant").caption
    per_unit = summary_table(con)
    assert "no ICL" in per_unit.caption and "of 3 units" not in per_unit.caption
    assert "mean ± std" not in per_unit.title
    assert "no ICL" not in summary_table(con, where="seed = 1").caption


def test_the_unit_column_shows_only_where_nothing_else_tells_rows_apart(tmp_path):
    """A unit id is ~45 characters: in a table of seeds it crowded every number out of an 80-240 column terminal."""
    con = _seeds_with_icl(tmp_path, {1: 0.9, 2: 0.8, 3: 0.7})
    columns = [column.header for column in summary_table(con).columns]
    assert "seed" in columns and "unit" not in columns
    keys = dict(model="tiny", variant="trained", task="sst2", template=0, seed=1, order=0, k=4, true_k=4)
    for name, value in (("unit-a", 0.9), ("unit-b", 0.8)):  # the same keys: only the unit id tells them apart
        write_unit(tmp_path / "twins", name, {"seed": 1}, UnitResult(
            metrics=[metric_row("accuracy", value, 10, method="icl", **keys)], predictions=[]))
    assert "unit" in [column.header for column in summary_table(open_results(tmp_path / "twins")).columns]


def test_reports_piped_to_a_file_honour_columns(monkeypatch):
    from iclgd.report.console import console

    monkeypatch.delenv("COLUMNS", raising=False)
    assert console().width == 4000  # pytest's stdout is not a terminal: no table is cut
    monkeypatch.setenv("COLUMNS", "400")
    assert console().width == 400
