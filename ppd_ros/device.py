"""Torch device names -> torch.device, with one clear line when CUDA is asked for but absent."""
from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A device that this torch build or machine cannot provide; the message says the fix."""


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:N``, ... checked.

    Raises :class:`DeviceError` (one line with the fix) for an unknown name, for CUDA on a torch
    build without CUDA, and for CUDA when no GPU (or not GPU N) is visible.
    """
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise DeviceError(f"unknown device {str(name)!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type != "cuda":
        return device
    if torch.version.cuda is None:
        raise DeviceError(
            f"CUDA requested (device {str(name)!r}) but this torch build ({torch.__version__}) has no CUDA; "
            f"install a CUDA build of torch (https://pytorch.org/get-started/locally/) or use device cpu")
    count = torch.cuda.device_count()
    if count == 0:
        raise DeviceError(
            f"CUDA requested (device {str(name)!r}) but no GPU is visible to torch {torch.__version__} "
            f"(CUDA {torch.version.cuda}); check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES, "
            f"or use device cpu")
    if device.index is not None and device.index >= count:
        raise DeviceError(
            f"device {str(name)!r} requested but only {count} GPU(s) are visible (cuda:0..cuda:{count - 1})")
    return device
