"""icl-curve: its accuracy against a direct forward pass, the shipped checkpoint's ICL, the task files, the CLI."""

import sys
from pathlib import Path

import duckdb
import pytest
import torch
from rich.console import Console

import iclgd
from iclgd.errors import UserError
from iclgd.experiments.icl_curve import CurvePoint, icl_curve
from iclgd.report.curves import mean_by_k, plot_curve
from iclgd.synthetic.pretrain.icc import HELDOUT_MAPPINGS
from iclgd.synthetic.pretrain.task_files import TASKS_PACKAGE, builtin_task_files, task_file_contents

SHIPPED = Path(iclgd.__file__).parent / "assets" / "icc-gpt2"
EXEMPLARS = Path(iclgd.__file__).parent / "assets" / "icc-exemplars-gpt2"


@pytest.fixture(scope="module")
def shipped():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(SHIPPED).eval(), AutoTokenizer.from_pretrained(SHIPPED)


@pytest.mark.parametrize("folder", [SHIPPED, EXEMPLARS])
def test_shipped_checkpoint_is_small_and_complete(folder):
    files = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "pretrain.yaml",
            "log.csv", "README.md"} <= files
    assert (folder / "model.safetensors").stat().st_size < 3_000_000
    assert "checkpoint.pt" not in files  # the optimizer state does not ship


def test_curve_point_equals_a_direct_forward_pass(shipped):
    """Hand-built: [BOS] x y \\n ... x y \\n x_test, argmax over the two label tokens' logits."""
    from iclgd.experiments.compare import select_rows
    from iclgd.experiments.config import CompareConfig

    model, tokenizer = shipped
    k, seed = 4, 1
    rows = select_rows(CompareConfig(model=str(SHIPPED), task="icc-heldout", shots=k, seed=seed, eval_size=30))
    word = tokenizer.convert_tokens_to_ids
    labels = list(rows.task.label_words)  # label names in the task's order
    prefix = [tokenizer.eos_token_id]
    for i in rows.demo_rows:
        prefix += [word(rows.pool[i].text_fields["text"]), word(rows.pool[i].label), word("\n")]
    correct = 0
    for row in rows.eval_rows:
        with torch.no_grad():
            logits = model(torch.tensor([prefix + [word(row.text_fields["text"])]])).logits[0, -1]
        predicted = labels[int(logits[[word(name) for name in labels]].argmax())]
        correct += predicted == row.label
    (point,) = icl_curve(str(SHIPPED), "icc-heldout", ks=(k,), seeds=(seed,), eval_size=30)
    assert point.true_k == k and point.n_eval == 30
    assert point.accuracy == pytest.approx(correct / 30)


def test_shipped_model_learns_heldout_mappings_in_context():
    points = icl_curve(str(SHIPPED), "icc-heldout", ks=(0, 16), seeds=(0, 1), untrained=("all",), eval_size=100)
    means = mean_by_k(points)
    assert 0.3 <= means["trained"][0] <= 0.7  # no prior: zero-shot at chance
    assert means["trained"][16] >= 0.9
    assert 0.3 <= means["all"][16] <= 0.7  # the untrained model stays at chance


def test_exemplar_model_answers_queries_its_demos_never_show():
    """icc-exemplars-gpt2: 72 query tokens, none among the demos; ICL near the ceiling at k = 16, an untrained model
    at chance. Zero-shot knows nothing of the mapping (its labels are uniform in pretraining), but each input's 12
    query exemplars share one arbitrary preference between the two labels, so zero-shot moves in steps of ~1/6 and
    is bounded above only (0.139 for the shipped seed)."""
    points = icl_curve(str(EXEMPLARS), "icc-exemplars-heldout", ks=(0, 16), seeds=(0, 1), untrained=("all",),
                       eval_size=216)
    assert {p.n_eval for p in points} == {216}
    means = mean_by_k(points)
    assert means["trained"][0] <= 0.6 and means["trained"][16] >= 0.9
    assert 0.35 <= means["all"][16] <= 0.65


def test_shipped_model_has_a_prior_on_prior_inputs():
    means = mean_by_k(icl_curve(str(SHIPPED), "icc-prior", ks=(0,), seeds=(0,), eval_size=100))
    assert means["trained"][0] >= 0.75


def test_bad_k_and_variant():
    with pytest.raises(UserError, match="k values"):
        icl_curve(str(SHIPPED), "icc-heldout", ks=(-1,))
    with pytest.raises(UserError):
        icl_curve(str(SHIPPED), "icc-heldout", ks=(1,), untrained=("half",))
    with pytest.raises(UserError, match="only 64 rows"):
        icl_curve(str(SHIPPED), "icc-heldout", ks=(65,))


def test_plot_and_table_helpers(tmp_path):
    points = [CurvePoint("trained", k, k, s, a, 10) for k, s, a in [(0, 0, 0.5), (0, 1, 0.4), (4, 0, 0.9), (4, 1, 1.0)]]
    assert mean_by_k(points) == {"trained": {0: pytest.approx(0.45), 4: pytest.approx(0.95)}}
    paths = plot_curve(points, tmp_path / "curve", title="t", chance=0.5)
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths) and {p.suffix for p in paths} == {".png", ".pdf"}


def test_shipped_task_files_are_regenerated_exactly():
    for task in builtin_task_files():
        for relative, text in task_file_contents(task).items():
            assert (TASKS_PACKAGE / relative).read_text(encoding="utf-8") == text, relative


def test_task_files_load_and_label_words_are_single_tokens(shipped):
    from iclgd.tasks import load_splits, load_task

    _, tokenizer = shipped
    for name, mapping in HELDOUT_MAPPINGS.items():
        task = load_task(name)
        data = load_splits(task)
        assert {row.text_fields["text"]: row.label for row in data.pool} == mapping
        assert all(len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1 for w in task.label_words.values())
        assert sorted(row.label for row in data.eval).count(next(iter(task.label_words))) == len(data.eval) // 2
    assert load_task("icc-heldout").separator == "\n" and load_task("ginc-l3").separator == " /"


def test_exemplar_task_queries_are_64_or_more_tokens_never_in_the_pool():
    from iclgd.synthetic.pretrain.icc import ICCExemplars
    from iclgd.synthetic.pretrain.tokenizer import build_tokenizer
    from iclgd.tasks import load_splits, load_task

    corpus = ICCExemplars()
    demos, queries = corpus.heldout_words("icc-exemplars-heldout")
    data = load_splits(load_task("icc-exemplars-heldout"))
    pool = {row.text_fields["text"]: row.label for row in data.pool}
    tests = {row.text_fields["text"]: row.label for row in data.eval}
    assert pool.items() <= demos.items() and tests == queries and len(tests) >= 64 and not set(pool) & set(tests)
    assert [row.label for row in data.eval].count("L1") == len(data.eval) // 2  # balanced, each query 3 times
    tokenizer = build_tokenizer(corpus.words)
    assert all(len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1 for w in [*pool, *tests])


def test_cli_icl_curve(tmp_path, monkeypatch, capsys):
    from iclgd.cli import main

    monkeypatch.setattr(sys, "argv", ["iclgd", "icl-curve", "--model", str(SHIPPED), "--task", "icc-heldout",
                                      "--k", "0", "--k", "4", "--seeds", "2", "--eval-size", "20",
                                      "--untrained", "all", "--no-progress", "--out", str(tmp_path / "curve")])
    main()
    out = capsys.readouterr().out
    assert "trained" in out and "all" in out
    assert (tmp_path / "curve" / "curve.png").is_file() and (tmp_path / "curve" / "curve.pdf").is_file()
    rows = duckdb.sql(f"SELECT variant, k, count(*) FROM '{tmp_path / 'curve' / 'curve.parquet'}' "
                      "GROUP BY ALL ORDER BY ALL").fetchall()
    assert rows == [("all", 0, 2), ("all", 4, 2), ("trained", 0, 2), ("trained", 4, 2)]


def test_cli_icl_curve_bad_task_is_one_line(monkeypatch, capsys):
    from iclgd.cli import main

    monkeypatch.setattr(sys, "argv", ["iclgd", "icl-curve", "--model", str(SHIPPED), "--task", "no-such-task"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_k_the_context_cuts_is_said_and_a_repeated_k_is_one_point(capsys):
    """icc-gpt2's 64 positions hold 19 demos: k = 60 is computed at true k 19, and said so; k = 2 twice is one."""
    points = icl_curve(str(SHIPPED), "icc-heldout", ks=(2, 2, 60), seeds=(0, 0), eval_size=4)
    assert [(p.k, p.true_k, p.seed) for p in points] == [(2, 2, 0), (60, 19, 0)]
    assert "fewer demonstrations than asked (k = 60: 19)" in capsys.readouterr().err
    from iclgd.experiments.icl_curve import true_k_text
    from iclgd.report.console import curve_table

    assert true_k_text(points, 60) == "60 (19 fit)" and true_k_text(points, 2) == "2"
    console = Console(record=True, width=120)
    console.print(curve_table(points))
    assert "60 (19 fit)" in console.export_text()  # the table does not present 19 demos as 60


def test_cli_icl_curve_defaults_to_a_folder_per_model_and_logs_each_point(tmp_path, monkeypatch, capsys):
    """Two models' curves on one task no longer overwrite each other; in a log file a line per point."""
    import shutil

    from iclgd.cli import main

    monkeypatch.chdir(tmp_path)
    other = shutil.copytree(SHIPPED, tmp_path / "models" / "icc-copy")  # a second model of the same vocabulary
    for model in (SHIPPED, other):
        monkeypatch.setattr(sys, "argv", ["iclgd", "icl-curve", "--model", str(model), "--task", "icc-heldout",
                                          "--k", "0", "--k", "2", "--seeds", "1", "--eval-size", "4"])
        main()
        assert (tmp_path / "results/icl-curve" / model.name / "icc-heldout" / "curve.parquet").is_file()
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("[1/2, ") and "trained, seed 0, k = 0: accuracy" in line for line in lines)
