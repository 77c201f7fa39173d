"""The real tasks: builders on small archives made here (exact rows, byte-reproducible, sha256 enforced), the
shipped files (counts, labels, provenance), the command's bad inputs, and a rebuild from the real packages
(skipped when PyPI or deb.debian.org cannot be reached)."""

import dataclasses
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import iclgd
from iclgd.cli import data as data_cli
from iclgd.errors import UserError
from iclgd.tasks import load_splits, load_task
from iclgd.tasks.real_tasks import TASKS, TASKS_ROOT, build, split, write_files
from iclgd.tasks.sources import SOURCES, archive_members, read_ar, verify

# --------------------------------------------------------------------------- small archives

MOVIES = ("1\t2.5\tGreat  fun &amp;amp; games\r\n"  # entities decoded twice, spaces squeezed
          "2\t-1.5\tDull.\r\n"
          "3\t0.5\tOkay.\r\n"  # |rating| < 1: not in the binary task, neutral in the 5-way one
          "4\t-3\tAwful.\r\n"
          "5\t1.0\tGood.\r\n"
          "6\t-1.0\tBad.\r\n"
          "7\t2.0\tGreat fun & games\r\n"  # a duplicate once normalised: dropped
          "8\t-2.0\tTerrible.\r\n"
          "9\t1.99\tNice.")
OTHER_VADER = "1_1\t1.5\tyes\r\n1_2\t-1.5\tno\r\n1_3\t0.2\tmeh\r\n1_4\t3\tlove it\r\n1_5\t-2\thate it\r\n"


def _tar(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _ar(members: dict[str, bytes]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members.items():
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode() + data + b"\n" * (len(data) % 2)
    return out


def _deb(files: dict[str, bytes]) -> bytes:
    return _ar({"debian-binary": b"2.0\n", "control.tar.xz": _tar({}, "w:xz"),
                "data.tar.xz": _tar({f"./{name}": data for name, data in files.items()}, "w:xz")})


def vader_archive(folder: Path) -> Path:
    inner = _tar({"hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt": MOVIES.encode(),
                  **{f"hutto_ICWSM_2014/{name}_GroundTruth.txt": OTHER_VADER.encode()
                     for name in ("tweets", "amazonReviewSnippets", "nytEditorialSnippets")}})
    path = folder / "vaderSentiment-3.3.2.tar.gz"
    path.write_bytes(_tar({"vaderSentiment-3.3.2/LICENSE.txt": b"MIT licence text\n",
                           "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz": inner}))
    return path


FORTUNES = {
    "computers": "Real programmers\ndon't comment.\n%\nA bug\n\t\t-- Anon,\n\t\t   in a memo\n%\n" + "x" * 201
                 + "\n%\nShared text.\n%\nA bug\n%\n",
    "politics": "Vote early.\n%\nShared text.\n%\nTaxes.\n%\n",
    "science": "E = mc^2\n\t-- Einstein\n%\nGravity.\n%\nAtoms.\n%\n",
    "work": "Meetings.\n%\nBosses.\n%\nDeadlines.\n%\nOffice.\n%\n",
}


def fortunes_archive(folder: Path) -> Path:
    files = {f"usr/share/games/fortunes/{name}": text.encode() for name, text in FORTUNES.items()}
    files["usr/share/doc/fortunes/copyright"] = b"BSD licence text\n"
    path = folder / "fortunes.deb"
    path.write_bytes(_deb(files))
    return path


NOUNS = """  1 This software and database is being provided to you, the LICENSEE
00000001 05 n 01 dog 0 000 | dog dog dog
00000002 05 n 01 cat 0 000 | cat cat cat
00000003 13 n 01 bread 0 000 | bread bread bread
00000004 13 n 01 soup 0 000 | soup soup soup
00000005 06 n 01 hammer 0 000 | hammer hammer hammer
00000006 06 n 01 wheel 0 000 | wheel wheel wheel
00000007 18 n 01 teacher 0 000 | teacher teacher teacher
00000008 18 n 02 nurse 0 sister 0 000 | nurse nurse nurse sister sister sister
00000009 18 n 01 baker 0 000 | baker baker baker
00000010 13 n 01 baker 0 000 | a baker's ware
00000011 05 n 01 zebu 0 000 | a humped ox
00000012 05 n 01 Fido 0 000 | fido fido fido
00000013 05 n 01 rare 0 000 | rare rare rare
00000014 20 n 01 oak 0 000 | oak oak oak
"""
ADJECTIVES = """  1 This software and database is being provided to you, the LICENSEE
00000001 00 a 01 hot 0 001 ! 00000002 a 0101 | hot
00000002 00 a 01 cold 0 001 ! 00000001 a 0101 | cold
00000003 00 a 02 big(a) 0 large 0 001 ! 00000004 a 0101 | big
00000004 00 a 01 small 0 001 ! 00000003 a 0101 | small
00000005 00 a 01 able 0 001 ! 00000006 a 0101 | able
00000006 00 a 01 unable 0 001 ! 00000005 a 0101 | unable
00000007 00 s 01 rare 0 000 | rare
00000008 00 a 01 up_to_date 0 001 ! 00000009 a 0101 | new
00000009 00 a 01 old 0 001 ! 00000008 a 0101 | old
"""


def wordnet_archive(folder: Path) -> Path:
    files = {"usr/share/wordnet/data.noun": NOUNS.encode(), "usr/share/wordnet/data.adj": ADJECTIVES.encode(),
             "usr/share/wordnet/data.verb": b"", "usr/share/wordnet/data.adv": b"",
             "usr/share/doc/wordnet-base/copyright": b"WordNet licence text\n"}
    path = folder / "wordnet-base.deb"
    path.write_bytes(_deb(files))
    return path


ARCHIVES = {"vader": vader_archive, "fortunes": fortunes_archive, "wordnet": wordnet_archive}


def _source(name: str, archive: Path):
    """The pinned source with the sha256 of a test archive."""
    return dataclasses.replace(SOURCES[name], sha256=hashlib.sha256(archive.read_bytes()).hexdigest())


def _rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def _built(name: str, tmp_path: Path) -> dict[str, str]:
    archive = ARCHIVES[name](tmp_path)
    return {str(path): text for path, text in build(_source(name, archive), archive).items()}


# --------------------------------------------------------------------------- builders


def test_vader_rows(tmp_path):
    files = _built("vader", tmp_path)
    movie = _rows(files["data/vader-movie/train.jsonl"]) + _rows(files["data/vader-movie/test.jsonl"])
    assert sorted((r["id"], r["rating"], r["label"], r["text"]) for r in movie) == [
        ("1", 2.5, "positive", "Great fun & games"), ("2", -1.5, "negative", "Dull."),
        ("4", -3.0, "negative", "Awful."), ("5", 1.0, "positive", "Good."), ("6", -1.0, "negative", "Bad."),
        ("8", -2.0, "negative", "Terrible."), ("9", 1.99, "positive", "Nice.")]
    # 7 rows: 2 to the test split, one per label (proportional shares, the larger remainder rounds up)
    assert [r["id"] for r in _rows(files["data/vader-movie/test.jsonl"])] == ["4", "5"]
    five = _rows(files["data/vader-movie5/train.jsonl"]) + _rows(files["data/vader-movie5/test.jsonl"])
    assert sorted((r["id"], r["label"]) for r in five) == [
        ("1", "very positive"), ("2", "negative"), ("3", "neutral"), ("4", "very negative"), ("5", "positive"),
        ("6", "negative"), ("8", "very negative"), ("9", "positive")]
    tweets = _rows(files["data/vader-tweet/train.jsonl"]) + _rows(files["data/vader-tweet/test.jsonl"])
    assert sorted((r["id"], r["label"]) for r in tweets) == [
        ("1_1", "positive"), ("1_2", "negative"), ("1_4", "positive"), ("1_5", "negative")]
    assert {"builtin/vader-movie-foobar.yaml", "builtin/vader-amazon.yaml", "builtin/vader-nyt.yaml"} <= set(files)
    assert "data/vader-movie-foobar/train.jsonl" not in files  # it reads vader-movie's folder
    record = json.loads(files["data/vader-movie/provenance.json"])
    assert record["counts"]["kept by |rating| >= 1"] == 8 and record["counts"]["after dropping duplicate texts"] == 7
    assert record["license"]["text"] == "MIT licence text\n" and record["archive_sha256"] == _source(
        "vader", tmp_path / "vaderSentiment-3.3.2.tar.gz").sha256
    assert record["build_command"] == "iclgd prepare-data --source vader"
    assert record["members"] == ["vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
                                 "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"]
    assert set(record["tasks"]) == {"vader-movie", "vader-movie-foobar"}


def test_fortune_rows(tmp_path):
    files = _built("fortunes", tmp_path)
    rows = _rows(files["data/fortune-topic/train.jsonl"]) + _rows(files["data/fortune-topic/test.jsonl"])
    by_label = {label: sorted(r["text"] for r in rows if r["label"] == label) for label in FORTUNES}
    # attribution dropped; > 200 characters dropped; "Shared text." (two categories) dropped; the repeated
    # "A bug" kept once; each category cut to 2 (politics has 2 left)
    assert by_label["computers"] == ["A bug", "Real programmers don't comment."]
    assert by_label["politics"] == ["Taxes.", "Vote early."]
    assert len(by_label["science"]) == 2 and set(by_label["science"]) <= {"E = mc^2", "Gravity.", "Atoms."}
    assert len(by_label["work"]) == 2 and set(by_label["work"]) <= {"Meetings.", "Bosses.", "Deadlines.", "Office."}
    assert {r["id"] for r in rows if r["label"] == "computers"} == {"computers:1", "computers:2"}
    record = json.loads(files["data/fortune-topic/provenance.json"])
    assert record["counts"]["computers"] == {"entries": 5, "1..200 characters": 4, "unique, in no other category": 2}
    assert record["counts"]["balanced, per category"] == 2


def test_wordnet_rows(tmp_path):
    files = _built("wordnet", tmp_path)
    nouns = _rows(files["data/wordnet-noun/train.jsonl"]) + _rows(files["data/wordnet-noun/test.jsonl"])
    # baker: two files; zebu: in fewer than 3 glosses; Fido: capitalised; rare: an adjective; oak: plant
    assert sorted((r["label"], r["word"]) for r in nouns if r["label"] != "person") == [
        ("animal", "cat"), ("animal", "dog"), ("artifact", "hammer"), ("artifact", "wheel"), ("food", "bread"),
        ("food", "soup")]
    assert sorted(r["word"] for r in nouns if r["label"] == "person") in (["nurse", "sister"], ["nurse", "teacher"],
                                                                          ["sister", "teacher"])
    antonyms = _rows(files["data/wordnet-antonym/train.jsonl"]) + _rows(files["data/wordnet-antonym/test.jsonl"])
    yes = sorted(tuple(sorted((r["word1"], r["word2"]))) for r in antonyms if r["label"] == "yes")
    assert yes == [("able", "unable"), ("big", "small"), ("cold", "hot")]  # up_to_date: not one word
    vocabulary = {word for pair in yes for word in pair}
    no = [tuple(sorted((r["word1"], r["word2"]))) for r in antonyms if r["label"] == "no"]
    assert len(no) == 3 and len(set(no)) == 3
    assert all(set(pair) <= vocabulary and pair not in yes for pair in no)


@pytest.mark.parametrize("name", sorted(ARCHIVES))
def test_builds_are_byte_identical(name, tmp_path):
    archive = ARCHIVES[name](tmp_path)
    source = _source(name, archive)
    first, second = write_files(build(source, archive), tmp_path / "a"), write_files(build(source, archive),
                                                                                     tmp_path / "b")
    assert [p.relative_to(tmp_path / "a") for p in first] == [p.relative_to(tmp_path / "b") for p in second]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second, strict=True))
    for task in TASKS[name]:  # and what was written loads as a task
        data = load_splits(load_task(tmp_path / "a" / "builtin" / f"{task.name}.yaml"))
        assert data.pool and data.eval and {e.label for e in data.pool + data.eval} <= set(task.label_words)


def test_split_is_stratified_and_in_source_order():
    rows = [{"i": i, "label": "a" if i % 4 else "b"} for i in range(40)]
    train, test = split(rows, max_test=10)
    assert len(test) == 10 and sum(r["label"] == "b" for r in test) == 2  # shares 7.5 / 2.5: the tie goes to "a"
    assert [r["i"] for r in train] == sorted(r["i"] for r in train) and not {r["i"] for r in train} & {
        r["i"] for r in test}
    assert split(rows, max_test=1000)[1] == split(rows, max_test=1000)[1] and len(split(rows)[1]) == 13


def test_ar_and_deb_members(tmp_path):
    assert read_ar(_ar({"a": b"odd", "b": b"even"}), "x") == {"a": b"odd", "b": b"even"}
    archive = fortunes_archive(tmp_path)
    members = archive_members(SOURCES["fortunes"], archive)
    assert members["usr/share/doc/fortunes/copyright"] == b"BSD licence text\n"
    with pytest.raises(UserError, match="not an ar archive"):
        read_ar(b"PK\x03\x04", "x.deb")


def test_sha256_mismatch_refused(tmp_path):
    archive = vader_archive(tmp_path)
    with pytest.raises(UserError) as err:
        verify(SOURCES["vader"], archive)
    assert "5d7c06e0" in str(err.value) and "refusing" in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------- the command


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(iclgd.__file__).parents[1]), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "iclgd", "prepare-data", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_command_bad_inputs_exit_2_one_line_nothing_written(tmp_path):
    archive = vader_archive(tmp_path)
    (tmp_path / "a-file").write_text("x")
    out = tmp_path / "out"
    for args in (["--source", "vader", "--archive", str(archive)],  # not the pinned sha256
                 ["--source", "imdb"],
                 ["--source", "vader", "--source", "wordnet", "--archive", str(archive)],
                 ["--source", "vader", "--task", "sst2"]):
        done = _cli(*args, "--out", str(out))
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not out.exists()
    done = _cli("--source", "vader", "--archive", str(archive), "--out", str(tmp_path / "a-file" / "sub"))
    assert done.returncode == 2 and "is a file" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_command_builds_into_out(tmp_path, monkeypatch):
    archive = wordnet_archive(tmp_path)
    monkeypatch.setitem(SOURCES, "wordnet", _source("wordnet", archive))
    app = typer.Typer()
    data_cli.register(app)
    result = CliRunner().invoke(app, ["prepare-data", "--source", "wordnet", "--archive", str(archive),
                                      "--out", str(tmp_path / "out")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out" / "builtin").iterdir()) == ["wordnet-antonym.yaml",
                                                                                "wordnet-noun.yaml"]
    assert "wordnet-antonym, wordnet-noun" in result.output


# --------------------------------------------------------------------------- the shipped files

SHIPPED = {  # task: (pool rows, eval rows, labels)
    "vader-movie": (8171, 1000, {"negative", "positive"}),
    "vader-movie-foobar": (8171, 1000, {"negative", "positive"}),
    "vader-movie5": (9603, 1000, {"very negative", "negative", "neutral", "positive", "very positive"}),
    "vader-tweet": (1778, 889, {"negative", "positive"}),
    "vader-amazon": (1632, 815, {"negative", "positive"}),
    "vader-nyt": (1024, 511, {"negative", "positive"}),
    "fortune-topic": (1299, 649, {"computers", "politics", "science", "work"}),
    "wordnet-noun": (387, 193, {"animal", "artifact", "food", "person"}),
    "wordnet-antonym": (2546, 1000, {"yes", "no"}),
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_task_loads_with_documented_counts(name):
    pool, evaluation, labels = SHIPPED[name]
    task = load_task(name)
    data = load_splits(task)
    assert (len(data.pool), len(data.eval), task.eval_size) == (pool, evaluation, evaluation)
    assert {e.label for e in data.pool} == {e.label for e in data.eval} == labels == set(task.label_words)
    assert len(task.templates) >= 2 and task.origin and task.license
    assert all(w.startswith(" ") and " " not in w[1:] for w in task.label_words.values())
    record = json.loads((task.local_path / "provenance.json").read_text(encoding="utf-8"))
    assert name in record["tasks"] and record["counts"]["test"]["rows"] == evaluation
    assert record["archive_sha256"] == SOURCES[record["build_command"].split()[-1]].sha256
    assert record["license"]["text"] and record["rules"] and record["label_words_check"]
    pool_texts = {tuple(e.text_fields.values()) for e in data.pool}
    assert not pool_texts & {tuple(e.text_fields.values()) for e in data.eval}


def test_shipped_counts_match_the_spec():
    movie = json.loads((TASKS_ROOT / "data" / "vader-movie" / "provenance.json").read_text(encoding="utf-8"))
    assert movie["counts"]["rows"] == 10605 and movie["counts"]["kept by |rating| >= 1"] == 9173
    for name, kept in (("vader-tweet", 2667), ("vader-amazon", 2455), ("vader-nyt", 1554)):
        record = json.loads((TASKS_ROOT / "data" / name / "provenance.json").read_text(encoding="utf-8"))
        assert record["counts"]["kept by |rating| >= 1"] == kept


# --------------------------------------------------------------------------- the real packages


def _reachable(host: str) -> bool:
    try:
        socket.create_connection((host, 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_rebuild_from_the_real_package_equals_the_shipped_files(name, tmp_path):
    host = "pypi.org" if SOURCES[name].kind == "sdist" else "deb.debian.org"
    if not _reachable(host):
        pytest.skip(f"{host} cannot be reached: the rebuild of {name} from the real package is not checked")
    done = _cli("--source", name, "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    for path in sorted(tmp_path.rglob("*")):
        if path.is_file():
            assert path.read_bytes() == (TASKS_ROOT / path.relative_to(tmp_path)).read_bytes(), path
