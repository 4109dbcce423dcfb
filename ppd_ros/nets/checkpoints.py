"""Strict loading of official checkpoint files into our modules.

The official code loads with ``strict=False`` and silently ignores mistakes; we name every
missing, unexpected or mis-shaped key instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch


class CheckpointError(RuntimeError):
    """A checkpoint file does not match the module it is loaded into."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or torch file (``weights_only=True``) into a flat state dict.

    Torch files that wrap the weights (``{"model": ...}``, ``{"state_dict": ...}``) are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - torch/pickle/zip/safetensors each raise their own types
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(
            f"cannot read checkpoint {path} ({path.stat().st_size} bytes): {detail[:300]}; the file is damaged, "
            f"truncated or not a checkpoint: delete it and download it again") from error
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return dict(obj)


def select_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``state`` under ``prefix`` (e.g. ``"dit."``), with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_prefixed(
    build: Callable[[], torch.nn.Module],
    source: str | Path | Mapping[str, torch.Tensor],
    prefix: str,
    ignored_prefix: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.nn.Module:
    """Build a module on the meta device and fill it strictly from the ``prefix`` part of a file or
    state dict; an ``ignored_prefix`` part is tolerated, any other key is a :class:`CheckpointError`.
    No time goes into a random init that would be overwritten. Returns the module in eval mode."""
    name = str(source) if isinstance(source, (str, Path)) else "state dict"
    state = read_state_dict(source) if isinstance(source, (str, Path)) else dict(source)
    stray = sorted(k for k in state if not k.startswith(prefix) and not k.startswith(ignored_prefix))
    if stray:
        raise CheckpointError(f"{name}: {len(stray)} unexpected keys outside '{prefix}' / "
                              f"'{ignored_prefix}': " + ", ".join(stray))
    with torch.device("meta"):
        module = build()
    module = module.to(dtype).to_empty(device=device)
    load_strict(module, select_prefix(state, prefix), source=f"{name} ('{prefix}' part)")
    return module.eval()


def load_strict(
    module: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str = "checkpoint",
    ignore_missing: Iterable[str] = (),
) -> None:
    """Copy ``state`` into ``module``; raise :class:`CheckpointError` naming every mismatch.

    ``ignore_missing`` lists module keys that may be absent from the file (e.g. unused tokens).
    Tensors are cast to the module's dtype.
    """
    expected = module.state_dict()
    ignore = set(ignore_missing)
    missing = sorted(k for k in expected if k not in state and k not in ignore)
    unexpected = sorted(k for k in state if k not in expected)
    shapes = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or shapes:
        lines = [f"{source} does not match {type(module).__name__}:"]
        if missing:
            lines.append(f"  {len(missing)} missing: " + ", ".join(missing))
        if unexpected:
            lines.append(f"  {len(unexpected)} unexpected: " + ", ".join(unexpected))
        if shapes:
            lines.append(f"  {len(shapes)} with wrong shape: " + "; ".join(shapes))
        raise CheckpointError("\n".join(lines))
    module.load_state_dict({k: v for k, v in state.items()}, strict=False)
