"""YAML config files: read a mapping, apply CLI overrides, validate into a pydantic model, one-line errors."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from iclgd.errors import UserError

Model = TypeVar("Model", bound=BaseModel)


def read_yaml_mapping(path: str | Path, example: str) -> dict[str, Any]:
    """The mapping in a YAML file; ``example`` names a file of the right kind for the error message."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"config file {path} is a folder: pass a YAML file such as {example}")
    if not path.is_file():
        raise UserError(f"config file {path} does not exist: pass a YAML file such as {example}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise UserError(f"config file {path} is not valid YAML ({' '.join(str(err).split())}): fix it") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of fields, not {type(data).__name__}")
    return data


def validation_message(err: ValidationError) -> str:
    """The first validation problem as "'field': message (got value)"."""
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    got = f" (got {first['input']!r})" if where and not isinstance(first.get("input"), dict) else ""
    return f"'{where}': {message}{got}" if where else message


def unknown_key_message(err: ValidationError, cls: type[BaseModel]) -> str | None:
    """For a key the model does not have: "unknown key 'eval_sise' (did you mean 'eval_size'?)"; else None."""
    first = err.errors()[0]
    if first["type"] != "extra_forbidden" or len(first["loc"]) != 1:
        return None
    return unknown_key_text(str(first["loc"][0]), cls)


def unknown_key_text(key: str, cls: type[BaseModel]) -> str:
    """ "unknown key 'eval_sise' (did you mean 'eval_size'?)", or the keys ``cls`` has where none is close."""
    close = difflib.get_close_matches(key, list(cls.model_fields), n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"the keys are {', '.join(cls.model_fields)}"
    return f"unknown key '{key}' ({hint})"


def differences(there: Mapping[str, Any], now: Mapping[str, Any], skip: Collection[str] = ()) -> str:
    """What a stored config and the asked one differ in, for a refusal: "steps 4 there, 5 now; seed 1 there, 2 now"
    over the fields of ``now`` but ``skip`` (a field ``there`` lacks reads as None); "" where none differ."""
    return "; ".join(f"{name} {there.get(name)!r} there, {value!r} now" for name, value in now.items()
                     if name not in skip and there.get(name) != value)


def build_config(cls: type[Model], path: str | Path | None, overrides: dict[str, Any] | None, example: str,
                 source: str | None = None) -> Model:
    """``cls`` from an optional YAML file, overridden by the non-None ``overrides`` (the CLI flags); ``source``
    names where the settings came from in an error (default: the file, or the command line)."""
    data = read_yaml_mapping(path, example) if path is not None else {}
    data.update({key: value for key, value in (overrides or {}).items() if value is not None})
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        source = source or (f"config file {path}" if path is not None else "the command line")
        extra = [e for e in err.errors() if e["type"] == "extra_forbidden" and len(e["loc"]) == 1]
        if extra:  # an unknown key first: it often explains a missing one ('eval_sise' and no 'eval_size')
            raise UserError(f"bad setting in {source}: {unknown_key_text(str(extra[0]['loc'][0]), cls)}: fix the key "
                            "and run again") from None
        unknown = unknown_key_message(err, cls)
        if unknown is not None:
            raise UserError(f"bad setting in {source}: {unknown}: fix the key and run again") from None
        raise UserError(f"bad setting in {source}: {validation_message(err)} (fix the value and run again)") from None
