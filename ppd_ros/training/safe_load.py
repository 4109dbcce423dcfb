"""Reading Lightning checkpoints without running code from them.

A ``.ckpt`` is a pickle; unpickled with ``weights_only=False`` a crafted one runs any function it
names. ``ppd-train`` reads checkpoints with ``weights_only=True`` only: tensors, numbers,
strings and plain containers, which is all a ``ppd-train`` checkpoint holds (model and optimiser
state, loop counters, callback state, hyper-parameters).
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint holds pickled objects beyond tensors and plain containers; it was not loaded."""


def refusal_message(path: str | Path, error: BaseException) -> str:
    """One line saying why a checkpoint was refused (torch's message spans a dozen lines)."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    what = f"a pickled reference to {found.group(1)}" if found else str(error).splitlines()[0][:200]
    return (f"{path}: refused to load: it holds {what}, which is not training state (tensors, numbers, "
            "strings, containers); unpickling it could run code. Only checkpoints written by ppd-train load.")


def read_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint as a dict, read with ``weights_only=True``; raises
    :class:`UnsafeCheckpointError` (one line) for anything else and FileNotFoundError if absent."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpointError(refusal_message(path, error)) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path}: not a Lightning checkpoint (no state_dict)")
    return checkpoint


__all__ = ["UnsafeCheckpointError", "read_training_checkpoint", "refusal_message"]
