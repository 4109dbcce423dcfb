"""The metric_source step of the frame pipeline: relative log-depth in, depth in metres (or
flagged relative) out, with the scale/shift, fit residual and status that diagnostics and the
DepthFrame record report.

Sources: ``none`` and ``fixed`` map with the configured depth_scale/depth_shift (``fixed`` is a
user-calibrated claim, so it is reported metric); ``moge2`` and ``sparse`` fit scale/shift per frame
to a metric reference (:class:`ppd_ros.metric.StableAlignment`: robust fit + temporal filter).
Until the first fit is accepted those frames use the fixed mapping and are flagged relative; a
frame whose fit fails (or is gated out as a jump) keeps the held scale/shift, whose age (stamp
seconds and frames since the last accepted fit) every frame reports. Older than ``max_age`` the
held scale is stale; ``stale_output`` ``no_depth`` then publishes no depth at all (NaN), as it
does before the first accepted fit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Hashable

import numpy as np
import torch

from ppd_ros.geometry.camera import CameraModel
from ppd_ros.metric import LidarProjector, ReferencePoints, RobustFitConfig, StableAlignment, TemporalFilterConfig
from ppd_ros.metric.alignment import relative_to_metres
from ppd_ros.metric.sparse import depth_image_points

NO_REFERENCE = "no_reference"  # status of a sparse frame that no reference message paired with
ACCEPTED = "ok"  # the fit was taken (the filter updated with it, or started on its first fit)
REJECTED_JUMP = "rejected_jump"  # a good fit too far from the held scale: gated out, scale held
RESET = "reset"  # the filter restarted on this fit (filter_reset says why: jump, time_gap, ...)
STALE_OUTPUTS = ("held_scale", "no_depth")


@dataclass(frozen=True)
class FrameDepth:
    """One frame's output depth and how it was obtained."""

    depth: torch.Tensor  # (h, w) float32, NaN where there is no depth
    is_metric: bool
    source: str  # metric_source: none | fixed | moge2 | sparse
    scale: float  # log(depth + 1) = scale * relative + shift, as applied
    shift: float
    fit_residual: float  # inlier RMS of this frame's fit (log(d + 1) units); NaN when none was made
    status: str  # "relative" | "fixed" | ok | rejected_jump | reset | a failed FitStatus | no_reference
    inlier_ratio: float = math.nan
    reference_points: int = 0  # valid reference samples of this frame's fit
    filter_reset: str = ""  # why the temporal filter restarted on this frame, "" if it did not
    scale_age: float = math.nan  # stamp seconds since the last accepted fit; NaN: none accepted (yet)
    scale_age_frames: int = 0  # frames since the last accepted fit (0 on an accepted one)
    stale: bool = False  # the held scale is older than max_age


class MetricDepth:
    """Maps each frame's relative depth to output depth for one ``metric_source``.

    Args:
        source: none | fixed | moge2 | sparse.
        depth_scale, depth_shift: the fixed mapping (none, fixed; and fitted sources before their
            first successful fit).
        temporal_filter: filter fitted scale/shift over time (moge2, sparse).
        max_gap_s: stamp gap that restarts the filter. max_residual: largest accepted fit residual.
        seed: seed of the robust fit's random sampling (repeatable output).
        max_age: stamp seconds after the last accepted fit from which the held scale is stale (0 = never).
        stale_output: held_scale (keep applying it, flagged stale) or no_depth (NaN depth, flagged
            relative, for stale frames and those before the first accepted fit).
    """

    def __init__(self, source: str, depth_scale: float, depth_shift: float, temporal_filter: bool = True,
                 max_gap_s: float = 1.0, max_residual: float = 0.3, seed: int = 0, max_age: float = 0.0,
                 stale_output: str = "held_scale"):
        if source not in ("none", "fixed", "moge2", "sparse"):
            raise ValueError(f"unknown metric source {source!r}")
        if stale_output not in STALE_OUTPUTS:
            raise ValueError(f"unknown stale output {stale_output!r}; expected one of {STALE_OUTPUTS}")
        self.source = source
        self.depth_scale = float(depth_scale)
        self.depth_shift = float(depth_shift)
        self.max_age = float(max_age)
        self.stale_output = stale_output
        self._fit_config = RobustFitConfig(max_residual=max_residual)
        self._filter_config = TemporalFilterConfig(max_gap_s=max_gap_s) if temporal_filter else None
        self._seed = seed
        self.reset()

    @property
    def fits(self) -> bool:
        return self.source in ("moge2", "sparse")

    def reset(self) -> None:
        """Forget the fitted scale/shift (e.g. the video stream restarted with a new scale)."""
        self._alignment = StableAlignment(self._fit_config, self._filter_config, self._seed)
        self._accepted_stamp: float | None = None  # stamp of the last accepted fit
        self._accepted_ever = False
        self._frames_since_accepted = 0

    def map(self, relative: torch.Tensor, stamp: float | None = None, camera_key: Hashable | None = None,
            reference: np.ndarray | None = None, mask: np.ndarray | None = None) -> FrameDepth:
        """Output depth of one frame.

        ``relative``: (h, w) relative log-depth. ``reference``: (h, w) metric depth on the same grid,
        NaN where there is none, or :class:`~ppd_ros.metric.ReferencePoints` on it (moge2, sparse;
        None = no reference paired with this frame, the previous scale/shift is kept). ``mask``:
        optional extra validity of the reference. ``stamp`` (seconds) and ``camera_key`` (changes
        when the camera does) drive the filter's resets and the age of the held scale.
        """
        if not self.fits:
            status = "fixed" if self.source == "fixed" else "relative"
            return FrameDepth(relative_to_metres(relative, self.depth_scale, self.depth_shift),
                              self.source == "fixed", self.source, self.depth_scale, self.depth_shift,
                              math.nan, status)
        missing = reference is None
        if missing:
            reference = np.full(tuple(relative.shape), np.nan, np.float32)
        aligned = self._alignment.align(relative, reference, mask, stamp=stamp, camera_key=camera_key)
        fit = aligned.fit
        filtered = aligned.filtered if fit.ok else None  # None: this frame's fit did not reach the filter
        reset = filtered.reason if filtered is not None and filtered.reset else ""
        if missing:
            status = NO_REFERENCE
        elif not fit.ok:
            status = fit.status.value
        elif filtered is not None and filtered.rejected:
            status = REJECTED_JUMP
        elif reset and reset != "first":
            status = RESET
        else:
            status = ACCEPTED
        age, frames = self._age(stamp, accepted=status in (ACCEPTED, RESET))
        stale = aligned.metric and self.max_age > 0 and age > self.max_age
        metric = aligned.metric and not (stale and self.stale_output == "no_depth")
        if metric:
            scale, shift, depth = aligned.scale, aligned.shift, aligned.depth
        else:
            scale, shift = self.depth_scale, self.depth_shift
            depth = relative_to_metres(relative, scale, shift)
            if self.stale_output == "no_depth":
                depth = depth * math.nan  # no depth rather than depth in assumed metres
        result = FrameDepth(depth, metric, self.source, scale, shift, fit.residual, status, fit.inlier_ratio,
                            fit.num_points, reset, age, frames, bool(stale))
        if missing:
            result = replace(result, fit_residual=math.nan, inlier_ratio=math.nan)
        return result

    def _age(self, stamp: float | None, accepted: bool) -> tuple[float, int]:
        """(seconds, frames) since the last accepted fit, this frame counted; NaN seconds when no
        fit was accepted yet or there are no stamps (stamps going back count as 0 s)."""
        if accepted:
            self._accepted_stamp, self._accepted_ever, self._frames_since_accepted = stamp, True, 0
            return (0.0 if stamp is not None else math.nan), 0
        self._frames_since_accepted += 1
        if not self._accepted_ever or stamp is None or self._accepted_stamp is None:
            return math.nan, self._frames_since_accepted
        return max(stamp - self._accepted_stamp, 0.0), self._frames_since_accepted


def moge_camera(intrinsics, width: int, height: int) -> CameraModel:
    """Pinhole camera (pixels, (width, height) grid) from MoGe-2's normalised intrinsics (row 0
    times width, row 1 times height; MoGe puts pixel j's centre at (j + 0.5) / width, ROS at j)."""
    K = np.asarray(intrinsics.detach().float().cpu() if hasattr(intrinsics, "detach") else intrinsics,
                   dtype=np.float64).reshape(3, 3)
    return CameraModel.pinhole(K[0, 0] * width, K[1, 1] * height, K[0, 2] * width - 0.5,
                               K[1, 2] * height - 0.5, width, height)


def moge_reference(depth: torch.Tensor, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(metric depth with NaN where invalid, validity mask) from MoGe-2's depth and mask."""
    depth = depth.detach().float().cpu().numpy()
    with np.errstate(invalid="ignore"):
        mask = mask.detach().cpu().numpy().astype(bool) & np.isfinite(depth) & (depth > 0)
    return np.where(mask, depth, np.nan).astype(np.float32), mask


def depth_image_reference(depth_metres: np.ndarray, height: int, width: int) -> ReferencePoints:
    """Every valid pixel of a registered metric depth image (any resolution, NaN = none) as a
    sample on the (height, width) prediction grid (:func:`ppd_ros.metric.depth_image_points`)."""
    return depth_image_points(np.asarray(depth_metres, dtype=np.float32), height, width)


def pointcloud_reference(points: np.ndarray, projector: LidarProjector, camera: CameraModel,
                         height: int, width: int) -> np.ndarray:
    """LiDAR points (N, 3) projected to a depth image on the (height, width) prediction grid,
    with the camera's intrinsics scaled to that grid."""
    K = camera.scaled_to(width, height).K
    return projector.project(points, K, height, width)
