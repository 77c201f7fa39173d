"""Loading a causal LM (hub id, local folder, GGUF file or named offline model) ready for capture, and its untrained
variants. A GGUF file is converted once to a cached safetensors folder (:mod:`iclgd.models.gguf`); a named model
(``smollm2-135m``, :mod:`iclgd.models.offline`) is the folder ``iclgd models fetch`` wrote.

    load_model(name_or_path, dtype="float32", untrained=None, seed=0, device="cpu") -> LoadedModel
    load_tokenizer(name_or_path) -> (tokenizer, config, family)   # no weights: checking prompts before model work
    loaded(model, tokenizer, name=...) -> LoadedModel          # wrap a model built in memory (tiny_model)
    make_untrained(model, family, variant, seed)                # in place
    prepare(model) -> Family                                    # idempotent; done by the two above

A prepared model runs attention through :mod:`iclgd.models.attention` (``attn_implementation="iclgd"``; GPT-Neo,
GPT-J and XGLM get their own forward, see :mod:`iclgd.models.own_attention`), is in eval mode (dropout off) and
has ``requires_grad=False`` on every parameter: finetuning switches on what it trains. Without an active capture
session the model computes exactly what the stock model computes.
"""

from __future__ import annotations

import copy
import hashlib
import os
import pickle
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch
from safetensors import SafetensorError
from torch import nn

from iclgd.errors import UserError
from iclgd.models import attention as _attention  # registers the "iclgd" attention and mask functions
from iclgd.models.families import (
    Family,
    attention_modules,
    family_of,
    get_module,
    is_norm,
    layer_window,
)
from iclgd.models.gguf import cache_root, read_provenance, sha256_of
from iclgd.models.init import fairseq_init
from iclgd.models.own_attention import install
from iclgd.runs import atomic_file

Untrained = Literal["all", "keep_layernorm", "trained_embeddings", "all_fairseq", "keep_layernorm_fairseq",
                    "trained_embeddings_fairseq"]
# Which weights are random; the "_fairseq" ones are drawn by fairseq's initialisation (iclgd.models.init)
UNTRAINED_VARIANTS: tuple[str, ...] = get_args(Untrained)
FAIRSEQ_SUFFIX = "_fairseq"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    family: Family
    name: str
    dtype: torch.dtype
    untrained: str | None = None
    source_revision: str | None = None
    provenance: dict | None = None  # iclgd-provenance.json of a converted GGUF / named model: file, sha256, quant

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def n_layers(self) -> int:
        return len(attention_modules(self.model, self.family))


def prepare(model: nn.Module) -> Family:
    """Route ``model``'s attention through iclgd (idempotent), eval mode, no gradients. Returns its family."""
    family = family_of(model)
    # A deep copy (new id) or a model whose config was switched to another implementation is prepared again.
    if getattr(model, "_iclgd_prepared", None) == id(model) and model.config._attn_implementation == "iclgd":
        return family
    slot = _attention.SessionSlot()
    model._iclgd_slot = slot
    for layer, attention in enumerate(attention_modules(model, family)):
        if family.own_attention is not None:
            install(attention, family.own_attention)
        attention._iclgd_layer = layer
        attention._iclgd_slot = slot
        attention._iclgd_window = layer_window(model.config, family, layer)
    if family.own_attention is None:
        model.set_attn_implementation(_attention.IMPLEMENTATION)
    else:
        # Their attention class was chosen at construction; the config value now only selects the mask function.
        model.config._attn_implementation_internal = _attention.IMPLEMENTATION
    model.eval()
    model.requires_grad_(False)
    model._iclgd_prepared = id(model)
    return family


def loaded(model: nn.Module, tokenizer: object, *, name: str, untrained: str | None = None,
           source_revision: str | None = None) -> LoadedModel:
    """Wrap a model already in memory (e.g. from :func:`iclgd.models.tiny.tiny_model`), preparing it."""
    family = prepare(model)
    dtype = next(model.parameters()).dtype
    return LoadedModel(model, tokenizer, family, name, dtype, untrained, source_revision)


def _dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return False
    except OSError:
        return True


def _resolve(name_or_path: str) -> tuple[str, bool]:
    """(what to pass to from_pretrained, local_files_only). Raises UserError for what cannot be a model."""
    from iclgd.models import gguf, offline

    path = Path(name_or_path).expanduser()
    gguf_file = gguf.find_gguf(path)
    if gguf_file is not None:
        return str(gguf.converted_folder(gguf_file, check=family_of)), True
    if name_or_path in offline.NAMED_MODELS and not path.exists():
        return str(offline.fetched_folder(name_or_path)), True
    if name_or_path in offline.SHIPPED_MODELS and not path.exists():
        return str(offline.SHIPPED_MODELS[name_or_path]), True
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(
                f"{name_or_path!r} is a folder but not a model: it has no config.json and no .gguf file "
                "(save one with model.save_pretrained(folder), or pass a .gguf file or a hub id)"
            )
        return str(path), True
    looks_like_path = (name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1  # hub ids: org/name
                       or name_or_path.lower().endswith(".gguf"))
    if path.exists() or looks_like_path:
        raise UserError(f"{name_or_path!r} is not a model folder or .gguf file (no such file or directory); pass a "
                        "folder, a .gguf file, a named offline model (iclgd models) or a hub id")
    from transformers import AutoConfig

    try:  # a hub id already in the local cache (HF_HOME)
        AutoConfig.from_pretrained(name_or_path, local_files_only=True)
        return name_or_path, True
    except (OSError, ValueError):
        pass
    if _offline():
        import difflib

        from iclgd.models import offline

        named = [*offline.NAMED_MODELS, *offline.SHIPPED_MODELS]
        close = difflib.get_close_matches(name_or_path, named, n=1)
        if close and "/" not in name_or_path:  # a hub id has an org/; a misspelt named model has not
            raise UserError(f"{name_or_path!r} is not a named model, a local folder or a cached hub id: did you mean "
                            f"{close[0]!r}? (iclgd models lists the named ones)")
        raise UserError(
            f"{name_or_path!r} is not a local folder and is not in the Hugging Face cache, and there is no network: "
            f"download it on a machine with network (huggingface-cli download {name_or_path}) and pass the local "
            "folder, or set HF_HOME to a cache that has it"
        )
    return name_or_path, False


def check_source(name_or_path: str, *, fetch_named: bool = False) -> None:
    """UserError, before any model work, for what cannot be a model (a missing folder, a folder without config.json,
    a hub id not cached without network). With ``fetch_named`` a named offline model not fetched yet passes: the
    caller fetches it (``iclgd demo``, ``iclgd reproduce``)."""
    from iclgd.models import offline

    if fetch_named and name_or_path in offline.NAMED_MODELS and not Path(name_or_path).expanduser().exists():
        return
    source, local_only = _resolve(name_or_path)
    if local_only:  # its architecture, from config.json alone: a sweep does not find it unit by unit
        family_of(_read_config(name_or_path, source, local_only))


def _read_config(name_or_path: str, source: str, local_only: bool):
    """The model's transformers config (UserError naming the model if it cannot be read)."""
    from transformers import AutoConfig

    import iclgd.models.momentum  # noqa: F401  (registers iclgd's momentum-attention GPT-2 with the Auto classes)

    try:
        return AutoConfig.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError, KeyError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot read the model config of {name_or_path!r}: {first_line}") from error


def _tokenizer_and_config(name_or_path: str, source: str, local_only: bool) -> tuple[object, object, Family]:
    """The tokenizer, config and family of a resolved model source; UserError for an unsupported architecture or a
    missing tokenizer, before any weight is read."""
    from transformers import AutoTokenizer

    config = _read_config(name_or_path, source, local_only)
    family = family_of(config)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        problem = None
    except (OSError, ValueError) as error:
        tokenizer, problem = None, (str(error).strip().splitlines() or [type(error).__name__])[0]
    # Without its files a GPT-2 tokenizer may still load, holding its special tokens alone, and encode text to nothing.
    if problem is None and len(tokenizer) <= len(set(tokenizer.all_special_ids)):
        problem = "it holds no vocabulary"
    if problem is not None:
        raise UserError(f"cannot load the tokenizer of {name_or_path!r} ({problem}): the model needs its tokenizer "
                        "files (tokenizer.json, or tokenizer_config.json with the vocabulary); save them with "
                        "tokenizer.save_pretrained(folder)")
    return tokenizer, config, family


def load_tokenizer(name_or_path: str) -> tuple[object, object, Family]:
    """A model's tokenizer, config and family without its weights: what checking a unit's prompts needs."""
    source, local_only = _resolve(name_or_path)
    return _tokenizer_and_config(name_or_path, source, local_only)


def load_model(name_or_path: str, *, dtype: str = "float32", untrained: str | None = None, seed: int = 0,
               device: str = "cpu") -> LoadedModel:
    """Load a causal LM and its tokenizer, prepared for capture; optionally an untrained variant (seeded)."""
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.utils.logging.disable_progress_bar()  # iclgd shows its own progress
    torch_dtype = _dtype(dtype)
    if untrained is not None and untrained not in UNTRAINED_VARIANTS:
        raise UserError(f"unknown untrained variant {untrained!r}: use one of {', '.join(UNTRAINED_VARIANTS)}")
    source, local_only = _resolve(name_or_path)
    tokenizer, config, family = _tokenizer_and_config(name_or_path, source, local_only)
    attn = "iclgd" if family.own_attention is None else "eager"
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, attn_implementation=attn, local_files_only=local_only
        )
    except OSError as error:
        first_line = str(error).strip().splitlines()[0]
        raise UserError(f"cannot load {name_or_path!r}: {first_line}") from error
    except (SafetensorError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        if isinstance(error, RuntimeError) and not any(s in str(error) for s in ("state_dict", "StreamReader")):
            raise
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        from iclgd.models.gguf import cache_root, find_gguf

        if Path(source).resolve().is_relative_to(cache_root().resolve()):  # iclgd's converted or fetched copy
            again = ("rerun, which converts it again" if find_gguf(Path(name_or_path))
                     else f"fetch it again (iclgd models fetch {name_or_path})")
            raise UserError(f"cannot read the weights of {name_or_path!r} ({first_line}): iclgd's copy in {source} "
                            f"is damaged; delete that folder and {again}") from error
        raise UserError(f"cannot read the weights of {name_or_path!r} ({first_line}): is the file truncated or "
                        "corrupt? download or save the model again") from error
    check_finite(model, name_or_path)
    if untrained is not None:
        make_untrained(model, family, untrained, seed)
    model.to(device)
    revision = getattr(model.config, "_commit_hash", None)
    local = Path(source).is_dir()
    return LoadedModel(model, tokenizer, prepare(model), name_or_path, torch_dtype, untrained,
                       revision if not local else None, read_provenance(Path(source)) if local else None)


def check_finite(model: nn.Module, name: str) -> None:
    """UserError naming the first floating tensor holding NaN or inf: such weights give NaN similarities, not an
    error. A sum per tensor is cheap (~0.1 s for 270M parameters on one core); only a non-finite sum, NaN/inf or
    an overflow, is looked at element by element."""
    with torch.no_grad():
        for tensor_name, tensor in model.named_parameters():
            if tensor.is_floating_point() and not torch.isfinite(tensor.sum(dtype=torch.float32)):
                if not torch.isfinite(tensor).all():
                    raise UserError(f"model {name!r} has NaN or infinite weights in {tensor_name}: the checkpoint "
                                    "is broken (a diverged training run, or a bad conversion); use another one")


def _kept_parameters(model: nn.Module, family: Family, variant: str) -> set[int]:
    """ids of the parameters an untrained variant keeps from the checkpoint."""
    kept: set[int] = set()
    if variant in ("keep_layernorm", "trained_embeddings"):
        for module in model.modules():
            if is_norm(module):
                kept.update(id(p) for p in module.parameters(recurse=False))
    if variant == "trained_embeddings":
        for path in (*family.embeddings, family.unembedding):
            kept.update(id(p) for p in get_module(model, path).parameters())
    return kept


def make_untrained(model: nn.Module, family: Family, variant: str, seed: int) -> None:
    """Replace weights by the family's own random initialisation, in place (Deutch et al.'s untrained baselines).

    ``all``: every parameter; ``keep_layernorm``: all but the norm modules (LayerNorm, RMSNorm);
    ``trained_embeddings``: all but token/position embeddings, the output embedding (tied or not) and the norms.
    The random weights come from a fresh model built from the same config on CPU in fp32 under ``seed`` (its
    ``_init_weights``; with the ``_fairseq`` suffix, then re-drawn by fairseq's initialisation), then cast to the
    model's dtype: the same seed gives the same weights on any device/dtype.
    """
    from transformers import AutoModelForCausalLM

    if variant not in UNTRAINED_VARIANTS:
        raise UserError(f"unknown untrained variant {variant!r}: use one of {', '.join(UNTRAINED_VARIANTS)}")
    config = model.config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # A copy of the config: from_config writes its attention implementation into the config it is given.
        fresh = AutoModelForCausalLM.from_config(copy.deepcopy(config), dtype=torch.float32,
                                                 attn_implementation="eager")
        if variant.endswith(FAIRSEQ_SUFFIX):
            fairseq_init(fresh, family)
    fresh_parameters = dict(fresh.named_parameters())
    kept = _kept_parameters(model, family, variant.removesuffix(FAIRSEQ_SUFFIX))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if id(param) not in kept:
                param.copy_(fresh_parameters[name].to(device=param.device, dtype=param.dtype))


MODEL_FILES = ("*.safetensors", "*.bin", "*.gguf", "*.json", "*.model", "*.txt")


def _local_files(model: str) -> list[Path] | None:
    """The weight, config and tokenizer files of a model given as a local folder or file (None for a hub id or a
    named model)."""
    path = Path(model).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted({f for pattern in MODEL_FILES for f in path.glob(pattern) if f.is_file()})
    return None


def model_files(model: str) -> dict[str, list[int]] | None:
    """[size, mtime_ns] of each file of a local model (:func:`_local_files`): what a finished unit was computed from,
    checked (cheaply) when it is reused."""
    files = _local_files(model)
    return None if files is None else {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files}


def file_sha256(path: Path) -> str:
    """sha256 of a file, kept under ``$ICLGD_CACHE/sha256/`` by (path, size, mtime): every unit of a sweep or SLURM
    array records its model's without reading gigabytes of weights again. A cache that cannot be written is skipped."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:32]
    cached = cache_root() / "sha256" / key
    try:
        return cached.read_text().strip()
    except OSError:
        pass
    digest = sha256_of(path)
    try:
        with atomic_file(cached) as tmp:
            tmp.write_text(digest + "\n")
    except OSError:
        pass
    return digest


def model_sha256(model: str, names: set[str] | None = None) -> dict[str, str] | None:
    """sha256 of each file of a local model (only those in ``names`` if given; None for a hub id, whose revision is
    recorded, or a named model, whose provenance holds its GGUF's)."""
    files = _local_files(model)
    return None if files is None else {f.name: file_sha256(f) for f in files if names is None or f.name in names}
