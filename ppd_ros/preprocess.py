"""Input-size rule of PPD inference: keep the aspect ratio, match the area of 1024x768, both sides
multiples of 16 (the DiT's token size), and the resize to that size.

:func:`resize_for_inference` (cv2 on the host) is the reference. :func:`resize_on_device` does the
same resize on the backend's device from uint8 frames: cv2's interpolation written as two small
matrices per size (rows, then columns), so a CUDA backend uploads uint8 and resizes there. It
follows cv2's rules (INTER_AREA weights when both sides shrink, its two-tap rule when one side
grows, a = -0.75 cubic with replicated borders) in float32 and rounds to whole grey levels like
cv2's uint8 output; cv2 computes its cubic in fixed point, so a few pixels differ by one level.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ppd_ros.constants import INFERENCE_AREA, SIZE_MULTIPLE

# cv2's interpolation flag values (cv2 itself is imported only where it resizes)
INTER_CUBIC = 2
INTER_AREA = 3
_CUBIC_A = -0.75  # cv2's cubic kernel parameter


def inference_scale(height: int, width: int, target_area: int = INFERENCE_AREA) -> float:
    """Scale factor sqrt(target_area / (height*width)) that brings an image to the target area."""
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    return math.sqrt(target_area / (height * width))


def inference_size(
    height: int, width: int, target_area: int = INFERENCE_AREA, multiple: int = SIZE_MULTIPLE
) -> tuple[int, int]:
    """(h, w) the network runs at: each side * scale, rounded (half to even, Python ``round``)
    to a multiple of ``multiple``, at least ``multiple``."""
    scale = inference_scale(height, width, target_area)
    return (
        max(multiple, multiple * round(height * scale / multiple)),
        max(multiple, multiple * round(width * scale / multiple)),
    )


def resize_interpolation(height: int, width: int, target_area: int = INFERENCE_AREA) -> int:
    """cv2 flag used for the resize: INTER_AREA when shrinking (scale < 1), else INTER_CUBIC."""
    return INTER_AREA if inference_scale(height, width, target_area) < 1 else INTER_CUBIC


def resize_for_inference(rgb: np.ndarray, target_area: int = INFERENCE_AREA) -> np.ndarray:
    """Resize an H x W x 3 uint8 image to :func:`inference_size` with :func:`resize_interpolation`."""
    import cv2

    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 image, got shape {rgb.shape}")
    height, width = rgb.shape[:2]
    out_h, out_w = inference_size(height, width, target_area)
    return cv2.resize(rgb, (out_w, out_h), interpolation=resize_interpolation(height, width, target_area))


# --- the same resize as matrices (device path) ----------------------------------------------------

def _area_weights(src: int, dst: int) -> np.ndarray:
    """cv2 INTER_AREA on a shrinking (or equal) side: each output pixel averages the source
    pixels under its footprint, weighted by the covered fraction (slivers < 1e-3 dropped)."""
    scale = src / dst
    weights = np.zeros((dst, src))
    for o in range(dst):
        start, end = o * scale, min(o * scale + scale, src)
        first, last = math.floor(start), min(math.ceil(end), src)
        for i in range(first, last):
            covered = min(end, i + 1) - max(start, i)
            if covered > 1e-3:
                weights[o, i] = covered
        weights[o] /= weights[o].sum()
    return weights


def _area_linear_weights(src: int, dst: int) -> np.ndarray:
    """cv2 INTER_AREA when one side grows: two taps, the second weighted by the part of the output
    pixel that lies in the next source pixel."""
    scale, inverse = src / dst, dst / src
    weights = np.zeros((dst, src))
    for o in range(dst):
        i = math.floor(o * scale)
        fraction = (o + 1) - (i + 1) * inverse
        fraction = 0.0 if fraction <= 0 else fraction - math.floor(fraction)
        weights[o, min(i, src - 1)] += 1 - fraction
        weights[o, min(i + 1, src - 1)] += fraction
    return weights


def _cubic_weights(src: int, dst: int) -> np.ndarray:
    """cv2 INTER_CUBIC: four taps around the pixel-centre position, a = -0.75, borders replicated."""
    scale = src / dst
    a = _CUBIC_A
    weights = np.zeros((dst, src))
    for o in range(dst):
        position = (o + 0.5) * scale - 0.5
        i = math.floor(position)
        x = position - i
        taps = (((a * (x + 1) - 5 * a) * (x + 1) + 8 * a) * (x + 1) - 4 * a,
                ((a + 2) * x - (a + 3)) * x * x + 1,
                ((a + 2) * (1 - x) - (a + 3)) * (1 - x) * (1 - x) + 1)
        taps = (*taps, 1 - sum(taps))
        for k, weight in enumerate(taps):
            weights[o, min(max(i - 1 + k, 0), src - 1)] += weight
    return weights


@functools.lru_cache(maxsize=32)
def resize_matrices(height: int, width: int, out_h: int, out_w: int, interpolation: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(rows (out_h, height), columns (out_w, width)) float32 such that ``rows @ image @ columns.T``
    is cv2.resize of a (height, width) channel with ``interpolation`` (INTER_AREA or INTER_CUBIC)."""
    if interpolation == INTER_CUBIC:
        rows, cols = _cubic_weights(height, out_h), _cubic_weights(width, out_w)
    elif interpolation == INTER_AREA and height >= out_h and width >= out_w:
        rows, cols = _area_weights(height, out_h), _area_weights(width, out_w)
    elif interpolation == INTER_AREA:
        rows, cols = _area_linear_weights(height, out_h), _area_linear_weights(width, out_w)
    else:
        raise ValueError(f"no resize matrices for interpolation flag {interpolation}")
    return rows.astype(np.float32), cols.astype(np.float32)


@functools.lru_cache(maxsize=32)
def _matrices_on(height: int, width: int, out_h: int, out_w: int, interpolation: int,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    rows, cols = resize_matrices(height, width, out_h, out_w, interpolation)
    return torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device)


def resize_on_device(frames: torch.Tensor, target_area: int = INFERENCE_AREA) -> torch.Tensor:
    """uint8 frames (N, H, W, 3) on any device -> (N, 3, h, w) float32 in [0, 1] at
    :func:`inference_size`, resized on that device like :func:`resize_for_inference` (rounded to
    whole grey levels, then / 255)."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames (N, H, W, 3), got {tuple(frames.shape)} {frames.dtype}")
    height, width = int(frames.shape[1]), int(frames.shape[2])
    out_h, out_w = inference_size(height, width, target_area)
    rows, cols = _matrices_on(height, width, out_h, out_w, resize_interpolation(height, width, target_area),
                              frames.device)
    image = frames.permute(0, 3, 1, 2).to(torch.float32)  # (N, 3, H, W)
    resized = torch.matmul(torch.matmul(rows, image), cols.T)
    return resized.round_().clamp_(0, 255).div_(255.0)


__all__ = ["INFERENCE_AREA", "INTER_AREA", "INTER_CUBIC", "inference_scale", "inference_size", "resize_interpolation",
           "resize_for_inference", "resize_matrices", "resize_on_device"]
