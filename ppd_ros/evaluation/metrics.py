"""Depth quality metrics on one frame (and between consecutive frames).

All functions take float (H, W) numpy arrays in metres on the same grid; ground truth (GT) is valid
where finite and > 0 (and inside an optional mask). Predictions from PPD are relative log-depth;
:func:`align_log_depth` turns them into metres with the least-squares affine map in log(d + 1)
space fitted to the GT (the evaluation protocol for relative models). Metric predictions are
compared as they are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ppd_ros.metric.alignment import relative_to_metres, least_squares_scale_shift

DELTA1_THRESHOLD = 1.25
# Depth-boundary F1 (as in Depth Pro): occluding contours at neighbour depth ratios 1.05..1.25,
# F1 averaged over the thresholds with weights proportional to the threshold.
BOUNDARY_RATIO_MIN = 1.05
BOUNDARY_RATIO_MAX = 1.25
BOUNDARY_RATIO_COUNT = 10


def gt_valid_mask(gt: np.ndarray, mask: np.ndarray | None = None, min_depth: float = 0.0,
                  max_depth: float = math.inf) -> np.ndarray:
    """True where the GT is finite and inside (min_depth, max_depth) and the optional mask is set."""
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(gt) & (gt > max(min_depth, 0.0)) & (gt < max_depth)
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    return valid


def align_log_depth(relative: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(metric depth, scale, shift): least squares ``log(gt + 1) ~ scale * relative + shift`` (float64)
    on ``valid`` pixels where ``relative`` is finite, applied to every pixel (NaN = no depth). A
    constant prediction gets the best constant depth; no valid pixel gives scale 1, shift 0."""
    usable = valid & np.isfinite(relative)
    target = np.log1p(np.where(usable, gt, 0.0).astype(np.float64))
    prediction = np.where(usable, relative, 0.0)
    scale, shift = least_squares_scale_shift(prediction, target, usable, dtype=np.float64)
    return relative_to_metres(relative, scale, shift), scale, shift


def abs_rel(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> float:
    """Mean of |pred - gt| / gt over valid pixels (NaN when none). A pixel without predicted depth
    (NaN) counts as depth 0, error 1."""
    p, g = np.nan_to_num(pred[valid].astype(np.float64), nan=0.0), gt[valid].astype(np.float64)
    if g.size == 0:
        return math.nan
    return float(np.mean(np.abs(p - g) / g))


def delta1(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, threshold: float = DELTA1_THRESHOLD) -> float:
    """Share of valid pixels with max(pred / gt, gt / pred) < threshold (NaN when none).
    Non-positive predictions count as failures."""
    p, g = pred[valid].astype(np.float64), gt[valid].astype(np.float64)
    if g.size == 0:
        return math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.maximum(p / g, g / p)
    good = (p > 0) & np.isfinite(ratio) & (ratio < threshold)
    return float(np.mean(good))


def neighbour_ratios(depth: np.ndarray, valid: np.ndarray | None = None) -> list[np.ndarray]:
    """Depth ratios neighbour / pixel in the four directions (right, left, down, up), float32,
    NaN for pairs touching an invalid pixel. Shapes (H, W-1), (H, W-1), (H-1, W), (H-1, W)."""
    d = depth.astype(np.float32)
    if valid is not None:
        d = np.where(valid, d, np.float32(np.nan))
    with np.errstate(invalid="ignore", divide="ignore"):
        return [d[:, 1:] / d[:, :-1], d[:, :-1] / d[:, 1:], d[1:, :] / d[:-1, :], d[:-1, :] / d[1:, :]]


def occluding_contours(depth: np.ndarray, ratio: float, valid: np.ndarray | None = None,
                       ratios: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Occluding-contour maps of a depth image at one neighbour ratio.

    Returns four boolean maps, one per neighbour direction (right, left, down, up): entry (i, j) is
    set when the neighbour in that direction is more than ``ratio`` times as far, i.e. pixel
    (i, j) is the near side of a depth discontinuity. Pairs touching an invalid pixel are unset.
    ``ratios``: precomputed :func:`neighbour_ratios` (several thresholds on one image).
    """
    if ratios is None:
        ratios = neighbour_ratios(depth, valid)
    with np.errstate(invalid="ignore"):
        return [r > ratio for r in ratios]


def boundary_f1_at(pred: np.ndarray, gt: np.ndarray, ratio: float, valid: np.ndarray | None = None,
                   pred_ratios=None, gt_ratios=None) -> float:
    """F1 of the predicted occluding contours against the GT ones at one ratio threshold.

    Precision is averaged over the directions that have predicted contours, recall over those
    with GT contours (Depth Pro averages over all four, which caps scenes whose edges all face
    one way, e.g. a single step, at 0.25; on natural images both agree). 0 when nothing matches.
    """
    precisions, recalls = [], []
    pred_maps = occluding_contours(pred, ratio, valid, pred_ratios)
    gt_maps = occluding_contours(gt, ratio, valid, gt_ratios)
    for p, g in zip(pred_maps, gt_maps):
        hits = np.count_nonzero(p & g)
        predicted, actual = np.count_nonzero(p), np.count_nonzero(g)
        if predicted:
            precisions.append(hits / predicted)
        if actual:
            recalls.append(hits / actual)
    precision = float(np.mean(precisions)) if precisions else 0.0
    recall = float(np.mean(recalls)) if recalls else 0.0
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def boundary_f1(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None,
                ratio_min: float = BOUNDARY_RATIO_MIN, ratio_max: float = BOUNDARY_RATIO_MAX,
                count: int = BOUNDARY_RATIO_COUNT) -> float:
    """Scale-invariant depth-boundary F1: :func:`boundary_f1_at` over ``count`` ratios from
    ``ratio_min`` to ``ratio_max``, weighted by the ratio. NaN when the GT has no contour at all."""
    thresholds = np.linspace(ratio_min, ratio_max, count)
    pred_ratios, gt_ratios = neighbour_ratios(pred, valid), neighbour_ratios(gt, valid)
    if not any(m.any() for m in occluding_contours(gt, thresholds[0], ratios=gt_ratios)):
        return math.nan
    weights = thresholds / thresholds.sum()
    return float(sum(w * boundary_f1_at(pred, gt, t, pred_ratios=pred_ratios, gt_ratios=gt_ratios)
                     for t, w in zip(thresholds, weights)))


def gt_edge_band(gt: np.ndarray, valid: np.ndarray, ratio: float = BOUNDARY_RATIO_MIN, radius: int = 2) -> np.ndarray:
    """Pixels within ``radius`` (Chebyshev) of a GT occluding contour at ``ratio`` (either side)."""
    edges = np.zeros(gt.shape, dtype=bool)
    right, left, down, up = occluding_contours(gt, ratio, valid)
    horizontal = right | left
    vertical = down | up
    edges[:, :-1] |= horizontal
    edges[:, 1:] |= horizontal
    edges[:-1, :] |= vertical
    edges[1:, :] |= vertical
    return dilate(edges, radius)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation with a (2 radius + 1)^2 square."""
    out = mask.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            out |= shifted(mask, dy, dx, False)
    return out


def shifted(array: np.ndarray, dy: int, dx: int, fill) -> np.ndarray:
    """``out[i, j] = array[i + dy, j + dx]``, ``fill`` outside the image."""
    h, w = array.shape
    out = np.full_like(array, fill)
    ys, yd = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
    xs, xd = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out[yd, xd] = array[ys, xs]
    return out


def flying_pixel_share(cloud_depth: np.ndarray, gt: np.ndarray, valid: np.ndarray, tolerance: float = 0.05,
                       radius: int = 2, edge_ratio: float = BOUNDARY_RATIO_MIN) -> tuple[float, int]:
    """(share, points) of cloud points near GT edges that hang between surfaces.

    ``cloud_depth``: depth of the published cloud on the GT grid (NaN where the cloud has no point,
    e.g. removed by the flying-pixel filter). A point in the band of ``radius`` pixels around a GT
    occluding contour is *flying* when its depth is more than ``tolerance`` (relative) away from
    the GT depth of every valid pixel in its (2 radius + 1)^2 neighbourhood: it belongs to
    neither the foreground nor the background surface. NaN share when the band has no point.
    """
    band = gt_edge_band(gt, valid, edge_ratio, radius) & np.isfinite(cloud_depth)
    rows, cols = np.nonzero(band)
    points = int(rows.size)
    if points == 0:
        return math.nan, 0
    # GT around each band point, from a NaN-padded copy (only the band is examined: it is small)
    padded = np.pad(np.where(valid, gt, np.nan).astype(np.float64), radius, constant_values=np.nan)
    depth = cloud_depth[rows, cols].astype(np.float64)
    near_some_surface = np.zeros(points, dtype=bool)
    with np.errstate(invalid="ignore"):
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                neighbour = padded[rows + radius + dy, cols + radius + dx]
                near_some_surface |= np.abs(depth - neighbour) <= tolerance * neighbour
    return float(np.count_nonzero(~near_some_surface) / points), points


def temporal_change_error(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, previous_pred: np.ndarray,
                          previous_gt: np.ndarray, previous_valid: np.ndarray) -> float:
    """Mean |Δ log pred - Δ log gt| between consecutive frames at the same pixel (pixels valid in
    both frames, positive predictions). 0 for a prediction whose frame-to-frame change matches
    the GT; exact for a static camera, an approximation when it moves. NaN when no pixel is shared."""
    both = valid & previous_valid & (pred > 0) & (previous_pred > 0)
    if not both.any():
        return math.nan
    change_pred = np.log(pred[both]) - np.log(previous_pred[both])
    change_gt = np.log(gt[both]) - np.log(previous_gt[both])
    return float(np.mean(np.abs(change_pred - change_gt)))


@dataclass
class FrameMetrics:
    """Depth metrics of one frame (NaN where not measurable)."""

    abs_rel: float = math.nan
    delta1: float = math.nan
    boundary_f1: float = math.nan
    flying_share: float = math.nan  # cloud points near GT edges that hang between surfaces
    edge_points: int = 0  # cloud points in the GT edge band
    temporal_error: float = math.nan  # vs the previous frame
    valid_pixels: int = 0


def depth_metrics(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> FrameMetrics:
    """AbsRel, delta1 and boundary F1 of metric ``pred`` against ``gt`` on ``valid`` pixels."""
    return FrameMetrics(
        abs_rel=abs_rel(pred, gt, valid),
        delta1=delta1(pred, gt, valid),
        boundary_f1=boundary_f1(pred, gt, valid),
        valid_pixels=int(valid.sum()),
    )
