"""GGUF files as models: transformers reads them (dequantizing every tensor), iclgd converts each file once to a
plain float32 safetensors folder in a cache keyed by the file's sha256, so that later loads take seconds.

    find_gguf(path) -> Path | None            # a .gguf file, or a folder holding exactly one .gguf and no config.json
    converted_folder(path, check=...) -> Path  # the cached folder; converts (atomically) on first use
    read_gguf(path) -> GgufInfo                # architecture and quantization type, for the provenance record
    convert_gguf(path, target, ...) -> Path    # the conversion itself (also used by `iclgd models fetch`)

Cache: ``$ICLGD_CACHE`` (default ``~/.cache/iclgd``) ``/gguf/<sha256>/``. A folder is written under a temporary
name and renamed when whole (:func:`iclgd.runs.atomic_folder`), so a folder under its final name is always complete;
one left by a killed process of this host is removed by the next writer in the cache.
Each converted folder carries ``iclgd-provenance.json``: the file, its sha256, quantization type, and the versions
that converted it. The saved config has no ``quantization_config``: the folder holds plain (dequantized) weights
and loads as an ordinary model; the quantization is recorded in the provenance instead.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from iclgd.errors import UserError
from iclgd.runner.store import library_versions
from iclgd.runs import atomic_folder

CACHE_ENV = "ICLGD_CACHE"
PROVENANCE_FILE = "iclgd-provenance.json"
REQUIRED_PACKAGES = ("gguf", "accelerate")  # gguf: metadata and config; accelerate: transformers' GGUF loader


def cache_root() -> Path:
    """Where converted GGUF files and fetched named models live: $ICLGD_CACHE, else ~/.cache/iclgd."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/iclgd").expanduser()


def sha256_of(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """The file's sha256 (hex), read 4 MiB at a time; ``on_bytes`` is told each chunk's size (a progress bar)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    return digest.hexdigest()


def require_packages() -> None:
    """UserError naming what to install, before any work that would need it."""
    missing = []
    for name in REQUIRED_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UserError(f"reading GGUF files needs the {' and '.join(missing)} package(s), not installed: "
                        f"pip install {' '.join(missing)}")


def read_provenance(folder: Path) -> dict | None:
    """The GGUF provenance (source file, sha256, quantization) a converted model folder keeps; None for others."""
    path = Path(folder) / PROVENANCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


# ----------------------------------------------------------------------------------------------------------
# What a file is


@dataclass(frozen=True)
class GgufInfo:
    path: Path
    sha256: str
    size_bytes: int
    architecture: str  # general.architecture, llama.cpp's name (e.g. "llama", "gemma3")
    quantization: str  # llama.cpp's file type ("Q4_1", "Q4_K_M", "F32"), else the most common tensor type
    tensor_types: dict[str, int] = field(default_factory=dict)  # ggml type -> number of tensors
    name: str | None = None  # general.name

    def record(self) -> dict:
        return {"file": str(self.path), "sha256": self.sha256, "size_bytes": self.size_bytes,
                "architecture": self.architecture, "quantization": self.quantization,
                "tensor_types": self.tensor_types, "general_name": self.name}


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def read_gguf(path: Path, sha256: str | None = None) -> GgufInfo:
    """Architecture and quantization type of a GGUF file; UserError if it is not a whole, readable GGUF."""
    require_packages()
    from gguf import GGMLQuantizationType, GGUFReader, LlamaFileType

    path = Path(path)
    size = path.stat().st_size
    try:
        reader = GGUFReader(path)
        architecture = str(reader.fields["general.architecture"].contents())
        file_type = reader.fields["general.file_type"].contents() if "general.file_type" in reader.fields else None
        name = reader.fields["general.name"].contents() if "general.name" in reader.fields else None
        tensor_types = Counter(GGMLQuantizationType(t.tensor_type).name for t in reader.tensors)
        matrix_types = Counter(GGMLQuantizationType(t.tensor_type).name for t in reader.tensors if len(t.shape) > 1)
        data_end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    except Exception as error:  # any failure to parse the file means the file is bad, whatever the parser raised
        raise UserError(f"{path} is not a readable GGUF file (corrupt or truncated: {_first_line(error)}); "
                        "download it again") from error
    if data_end > size:
        raise UserError(f"{path} is truncated: {size} bytes, its tensors need {data_end}; download it again")
    if file_type is not None and file_type in LlamaFileType._value2member_map_:
        quantization = LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    elif matrix_types:
        quantization = matrix_types.most_common(1)[0][0]
    else:
        quantization = "unknown"
    return GgufInfo(path, sha256 or sha256_of(path), size, architecture, quantization,
                    dict(sorted(tensor_types.items())), None if name is None else str(name))


def find_gguf(path: Path) -> Path | None:
    """The GGUF file a --model value names: a .gguf file, or a folder with exactly one .gguf and no config.json."""
    path = Path(path).expanduser()
    if path.is_file():
        return path if path.suffix.lower() == ".gguf" else None
    if path.is_dir() and not (path / "config.json").exists():
        files = sorted(path.glob("*.gguf"))
        if len(files) > 1:
            raise UserError(f"{path} holds {len(files)} .gguf files ({', '.join(f.name for f in files)}): "
                            "pass one of them as --model")
        return files[0] if files else None
    return None


# ----------------------------------------------------------------------------------------------------------
# Conversion


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No tqdm bars or warnings from transformers while converting (the caller shows its own progress). Its GGUF
    reader calls tqdm directly rather than through transformers' switch, so that module's tqdm is swapped."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging

    enabled, verbosity = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar()
    logging.set_verbosity_error()  # its warnings about a file's metadata would break the CLI's one-line errors
    reader_tqdm = getattr(gguf_utils, "tqdm", None)
    if reader_tqdm is not None:
        gguf_utils.tqdm = partial(reader_tqdm, disable=True)
    try:
        yield
    finally:
        if reader_tqdm is not None:
            gguf_utils.tqdm = reader_tqdm
        logging.set_verbosity(verbosity)
        if enabled:
            logging.enable_progress_bar()


def convert_gguf(path: Path, target: Path, *, sha256: str | None = None, file_label: str | None = None,
                 check: Callable | None = None, bos_token: str | None = None, bos_reason: str | None = None,
                 extra: dict | None = None, replace: bool = False) -> Path:
    """Dequantize a GGUF with transformers and save it as a float32 safetensors folder at ``target``, atomically.

    ``file_label`` is recorded as the file's origin instead of its path (a scratch file extracted from a wheel);
    ``check(config)`` runs before any weight is read (e.g. iclgd's family check); ``bos_token`` replaces the BOS
    the file names (``bos_reason`` says why, in the provenance); ``extra`` is merged into the provenance;
    ``replace`` replaces a folder already at ``target`` (else a complete one is kept). Any failure leaves ``target``
    as it was and no partial folder.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, __version__

    path, target = Path(path).resolve(), Path(target)
    info = read_gguf(path, sha256)
    started = time.time()
    folder, name = str(path.parent), path.name
    cannot = (f"transformers {__version__} cannot load {path.name} (GGUF architecture {info.architecture!r}, "
              f"{info.quantization})")
    if check is not None:  # the config alone (metadata) first: a model iclgd cannot use fails before its weights
        try:
            with _quiet_transformers():
                config = AutoConfig.from_pretrained(folder, gguf_file=name)
        except (ValueError, KeyError, NotImplementedError, OSError, TypeError) as error:
            raise UserError(f"{cannot}: {_first_line(error)}") from error
        check(config)
    try:
        with _quiet_transformers():
            gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except (ValueError, KeyError, NotImplementedError, OSError, TypeError, RuntimeError) as error:
        raise UserError(f"{cannot}: {_first_line(error)}") from error
    # A model loaded from GGUF refuses save_pretrained: rebuild it from its config, without the quantization block.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    from transformers.initialization import no_init_weights

    with no_init_weights():  # every weight comes from the state dict: a random init of 268M parameters is wasted
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.tie_weights()  # no_init_weights also skips the tying: a tied unembedding would be saved twice
    del gguf_model
    tokenizer_note = {"bos_token": tokenizer.bos_token, "eos_token": tokenizer.eos_token,
                      "pad_token": tokenizer.pad_token, "unk_token": tokenizer.unk_token}
    if bos_token is not None and bos_token != tokenizer.bos_token:
        bos_id = tokenizer.convert_tokens_to_ids(bos_token)
        tokenizer_note.update(bos_token=bos_token, bos_token_in_gguf=tokenizer.bos_token, bos_reason=bos_reason)
        tokenizer.bos_token = bos_token
        model.config.bos_token_id = bos_id
        if model.generation_config is not None:
            model.generation_config.bos_token_id = bos_id
    provenance = {
        "what": "a GGUF file converted by iclgd: weights dequantized by transformers, saved as float32 safetensors; "
                "the quantization below is what the weights went through",
        "gguf": {**info.record(), **({"file": file_label} if file_label else {})},
        "tokenizer": tokenizer_note,
        "conversion": {"dtype": "float32", "seconds": None, "date": datetime.now(UTC).isoformat(timespec="seconds"),
                       "versions": library_versions("gguf", "accelerate", "safetensors", "tokenizers")},
        **(extra or {}),
    }
    def complete(folder: Path) -> bool:  # another process converting the same file first: its folder is kept
        return (folder / PROVENANCE_FILE).is_file()

    with atomic_folder(target, replace=replace, complete=complete) as scratch:
        with _quiet_transformers():
            model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        provenance["conversion"]["seconds"] = round(time.time() - started, 1)
        (scratch / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    return target


def converted_folder(path: Path, *, check: Callable | None = None) -> Path:
    """The cached safetensors folder of a GGUF file, converting it on first use (announced on stderr)."""
    from iclgd.models.offline import named_model_by_sha

    path = Path(path).expanduser().resolve()
    sha = sha256_of(path)
    target = cache_root() / "gguf" / sha
    if (target / PROVENANCE_FILE).is_file():
        return target
    known = named_model_by_sha(sha)  # the same bytes as a named model: the same tokenizer choices
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)  # a log's line stays one line, however long the path
    with console.status(f"converting {path.name} to safetensors, once (cache: {target})"):
        folder = convert_gguf(path, target, sha256=sha, check=check,
                              bos_token=known.bos_token if known else None,
                              bos_reason=known.bos_reason if known else None,
                              extra={"named_model": known.name} if known else None)
    console.print(f"converted {path.name} in {read_provenance(folder)['conversion']['seconds']} s -> {folder}",
                  markup=False, highlight=False)
    return folder
