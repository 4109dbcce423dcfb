"""Temporal consistency of depth sequences against exact depth and camera poses.

Inputs: predicted depth in metres (T, H, W) (relative predictions are aligned first by
:func:`align_sequence`), ground-truth depth (T, H, W) (NaN / <= 0 = none), camera-to-world
poses (T, 4, 4) in the optical frame and the :class:`~ppd_ros.geometry.camera.CameraModel`.

Correspondence of a consecutive pair (i, j = i + 1), from ground truth only: pixel p of frame i
with GT depth G_i(p) is the point X = G_i(p) * ray(p) in camera i; moved into camera j
(X' = R X + t with R = R_j^T R_i, t = R_j^T (t_i - t_j)) it projects to the sub-pixel q. The pair
(p, q) counts when q lies inside the image, the pixels around q with a share in its value have
GT depth, and the point is visible in frame j: |G_j(q) - X'_z| <= ``occlusion_tolerance`` * X'_z.
Depth at a sub-pixel is sampled bilinearly in INVERSE depth (exact on planes, no blending across
a missing pixel).

TAE (temporal alignment error) of a pair: the mean over corresponding pixels of
``|Z_i(p) - P_j(q)| / P_j(q)``, where Z_i(p) is the z of the PREDICTED point P_i(p) * ray(p) moved
into camera j with the GT motion, and P_j(q) the prediction of frame j at q. It is zero when the
two predictions describe the same 3-D surface, whatever that surface is.

Flicker of a pair: on static pixels (corresponding pixels whose GT depth changes by less than
``static_tolerance`` (1 %): |G_j(q) - G_i(p)| < 0.01 G_i(p), e.g. everything under a still camera),
the mean of ``|log(P_j(q) / P_i(p)) - log(G_j(q) / G_i(p))|``: the frame-to-frame change of the
prediction beyond the (small) true change, so exact depth scores 0.

Sequence values are the means of the per-pair values (pairs without pixels are skipped).
Predicted depth is clamped to at least ``MIN_DEPTH`` so that logs and ratios stay finite.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ppd_ros.geometry.camera import CameraModel
from ppd_ros.evaluation.metrics import align_log_depth, gt_valid_mask

MIN_DEPTH = 1e-3  # metres; floor for aligned predictions
DEFAULT_OCCLUSION_TOLERANCE = 0.01
DEFAULT_STATIC_TOLERANCE = 0.01


# ---------------------------------------------------------------------------------------------
# Alignment of relative predictions
# ---------------------------------------------------------------------------------------------

def align_sequence(relative: np.ndarray, gt_depth: np.ndarray, per_frame: bool = False) -> np.ndarray:
    """Metric depth (T, H, W) from relative log-depth by the evaluation's log-space fit
    (:func:`ppd_ros.evaluation.metrics.align_log_depth`, over every pixel with GT).

    ONE fit for the whole sequence (default): that is what makes TAE and flicker see a scale that
    drifts from frame to frame; ``per_frame=True`` fits each frame on its own (removes per-frame
    scale changes).
    """
    relative = np.asarray(relative, dtype=np.float32)
    gt = np.asarray(gt_depth, dtype=np.float64)
    if relative.shape != gt.shape or relative.ndim != 3:
        raise ValueError(f"relative {relative.shape} and GT {gt.shape} must both be (T, H, W)")
    valid = gt_valid_mask(gt)
    if not per_frame:
        return align_log_depth(relative, gt, valid)[0]
    return np.stack([align_log_depth(relative[i], gt[i], valid[i])[0] for i in range(len(relative))])


# ---------------------------------------------------------------------------------------------
# Correspondence from ground truth
# ---------------------------------------------------------------------------------------------

@dataclass
class PairCorrespondence:
    """Pixels p of frame i (``rows``, ``cols``) that see frame j at sub-pixel (``u``, ``v``)."""

    rows: np.ndarray
    cols: np.ndarray
    u: np.ndarray
    v: np.ndarray
    rotation: np.ndarray  # camera i -> camera j
    translation: np.ndarray
    rays: np.ndarray  # (n, 3) z = 1 rays of the pixels p
    gt_i: np.ndarray  # G_i(p)
    gt_j: np.ndarray  # G_j(q)

    def __len__(self) -> int:
        return int(self.rows.size)


def relative_motion(pose_i: np.ndarray, pose_j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) mapping camera-i points into camera j, from camera-to-world poses."""
    pose_i = np.asarray(pose_i, dtype=np.float64)
    pose_j = np.asarray(pose_j, dtype=np.float64)
    rot_j_t = pose_j[:3, :3].T
    return rot_j_t @ pose_i[:3, :3], rot_j_t @ (pose_i[:3, 3] - pose_j[:3, 3])


def sample_inverse_bilinear(depth: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Depth at sub-pixels (u, v) by bilinear interpolation of 1/depth over the four pixels
    around; NaN where one of them with a non-zero weight has no depth (NaN / <= 0) or the point
    is outside the image."""
    height, width = depth.shape
    inside = (u >= -1e-6) & (u <= width - 1 + 1e-6) & (v >= -1e-6) & (v <= height - 1 + 1e-6)
    uc = np.clip(u, 0, width - 1)
    vc = np.clip(v, 0, height - 1)
    u0 = np.minimum(np.floor(uc).astype(np.int64), max(width - 2, 0))
    v0 = np.minimum(np.floor(vc).astype(np.int64), max(height - 2, 0))
    u1 = np.minimum(u0 + 1, width - 1)
    v1 = np.minimum(v0 + 1, height - 1)
    fu, fv = uc - u0, vc - v0
    d = np.asarray(depth, dtype=np.float64)
    corners = [d[v0, u0], d[v0, u1], d[v1, u0], d[v1, u1]]
    weights = [(1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv]
    ok = inside.copy()
    inverse = np.zeros_like(uc, dtype=np.float64)
    for corner, weight in zip(corners, weights):
        good = np.isfinite(corner) & (corner > 0)
        ok &= good | (weight <= 1e-9)  # a pixel with no weight (q on the grid) need not have depth
        inverse += weight * np.where(good, 1.0 / np.where(good, corner, 1.0), 0.0)
    return np.where(ok & (inverse > 0), 1.0 / np.where(inverse > 0, inverse, 1.0), np.nan)


def gt_correspondence(gt_i: np.ndarray, gt_j: np.ndarray, pose_i: np.ndarray, pose_j: np.ndarray,
                      camera: CameraModel,
                      occlusion_tolerance: float = DEFAULT_OCCLUSION_TOLERANCE) -> PairCorrespondence:
    """Corresponding pixels of frames i and j from GT depth and poses (see the module docstring)."""
    gt_i = np.asarray(gt_i, dtype=np.float64)
    gt_j = np.asarray(gt_j, dtype=np.float64)
    if gt_i.shape != (camera.height, camera.width) or gt_j.shape != gt_i.shape:
        raise ValueError(f"GT depth {gt_i.shape}/{gt_j.shape} does not match the camera "
                         f"{camera.height}x{camera.width}")
    rotation, translation = relative_motion(pose_i, pose_j)
    rows, cols = np.nonzero(np.isfinite(gt_i) & (gt_i > 0))
    rays = camera.pixel_rays(cols.astype(np.float64), rows.astype(np.float64))
    moved = (rays * gt_i[rows, cols, None]) @ rotation.T + translation
    in_front = moved[:, 2] > 0
    uv = np.full((rows.size, 2), -1.0)
    uv[in_front] = camera.project(moved[in_front])
    sampled = sample_inverse_bilinear(gt_j, uv[:, 0], uv[:, 1])
    keep = in_front & np.isfinite(sampled)
    keep &= np.abs(np.where(keep, sampled, 0.0) - moved[:, 2]) <= occlusion_tolerance * moved[:, 2]
    return PairCorrespondence(rows[keep], cols[keep], uv[keep, 0], uv[keep, 1], rotation, translation,
                              rays[keep], gt_i[rows[keep], cols[keep]], sampled[keep])


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------

def pair_tae(pred_i: np.ndarray, pred_j: np.ndarray, corr: PairCorrespondence) -> float:
    """TAE of one pair (NaN without corresponding pixels)."""
    if not len(corr):
        return float("nan")
    p_i = np.maximum(np.asarray(pred_i, dtype=np.float64)[corr.rows, corr.cols], MIN_DEPTH)
    z_moved = (corr.rays * p_i[:, None]) @ corr.rotation[2] + corr.translation[2]
    p_j = sample_inverse_bilinear(np.maximum(np.asarray(pred_j, dtype=np.float64), MIN_DEPTH), corr.u, corr.v)
    ok = np.isfinite(p_j) & np.isfinite(z_moved)
    if not ok.any():
        return float("nan")
    return float(np.mean(np.abs(z_moved[ok] - p_j[ok]) / p_j[ok]))


def pair_flicker(pred_i: np.ndarray, pred_j: np.ndarray, corr: PairCorrespondence,
                 static_tolerance: float = DEFAULT_STATIC_TOLERANCE) -> tuple[float, int]:
    """(flicker, number of static pixels) of one pair (NaN without static pixels)."""
    static = np.abs(corr.gt_j - corr.gt_i) < static_tolerance * corr.gt_i
    if not static.any():
        return float("nan"), 0
    p_i = np.maximum(np.asarray(pred_i, dtype=np.float64)[corr.rows[static], corr.cols[static]], MIN_DEPTH)
    p_j = sample_inverse_bilinear(np.maximum(np.asarray(pred_j, dtype=np.float64), MIN_DEPTH),
                                  corr.u[static], corr.v[static])
    true_change = np.log(corr.gt_j[static] / corr.gt_i[static])
    ok = np.isfinite(p_j) & np.isfinite(p_i)
    if not ok.any():
        return float("nan"), 0
    change = np.log(p_j[ok] / p_i[ok]) - true_change[ok]
    return float(np.mean(np.abs(change))), int(ok.sum())


@dataclass
class TemporalMetrics:
    """Sequence TAE and flicker (means over pairs) with the per-pair values and pixel counts."""

    tae: float
    flicker: float
    pair_tae: list[float]
    pair_flicker: list[float]
    pair_pixels: list[int]  # corresponding pixels per pair
    pair_static_pixels: list[int]


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def temporal_metrics(pred_depth: np.ndarray, gt_depth: np.ndarray, poses: np.ndarray,
                     camera: CameraModel,
                     occlusion_tolerance: float = DEFAULT_OCCLUSION_TOLERANCE,
                     static_tolerance: float = DEFAULT_STATIC_TOLERANCE) -> TemporalMetrics:
    """TAE and flicker of predicted metric depth (T, H, W) over consecutive frame pairs."""
    pred = np.asarray(pred_depth)
    gt = np.asarray(gt_depth)
    poses = np.asarray(poses, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or len(poses) != len(gt) or len(gt) < 2:
        raise ValueError(f"need >= 2 frames with pred {pred.shape}, GT {gt.shape}, poses {poses.shape}")
    taes, flickers, pixels, statics = [], [], [], []
    for i in range(len(gt) - 1):
        corr = gt_correspondence(gt[i], gt[i + 1], poses[i], poses[i + 1], camera, occlusion_tolerance)
        taes.append(pair_tae(pred[i], pred[i + 1], corr))
        flicker, n_static = pair_flicker(pred[i], pred[i + 1], corr, static_tolerance)
        flickers.append(flicker)
        pixels.append(len(corr))
        statics.append(n_static)
    return TemporalMetrics(_nanmean(taes), _nanmean(flickers), taes, flickers, pixels, statics)


def temporal_metrics_of_relative(relative: np.ndarray, gt_depth: np.ndarray, poses: np.ndarray,
                                 camera: CameraModel, per_frame_alignment: bool = False,
                                 **tolerances: float) -> TemporalMetrics:
    """:func:`temporal_metrics` of relative log-depth after :func:`align_sequence`."""
    aligned = align_sequence(relative, gt_depth, per_frame=per_frame_alignment)
    return temporal_metrics(aligned, gt_depth, poses, camera, **tolerances)


__all__ = [
    "MIN_DEPTH", "PairCorrespondence", "TemporalMetrics", "align_sequence", "gt_correspondence",
    "pair_flicker", "pair_tae", "relative_motion", "sample_inverse_bilinear", "temporal_metrics",
    "temporal_metrics_of_relative",
]
