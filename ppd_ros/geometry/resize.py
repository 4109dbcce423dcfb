"""Nearest-neighbour resizing with pixel centres aligned: the one resize for depth and masks.

Output pixel i reads source pixel floor((i + 0.5) * n_in / n_out), the pixel whose area contains
the output pixel's centre (torch "nearest-exact", OpenCV INTER_NEAREST_EXACT). Depth is never
interpolated: a smoothing resize would invent depths between surfaces (flying pixels).
"""
from __future__ import annotations

import numpy as np
import torch


def nearest_indices(size_in: int, size_out: int) -> np.ndarray:
    """Source index of every output index along one axis."""
    return np.minimum(((np.arange(size_out) + 0.5) * size_in / size_out).astype(np.int64), size_in - 1)


def resize_nearest(image, height: int, width: int):
    """(h, w, ...) numpy array or torch tensor -> (height, width, ...) of the same kind and device."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    rows, cols = nearest_indices(h, height), nearest_indices(w, width)
    if isinstance(image, torch.Tensor):
        rows_t = torch.from_numpy(rows).to(image.device)
        cols_t = torch.from_numpy(cols).to(image.device)
        return image.index_select(0, rows_t).index_select(1, cols_t)
    return np.asarray(image)[rows[:, None], cols[None, :]]
