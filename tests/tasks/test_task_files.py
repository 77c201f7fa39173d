import textwrap

import pytest

from iclgd.errors import UserError
from iclgd.tasks import Example, list_tasks, load_task, read_task_file, render_input, validate_template

# spec/protocols.md §1: hub id, config, pool / eval split, template, label name -> word (candidate order)
SPEC = {
    "sst2": ("nyu-mll/glue", "sst2", "train", "validation", "Sentence: {sentence} Label:",
             {"negative": " Negative", "positive": " Positive"}),
    "sst5": ("SetFit/sst5", None, "train", "validation", "Sentence: {text} Label:",
             {"very negative": " terrible", "negative": " bad", "neutral": " neutral", "positive": " good",
              "very positive": " great"}),
    "mr": ("cornell-movie-review-data/rotten_tomatoes", None, "train", "validation", "Review: {text} Sentiment:",
           {"neg": " Negative", "pos": " Positive"}),
    "subj": ("SetFit/subj", None, "train", "test", "Input: {text} Type:",
             {"objective": " objective", "subjective": " subjective"}),
    "agnews": ("fancyzhx/ag_news", None, "train", "test",
               "Classify the news articles into the categories of World, Sports, Business, and Technology. "
               "Article: {text} Answer:",
               {"World": " World", "Sports": " Sports", "Business": " Business", "Sci/Tech": " Technology"}),
    "cb": ("aps/super_glue", "cb", "train", "validation",
           "{premise} Question: {hypothesis}. True, False, or Neither? Answer:",
           {"entailment": " True", "contradiction": " False", "neutral": " Neither"}),
    "rte": ("nyu-mll/glue", "rte", "train", "validation",
            "Passage: {sentence1} Question: {sentence2} Yes or No? Answer:",
            {"entailment": " Yes", "not_entailment": " No"}),
}


@pytest.mark.parametrize("name", sorted(SPEC))
def test_natural_tasks_match_the_spec(name):
    path, config, pool, evaluation, template, words = SPEC[name]
    task = load_task(name)
    assert (task.dataset_path, task.dataset_name) == (path, config)
    assert (task.training_split, task.eval_split) == (pool, evaluation)
    assert task.templates[0] == template and task.template() == template
    assert task.label_words == words and list(task.label_words) == list(words)  # candidate order too
    assert not task.is_local and task.eval_size == 2000 and task.revision is None
    assert task.label_name_field == ("label_text" if path.startswith("SetFit/") else None)
    assert task.bos is None and task.separator is None


def test_list_tasks_holds_natural_and_synthetic_tasks():
    names = [task.name for task in list_tasks()]
    assert names == sorted(names)
    assert set(SPEC) | {"synthetic-sentiment", "synthetic-topic"} <= set(names)


def test_unknown_task_lists_known_and_mentions_paths():
    with pytest.raises(UserError) as err:
        load_task("sst3")
    message = str(err.value)
    assert "sst3" in message and "sst2" in message and "rte" in message and "path to a task file" in message
    assert "\n" not in message


def _write(tmp_path, text, name="task.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


BASE = """\
task: mine
dataset_path: some/dataset
training_split: train
validation_split: validation
doc_to_text: "Q: {question} A:"
doc_to_choice: {no: " no", yes: " yes"}
"""


def test_task_file_by_path_with_optional_keys(tmp_path):
    path = _write(tmp_path, BASE.replace("{no:", '{"no":').replace(" yes:", ' "yes":') + textwrap.dedent("""\
        dataset_name: cfg
        revision: 0123abc
        separator: "\\n\\n"
        bos: ""
        eval_size: 50
        test_split: test
        """))
    task = load_task(str(path))
    assert task.name == "mine" and task.source_file == path.resolve()
    assert task.eval_split == "test"  # test_split wins over validation_split, as in lm-evaluation-harness
    assert (task.dataset_name, task.revision, task.eval_size) == ("cfg", "0123abc", 50)
    assert (task.separator, task.bos) == ("\n\n", "")
    assert task.label_words == {"no": " no", "yes": " yes"}
    assert task.source == "some/dataset (cfg) @ 0123abc"


@pytest.mark.parametrize("change,needle", [
    (lambda t: t.replace("training_split: train\n", ""), "missing key(s) training_split"),
    (lambda t: t + "dataset_nmae: x\n", "unknown key(s) dataset_nmae"),
    (lambda t: t + "templates: ['{question}']\n", "either doc_to_text"),
    (lambda t: t.replace("Q: {question} A:", "Q: A:"), "no placeholder"),
    (lambda t: t.replace("{question}", "{{question}}"), "is Jinja ({{text}}); iclgd's templates are Python format"),
    (lambda t: t.replace("{question}", "{}"), "plain field names"),
    (lambda t: t.replace("{question}", "{question.upper}"), "plain field names"),
    (lambda t: t, "read as a boolean"),  # bare YAML no/yes are booleans
    (lambda t: t.replace('{no: " no", yes: " yes"}', '{"a": " x", "b": " x"}'), "more than one label"),
    (lambda t: t.replace('{no: " no", yes: " yes"}', '[" no", " yes"]'), "label NAME"),
    (lambda t: t.replace("validation_split: validation\n", ""), "evaluation split"),
    (lambda t: t + "eval_size: 0\n", "eval_size"),
    (lambda t: t + "bad: [\n", "not valid YAML"),
    (lambda t: t.replace("{no:", '{"no":').replace(" yes:", ' "yes":') + 'separator: ""\n', "separator is empty"),
])
def test_bad_task_files_give_one_line_user_errors(tmp_path, change, needle):
    path = _write(tmp_path, change(BASE))
    with pytest.raises(UserError) as err:
        read_task_file(path)
    assert needle in str(err.value) and str(path.name) in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_task_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_task(str(tmp_path / "nope.yaml"))


def test_template_selection():
    task = load_task("synthetic-sentiment")
    assert task.template(1) == "Review: {text} Sentiment:"
    assert task.template("My {text} ->") == "My {text} ->"
    with pytest.raises(UserError, match="template 2 does not exist"):
        task.template(2)
    with pytest.raises(UserError, match="no placeholder"):
        task.template("no fields here")


def test_render_input_keeps_raw_text_and_names_missing_fields():
    example = Example(text_fields={"sentence": "it 's a charming journey . ", "idx": "3"}, label="positive")
    assert render_input("Sentence: {sentence} Label:", example) == "Sentence: it 's a charming journey .  Label:"
    assert render_input("{{literal}} {sentence}", example) == "{literal} it 's a charming journey . "
    with pytest.raises(UserError) as err:
        render_input("Passage: {sentence1} Label:", example)
    assert "{sentence1}" in str(err.value) and "Passage: {sentence1} Label:" in str(err.value)
    with pytest.raises(UserError, match="text"):
        validate_template("{text}", ["sentence", "idx"])


@pytest.mark.parametrize("field", ["label", "label_text"])
def test_a_template_that_fills_the_label_or_its_name_is_refused_naming_it(field):
    with pytest.raises(UserError, match=rf"fills the label field {{{field}}}, which would show each query its answer"):
        validate_template(f"Text: {{text}} Label: {{{field}}}", ["text"], label_fields=("label", "label_text"))
    validate_template("Text: {text}", ["text"], label_fields=("label", None))
