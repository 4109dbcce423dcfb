"""Colour-mapped depth images, one function per meaning. All return (H, W, 3) uint8 RGB."""
from __future__ import annotations

import cv2
import numpy as np


def _apply(scaled01: np.ndarray, colormap: int) -> np.ndarray:
    index = (np.clip(np.nan_to_num(scaled01), 0.0, 1.0) * 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(index, colormap), cv2.COLOR_BGR2RGB)


def inverse_depth_rgb(depth: np.ndarray) -> np.ndarray:
    """Depth in metres (NaN / <= 0 = none) as turbo of inverse depth over its 2%..98% range
    (sampled on every 4th pixel of every 4th row); black where there is no depth. The node's
    ``depth/colored``."""
    depth = np.asarray(depth, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        return np.zeros(depth.shape + (3,), np.uint8)
    inverse = np.divide(1.0, depth, out=np.zeros_like(depth), where=valid)
    sample = inverse[::4, ::4][valid[::4, ::4]]
    low, high = np.percentile(sample if sample.size else inverse[valid], [2.0, 98.0])
    rgb = _apply((inverse - low) / max(high - low, 1e-12), cv2.COLORMAP_TURBO)
    rgb[~valid] = 0
    return rgb


def relative_depth_rgb(relative: np.ndarray) -> np.ndarray:
    """PPD relative log-depth as inferno over its 2%..98% range, near = bright (``ppd infer``)."""
    relative = np.asarray(relative, dtype=np.float32)
    finite = np.isfinite(relative)
    low, high = np.percentile(relative[finite], [2, 98]) if finite.any() else (0.0, 1.0)
    return _apply((high - relative) / max(high - low, 1e-6), cv2.COLORMAP_INFERNO)


def depth_range_rgb(depth: np.ndarray, low: float, high: float) -> np.ndarray:
    """Depth in metres as inferno over a fixed [low, high] range, near = bright, black where there
    is no depth (side-by-side prediction / ground truth in reports)."""
    depth = np.asarray(depth, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(depth) & (depth > 0)
    rgb = _apply((high - depth) / max(high - low, 1e-6), cv2.COLORMAP_INFERNO)
    rgb[~valid] = 0
    return rgb


def error_rgb(error: np.ndarray, max_error: float) -> np.ndarray:
    """A non-negative error map as jet over [0, max_error], black where the error is NaN."""
    error = np.asarray(error, dtype=np.float32)
    rgb = _apply(error / max_error, cv2.COLORMAP_JET)
    rgb[~np.isfinite(error)] = 0
    return rgb
