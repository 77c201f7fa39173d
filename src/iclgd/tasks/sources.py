"""Packages that carry human-labelled text, pinned by sha256: download, verify, extract (no install).

    vader      PyPI sdist vadersentiment 3.3.2 (MIT): hutto_ICWSM_2014.tar.gz inside, sentences rated -4..4
    fortunes   Debian bookworm fortunes 1:1.99.1-7.3 (BSD): quotations filed by topic
    wordnet    Debian bookworm wordnet-base 1:3.0-37 (WordNet 3.0 licence): the WordNet database files

A download that does not hash to the pinned sha256 is refused: the rows built from it would differ.
A .deb is an ar archive holding ``data.tar.xz``; it is read here in Python (no dpkg).
"""

from __future__ import annotations

import hashlib
import io
import lzma
import shutil
import subprocess
import sys
import tarfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

from iclgd.errors import UserError


@dataclass(frozen=True)
class Source:
    name: str  # what --source takes
    package: str
    version: str
    kind: str  # "sdist" (PyPI source distribution) or "deb" (Debian binary package)
    sha256: str  # of the downloaded archive
    url: str  # where the archive is fetched when pip / apt-get cannot get it
    license: str
    license_member: str  # the licence text inside the archive
    homepage: str

    @property
    def label(self) -> str:
        """'vadersentiment 3.3.2 (PyPI)' for tables."""
        return f"{self.package} {self.version} ({'PyPI' if self.kind == 'sdist' else 'Debian bookworm'})"


SOURCES = {
    "vader": Source(
        "vader", "vadersentiment", "3.3.2", "sdist",
        "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
        "https://files.pythonhosted.org/packages/77/8c/4a48c10a50f750ae565e341e697d74a38075a3e43ff0df6f1ab72e186902/"
        "vaderSentiment-3.3.2.tar.gz",
        "MIT", "vaderSentiment-3.3.2/LICENSE.txt", "https://github.com/cjhutto/vaderSentiment"),
    "fortunes": Source(
        "fortunes", "fortunes", "1:1.99.1-7.3", "deb",
        "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5",
        "https://deb.debian.org/debian/pool/main/f/fortune-mod/fortunes_1.99.1-7.3_all.deb",
        "BSD-3-Clause", "usr/share/doc/fortunes/copyright",
        "https://packages.debian.org/bookworm/fortunes"),
    "wordnet": Source(
        "wordnet", "wordnet-base", "1:3.0-37", "deb",
        "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752",
        "https://deb.debian.org/debian/pool/main/w/wordnet/wordnet-base_3.0-37_all.deb",
        "WordNet 3.0 licence", "usr/share/doc/wordnet-base/copyright", "https://wordnet.princeton.edu"),
}


def get_source(name: str) -> Source:
    if name not in SOURCES:
        raise UserError(f"unknown source {name!r}; known sources: {', '.join(SOURCES)} (or 'all')")
    return SOURCES[name]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(source: Source, archive: Path) -> None:
    """UserError unless ``archive`` hashes to the pinned sha256."""
    if not archive.is_file():
        raise UserError(f"{source.name}: archive {archive} does not exist; give the downloaded file or omit --archive")
    found = sha256_file(archive)
    if found != source.sha256:
        raise UserError(f"{source.name}: {archive} has sha256 {found}, not the pinned {source.sha256} of "
                        f"{source.package} {source.version}; refusing it (a different version or a damaged download)")


def _run(command: list[str], cwd: Path) -> bool:
    try:
        return subprocess.run(command, cwd=cwd, capture_output=True, timeout=600).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def download(source: Source, folder: Path) -> Path:
    """Fetch the package's archive into ``folder``: pip (sdist) or apt-get (deb, the pinned version), then plain
    HTTP from ``source.url``. Not verified here: see :func:`verify`."""
    if source.kind == "sdist":
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
              "--disable-pip-version-check", "-d", str(folder), f"{source.package}=={source.version}"], folder)
    elif shutil.which("apt-get"):
        _run(["apt-get", "download", f"{source.package}={source.version}"], folder)
    found = sorted(p for p in folder.iterdir() if p.suffix in (".gz", ".deb"))
    if found:
        return found[0]
    target = folder / source.url.rsplit("/", 1)[1]
    try:
        with urllib.request.urlopen(source.url, timeout=60) as response, target.open("wb") as f:
            shutil.copyfileobj(response, f)
    except OSError as err:
        raise UserError(f"{source.name}: cannot download {source.package} {source.version} ({err}); run where PyPI "
                        f"or deb.debian.org can be reached, or fetch {source.url} and pass --archive FILE") from None
    return target


def read_ar(data: bytes, where: str) -> dict[str, bytes]:
    """Members of an ar archive (the container of a .deb): 8-byte magic, then per member a 60-byte header
    (name 0-16, decimal size 48-58) and the data, padded to an even length."""
    if not data.startswith(b"!<arch>\n"):
        raise UserError(f"{where} is not an ar archive (a .deb starts with '!<arch>'); give the package's .deb file")
    members, pos = {}, 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        try:
            name, size = header[:16].decode("ascii").strip().rstrip("/"), int(header[48:58])
        except ValueError:
            raise UserError(f"{where}: damaged ar header at byte {pos}; download the package again") from None
        members[name] = data[pos + 60:pos + 60 + size]
        pos += 60 + size + size % 2
    return members


def read_tar(data: bytes, where: str) -> dict[str, bytes]:
    """Regular files of a (gzip / xz / plain) tar archive, by path without a leading './'."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            return {m.name.removeprefix("./"): tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    except (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error, OSError) as err:
        raise UserError(f"{where} is not a readable tar archive ({err}); download the package again") from None


def archive_members(source: Source, archive: Path) -> dict[str, bytes]:
    """Files of the package: the sdist's tar members, or a .deb's data.tar.* members (paths like 'usr/share/...')."""
    data = archive.read_bytes()
    if source.kind == "sdist":
        return read_tar(data, str(archive))
    members = read_ar(data, str(archive))
    inner = [name for name in members if name.startswith("data.tar")]
    if not inner:
        raise UserError(f"{archive} holds no data.tar.* member; give the {source.package} .deb file")
    return read_tar(members[inner[0]], f"{archive}:{inner[0]}")
