"""Checks of user input made before any model work: an output that cannot be written, a device that is not there.

Each raises a one-line :class:`~iclgd.errors.UserError` that names the problem and the fix. None leaves anything
behind: finding out whether a folder is writable creates a probe file and removes it at once.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

from iclgd.errors import UserError

DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?|mps")
DEVICE_HELP = "use cpu, cuda, cuda:N or mps"


def _exists(path: Path, flag: str) -> bool:
    try:
        return path.exists()
    except OSError as err:  # e.g. a parent folder that cannot be searched
        raise UserError(f"{flag} {path} cannot be reached ({err.strerror}): give a folder you can write to") from None


def check_output_dir(path: str | Path, *, flag: str = "--out") -> Path:
    """``path`` is, or can become, a folder that files can be written in; nothing is created.

    A file at ``path`` or above it, and a folder (the nearest existing one) where no file can be created, are
    refused. Permission bits do not answer that for root or on read-only mounts, so a probe file is created and
    removed in that folder.
    """
    if not str(path).strip():
        raise UserError(f"{flag} is empty: give a folder path")
    path = Path(path)
    if _exists(path, flag) and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder: give a folder path (or move the file away)")
    _check_creatable(path, path, flag)
    return path


def check_output_file(path: str | Path, *, flag: str = "--out") -> Path:
    """``path`` can be written as a file: it is not a folder and its folder is, or can become, a writable one."""
    path = Path(path)
    if _exists(path, flag) and path.is_dir():
        raise UserError(f"{flag} {path} is a folder, not a file: give a file path")
    _check_creatable(path, path.parent, flag)
    return path


def _check_creatable(path: Path, folder: Path, flag: str) -> None:
    """Files can be created in ``folder`` or, where it does not exist yet, in its nearest existing ancestor."""
    existing = folder.absolute()
    while not _exists(existing, flag):
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} {path} lies under {existing}, which is a file, not a folder: give another path")
    try:
        handle, probe = tempfile.mkstemp(prefix=".iclgd-probe-", dir=existing)
    except OSError as err:
        raise UserError(f"{flag} {path} cannot be written: no file can be created in {existing} ({err.strerror}); "
                        "give a writable folder") from None
    os.close(handle)
    os.unlink(probe)


def device_error(device: str) -> str | None:
    """Why ``device`` is not a device name we run on (None: it is one). No torch import: configs use it."""
    if DEVICE_PATTERN.fullmatch(device):
        return None
    return f"unknown device {device!r}: {DEVICE_HELP}"


def _device_name(device: str) -> str:
    problem = device_error(device)
    if problem:
        raise ValueError(problem)
    return device


# A config field holding a device name, refused at validation when it names no device we run on.
DeviceName = Annotated[str, AfterValidator(_device_name)]


def check_device(device: str) -> str:
    """``device`` names a device this machine has (CUDA present, index in range); returns it."""
    problem = device_error(device)
    if problem:
        raise UserError(problem)
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {device!r} asked but CUDA is not available here (torch {torch.__version__}): "
                            "use --device cpu, or run on a machine with a GPU")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"device {device!r} asked but this machine has {torch.cuda.device_count()} CUDA "
                            f"device(s) (cuda:0..cuda:{torch.cuda.device_count() - 1}): pick one of those")
    if device == "mps" and not torch.backends.mps.is_available():
        raise UserError("device 'mps' asked but MPS is not available here: use --device cpu")
    return device
