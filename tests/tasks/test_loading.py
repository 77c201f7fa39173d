import hashlib
import json
import re
import textwrap

import pyarrow.parquet as pq
import pytest

from iclgd.errors import UserError
from iclgd.tasks import FIXTURES_DIR, load_splits, load_task, read_task_file, render_input

NATURAL = ("sst2", "sst5", "mr", "subj", "agnews", "cb", "rte")
# Real hub schemas: the columns in order, and the ClassLabel names in index order (None: SetFit's int label).
SCHEMA = {
    "sst2": (["sentence", "label", "idx"], ["negative", "positive"]),
    "sst5": (["text", "label", "label_text"], None),
    "mr": (["text", "label"], ["neg", "pos"]),
    "subj": (["text", "label", "label_text"], None),
    "agnews": (["text", "label"], ["World", "Sports", "Business", "Sci/Tech"]),
    "cb": (["premise", "hypothesis", "idx", "label"], ["entailment", "contradiction", "neutral"]),
    "rte": (["sentence1", "sentence2", "label", "idx"], ["entailment", "not_entailment"]),
}


@pytest.mark.parametrize("name", NATURAL)
def test_fixtures_have_the_real_schema(name):
    import datasets

    task = load_task(name)
    columns, class_names = SCHEMA[name]
    for split in task.splits:
        table = pq.read_table(FIXTURES_DIR / name / f"{split}.parquet")
        features = datasets.Features.from_arrow_schema(table.schema)
        assert list(features) == columns
        if class_names is None:
            assert features["label"] == datasets.Value("int64") and features["label_text"] == datasets.Value("string")
            # SetFit: the integer label and the label text agree row by row
            pairs = set(zip(table["label"].to_pylist(), table["label_text"].to_pylist(), strict=True))
            assert len({label for label, _ in pairs}) == len(pairs) == len(task.label_words)
        else:
            assert features["label"].names == class_names
        assert 40 <= table.num_rows <= 60 if split == task.training_split else 20 <= table.num_rows <= 30


@pytest.mark.parametrize("name", NATURAL)
def test_every_natural_task_loads_from_fixtures(name):
    task = load_task(name)
    data = load_splits(task, fixtures=True)
    assert data.revision == "fixture" and data.source == str(FIXTURES_DIR / name)
    assert set(e.label for e in data.pool) == set(task.label_words) == set(e.label for e in data.eval)
    assert all(e.row == i for i, e in enumerate(data.pool))
    text = render_input(task.template(), data.eval[0])
    assert text.endswith(task.templates[0][-6:]) and "{" not in text


def test_labels_are_mapped_by_name_not_index():
    data = load_splits(load_task("agnews"), fixtures=True)
    table = pq.read_table(FIXTURES_DIR / "agnews" / "train.parquet")
    names = SCHEMA["agnews"][1]
    assert [e.label for e in data.pool] == [names[i] for i in table["label"].to_pylist()]
    sst5 = load_splits(load_task("sst5"), fixtures=True)
    table = pq.read_table(FIXTURES_DIR / "sst5" / "train.parquet")
    assert [e.label for e in sst5.pool] == table["label_text"].to_pylist()
    assert "label" not in sst5.pool[0].text_fields and "label_text" not in sst5.pool[0].text_fields


def test_sst2_raw_text_keeps_its_trailing_space():
    data = load_splits(load_task("sst2"), fixtures=True)
    sentences = pq.read_table(FIXTURES_DIR / "sst2" / "train.parquet")["sentence"].to_pylist()
    assert all(s.endswith(" ") for s in sentences)
    assert [e.text_fields["sentence"] for e in data.pool] == sentences
    assert render_input(load_task("sst2").template(), data.pool[0]) == f"Sentence: {sentences[0]} Label:"


def _local_task(tmp_path, body: str):
    path = tmp_path / "tasks" / "t.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return read_task_file(path)


def _over_d(choices: str) -> str:
    """A task over ``../d/{train,test}.*`` (beside the task file) with the template "{text}:" and ``choices``."""
    return ('task: t\ndataset_path: ../d\ntraining_split: train\ntest_split: test\ndoc_to_text: "{text}:"\n'
            f"doc_to_choice: {choices}\n")


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_local_folder_relative_to_task_file_with_text_labels(tmp_path):
    rows = [{"q": f"is {i} even?", "answer": "yes" if i % 2 == 0 else "no"} for i in range(10)]
    _jsonl(tmp_path / "data" / "icc" / "train.jsonl", rows)
    _jsonl(tmp_path / "data" / "icc" / "test.jsonl", rows[:4])
    task = _local_task(tmp_path, """\
        task: icc-demo
        dataset_path: ../data/icc
        training_split: train
        test_split: test
        doc_to_text: "{q} ->"
        label_field: answer
        doc_to_choice: {"no": " no", "yes": " yes"}
        """)
    assert task.is_local and task.local_path == (tmp_path / "data" / "icc").resolve()
    data = load_splits(task, data_dir=tmp_path / "elsewhere")  # data_dir does not apply to local tasks
    assert [e.label for e in data.pool] == [r["answer"] for r in rows]
    assert data.fields == ("q",) and render_input(task.template(), data.eval[1]) == "is 1 even? ->"
    files = [tmp_path / "data" / "icc" / "train.jsonl", tmp_path / "data" / "icc" / "test.jsonl"]
    assert data.revision == "local:" + hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()


def test_data_files_csv_with_integer_labels_and_label_names(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "a.csv").write_text('premise,hyp,label\n"x, y",b,0\nc,d,1\ne,f,2\n', encoding="utf-8")
    (tmp_path / "tasks" / "b.csv").write_text("premise,hyp,label\ng,h,2\n", encoding="utf-8")
    task = _local_task(tmp_path, """\
        task: csv-task
        data_files: {train: a.csv, dev: [b.csv]}
        training_split: train
        validation_split: dev
        doc_to_text: "{premise} / {hyp}:"
        label_names: [entailment, contradiction, neutral]
        doc_to_choice: {entailment: " T", contradiction: " F", neutral: " N"}
        """)
    data = load_splits(task)
    assert [e.label for e in data.pool] == ["entailment", "contradiction", "neutral"]
    assert data.eval[0].label == "neutral" and data.pool[0].text_fields == {"premise": "x, y", "hyp": "b"}


def test_local_parquet_keeps_classlabel_names(tmp_path):
    import datasets

    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["bad", "good"])})
    folder = tmp_path / "pq"
    folder.mkdir()
    datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": [1, 0, 1]}, features=features).to_parquet(
        str(folder / "train-00000.parquet"))
    datasets.Dataset.from_dict({"text": ["d"], "label": [0]}, features=features).to_parquet(
        str(folder / "test.parquet"))
    task = _local_task(tmp_path, f"""\
        task: pq
        dataset_path: {folder}
        training_split: train
        test_split: test
        doc_to_text: "{{text}}:"
        doc_to_choice: {{good: " +", bad: " -"}}
        """)
    data = load_splits(task)  # train comes from the shard train-00000.parquet
    assert [e.label for e in data.pool] == ["good", "bad", "good"] and data.eval[0].label == "bad"


@pytest.mark.parametrize("change,needle", [
    (lambda t: t.replace("{text}:", "{sentence}:"), "uses field {sentence}"),
    (lambda t: t.replace("good: ", "great: "), "not label names"),
    (lambda t: t.replace("test_split: test", "test_split: dev"), "no file for split 'dev'"),
    (lambda t: t.replace("label_field: label", "label_field: gold"), "no column 'gold'"),
])
def test_local_task_errors(tmp_path, change, needle):
    _jsonl(tmp_path / "d" / "train.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": 0}])
    _jsonl(tmp_path / "d" / "test.jsonl", [{"text": "c", "label": 1}])
    body = """\
        task: t
        dataset_path: ../d
        training_split: train
        test_split: test
        doc_to_text: "{text}:"
        label_field: label
        label_names: [bad, good]
        doc_to_choice: {good: " +", bad: " -"}
        """
    task = _local_task(tmp_path, change(body))
    with pytest.raises(UserError) as err:
        load_splits(task)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_unlabelled_and_unmapped_rows_are_user_errors(tmp_path):
    _jsonl(tmp_path / "d" / "train.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    _jsonl(tmp_path / "d" / "test.jsonl", [{"text": "c", "label": -1}])
    body = """\
        task: t
        dataset_path: ../d
        training_split: train
        test_split: test
        doc_to_text: "{text}:"
        doc_to_choice: {x: " x", y: " y"}
        """
    with pytest.raises(UserError, match="1 of 1 rows of split 'test'.*no label"):
        load_splits(_local_task(tmp_path, body))
    _jsonl(tmp_path / "d" / "other.jsonl", [{"text": "c", "label": "y"}])
    with pytest.raises(UserError, match=r"label names \['y'\].*no label word"):
        body = body.replace(', y: " y"', "").replace("test_split: test", "test_split: other")
        load_splits(_local_task(tmp_path, body))


@pytest.mark.parametrize("splits", ["training_split: train\n        test_split: train",
                                    "data_files: {train: d.jsonl, test: d.jsonl}\n        training_split: train\n"
                                    "        test_split: test"])
def test_demos_drawn_from_the_eval_rows_are_refused(tmp_path, splits):
    """One split (or one file) as both the pool and the eval split: ICL would be scored on its own demos."""
    _jsonl(tmp_path / "tasks" / "d.jsonl", [{"text": "a", "label": "x"}])
    body = f"""\
        task: t
        dataset_path: .
        {splits}
        doc_to_text: "{{text}}:"
        doc_to_choice: {{x: " x"}}
        """
    with pytest.raises(UserError, match="the demonstration pool and the evaluation split are the same"):
        _local_task(tmp_path, body)


def test_a_single_file_cannot_be_both_splits(tmp_path):
    _jsonl(tmp_path / "d" / "all.jsonl", [{"text": "a", "label": "x"}])
    body = """\
        task: t
        dataset_path: ../d/all.jsonl
        training_split: train
        test_split: test
        doc_to_text: "{text}:"
        doc_to_choice: {x: " x"}
        """
    with pytest.raises(UserError, match="single file"):
        load_splits(_local_task(tmp_path, body))


def test_csv_with_a_byte_order_mark_and_number_names_for_integer_labels(tmp_path):
    """A spreadsheet's UTF-8 byte-order mark is not part of the first header; integer labels whose names are numbers
    are ambiguous in a CSV (every value is text), so they are an error there and indices in JSON lines."""
    (tmp_path / "tasks").mkdir()
    for name in ("a.csv", "a-test.csv"):
        (tmp_path / "tasks" / name).write_text("text,label\ngood,1\nbad,0\n", encoding="utf-8-sig")
    text = """\
        task: stars
        data_files: {train: a.csv, test: a-test.csv}
        training_split: train
        test_split: test
        doc_to_text: "Review: {text} Stars:"
        label_names: [NAMES]
        doc_to_choice: {"LOW": " low", "HIGH": " high"}
        """
    data = load_splits(_local_task(tmp_path, text.replace("NAMES", "low, high").replace('"LOW"', "low")
                                   .replace('"HIGH"', "high")))
    assert data.fields == ("text",) and [e.label for e in data.pool] == ["high", "low"]
    numbers = _local_task(tmp_path, text.replace("NAMES", '"1", "2"').replace('"LOW"', '"1"').replace('"HIGH"', '"2"'))
    with pytest.raises(UserError, match="could be a label name or an index into the label names"):
        load_splits(numbers)
    for name in ("b.jsonl", "b-test.jsonl"):
        _jsonl(tmp_path / "tasks" / name, [{"text": "good", "label": 1}, {"text": "bad", "label": 0}])
    as_json = _local_task(tmp_path, text.replace("a.csv", "b.jsonl").replace("a-test.csv", "b-test.jsonl")
                          .replace("NAMES", '"1", "2"')
                          .replace('"LOW"', '"1"').replace('"HIGH"', '"2"'))
    assert [e.label for e in load_splits(as_json).pool] == ["2", "1"]  # integers are indices


@pytest.mark.parametrize("value", [None, float("nan"), ["a list"], "<absent>", "", "  "])
def test_a_row_without_text_in_a_filled_field_is_a_user_error(tmp_path, value):
    """Missing, null, NaN (Python's JSON writes it), a list, empty or blank: never rendered as "" or "['a list']"."""
    rows = [{"text": "fine", "label": "pos"}, {"text": value, "label": "neg"}, {"text": "ok", "label": "neg"}]
    if value == "<absent>":
        del rows[1]["text"]
    _jsonl(tmp_path / "tasks" / "d.jsonl", rows)
    _jsonl(tmp_path / "tasks" / "d-test.jsonl", rows)
    task = _local_task(tmp_path, """\
        task: gaps
        data_files: {train: d.jsonl, test: d-test.jsonl}
        training_split: train
        test_split: test
        doc_to_text: "Review: {text} Sentiment:"
        doc_to_choice: {pos: " positive", neg: " negative"}
        """)
    data = load_splits(task)
    assert render_input(task.template(), data.pool[2]) == "Review: ok Sentiment:"
    with pytest.raises(UserError, match=r"row 1 has no text in field \{text\}.*fill or drop that row"):
        render_input(task.template(), data.pool[1])


def test_an_empty_csv_cell_in_a_filled_field_is_no_text(tmp_path):
    """A CSV holds a missing value as an empty cell: the prompt "Item:  Kind:" is refused, as an empty label is."""
    (tmp_path / "tasks").mkdir(parents=True, exist_ok=True)
    (tmp_path / "tasks" / "a.csv").write_text("text,label\ngood,1\n,0\nbad,0\n", encoding="utf-8")
    (tmp_path / "tasks" / "b.csv").write_text("text,label\nfine,1\n", encoding="utf-8")
    task = _local_task(tmp_path, """\
        task: csv-gaps
        data_files: {train: a.csv, test: b.csv}
        training_split: train
        test_split: test
        doc_to_text: "Item: {text} Kind:"
        doc_to_choice: {"0": " no", "1": " yes"}
        """)
    data = load_splits(task)
    with pytest.raises(UserError, match=r"row 1 has no text in field \{text\} \(missing, empty"):
        render_input(task.template(), data.pool[1])


def test_minus_one_is_a_label_where_doc_to_choice_maps_it(tmp_path):
    """-1 marks an unlabelled row (the hub's test splits), unless the task's label words name it: -1/0/1 data."""
    rows = [{"text": "bad", "label": -1}, {"text": "so so", "label": 0}, {"text": "good", "label": 1}]
    _jsonl(tmp_path / "d" / "train.jsonl", rows)
    _jsonl(tmp_path / "d" / "test.jsonl", rows)
    body = _over_d('{"-1": " negative", "0": " neutral", "1": " positive"}')
    assert [e.label for e in load_splits(_local_task(tmp_path, body)).eval] == ["-1", "0", "1"]
    with pytest.raises(UserError, match=r"1 of 3 rows .*no label .*map \"-1\" in doc_to_choice"):
        load_splits(_local_task(tmp_path, body.replace('"-1": " negative", ', "")))


@pytest.mark.parametrize("name, content, needle", [
    ("train.csv", "text,label\nfine, really fine,1\nok,0\n", "line 2 has more fields than the header"),
    ("train.csv", "text,label\nCaf\xe9,1\n".encode("latin-1"), "not UTF-8 text (byte 0xe9"),
    ("train.parquet", b"PAR1 truncated", "not a readable Parquet file"),
])
def test_unreadable_data_files_are_one_line_errors(tmp_path, name, content, needle):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    _jsonl(folder / "test.jsonl", [{"text": "a", "label": 1}])
    body = _over_d('{"0": " no", "1": " yes"}')
    with pytest.raises(UserError, match=re.escape(needle)) as err:
        load_splits(_local_task(tmp_path, body))
    assert "\n" not in str(err.value)


def test_json_lines_with_a_byte_order_mark_and_shards_with_keys_in_another_order(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "train-0.jsonl").write_text('{"text": "a", "label": "x"}\n', encoding="utf-8-sig")
    (folder / "train-1.jsonl").write_text('{"label": "y", "text": "b"}\n', encoding="utf-8")
    _jsonl(folder / "test.jsonl", [{"text": "c", "label": "x"}])
    body = _over_d('{x: " x", y: " y"}')
    data = load_splits(_local_task(tmp_path, body))
    assert [(e.text_fields["text"], e.label) for e in data.pool] == [("a", "x"), ("b", "y")]



def test_float_labels_are_named_as_the_cause(tmp_path):
    """0.0 / 1.0 (pandas writes an integer column holding NaN as floats) are not the label names 0 / 1."""
    rows = [{"text": "a", "label": 0.0}, {"text": "b", "label": 1.0}]
    _jsonl(tmp_path / "d" / "train.jsonl", rows)
    _jsonl(tmp_path / "d" / "test.jsonl", rows)
    body = _over_d('{"0": " no", "1": " yes"}')
    with pytest.raises(UserError, match=r"\['0.0', '1.0'\].*the labels are floats"):
        load_splits(_local_task(tmp_path, body))
