"""Input-size rule of PPD inference: keep the aspect ratio, match the area of 1024x768, both sides
multiples of 16 (the DiT's token size)."""
from __future__ import annotations

import math

import cv2
import numpy as np

INFERENCE_AREA = 1024 * 768
SIZE_MULTIPLE = 16


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
    return cv2.INTER_AREA if inference_scale(height, width, target_area) < 1 else cv2.INTER_CUBIC


def resize_for_inference(rgb: np.ndarray, target_area: int = INFERENCE_AREA) -> np.ndarray:
    """Resize an H x W x 3 uint8 image to :func:`inference_size` with :func:`resize_interpolation`."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 image, got shape {rgb.shape}")
    height, width = rgb.shape[:2]
    out_h, out_w = inference_size(height, width, target_area)
    return cv2.resize(rgb, (out_w, out_h), interpolation=resize_interpolation(height, width, target_area))


__all__ = ["INFERENCE_AREA", "inference_scale", "inference_size", "resize_interpolation", "resize_for_inference"]
