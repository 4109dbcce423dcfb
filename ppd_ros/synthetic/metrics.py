"""Flying-pixel metrics of a point cloud against exact ground-truth depth.

A cloud point is *flying* when it is farther than a tolerance from every point of the ground-truth
cloud (the GT depth unprojected with the same camera); otherwise it lies on a true surface. The
tolerance is ``max(tolerance_abs, tolerance_rel * z)`` for a point at depth z.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from ppd_ros.geometry.camera import CameraModel
from ppd_ros.geometry.cloud import unproject

DEFAULT_TOLERANCE_REL = 0.02
DEFAULT_TOLERANCE_ABS = 0.01


@dataclass(frozen=True)
class FlyingPixelReport:
    """Counts over the valid points of a cloud before a filter, and what the filter removed."""

    points: int  # valid points before filtering
    flying: int  # of those, farther than the tolerance from every true surface
    flying_removed: int  # flying points the filter removed
    true_removed: int  # true-surface points the filter removed

    @property
    def true_surface(self) -> int:
        return self.points - self.flying

    @property
    def flying_removed_share(self) -> float:
        """Share of flying points removed (1.0 when there were none)."""
        return self.flying_removed / self.flying if self.flying else 1.0

    @property
    def true_removed_share(self) -> float:
        """Share of true-surface points removed."""
        return self.true_removed / self.true_surface if self.true_surface else 0.0

    @property
    def flying_share_before(self) -> float:
        return self.flying / self.points if self.points else 0.0

    @property
    def flying_share_after(self) -> float:
        """Share of flying points among the points that are left."""
        left = self.points - self.flying_removed - self.true_removed
        return (self.flying - self.flying_removed) / left if left else 0.0

    def summary(self) -> str:
        return (
            f"flying {self.flying_share_before:.2%} of {self.points} points; removed "
            f"{self.flying_removed_share:.1%} of flying, {self.true_removed_share:.2%} of true surface; "
            f"flying left {self.flying_share_after:.3%}"
        )


def depth_points(depth, camera: CameraModel) -> np.ndarray:
    """Valid points (N, 3) float64 of a depth image unprojected with ``camera``, in pixel order."""
    points = unproject(depth, camera.ray_grid(dtype=torch.float64)).reshape(-1, 3).numpy()
    return points[np.isfinite(points[:, 2])]


class GroundTruthSurface:
    """The GT cloud in a KD-tree, to ask which points lie on a true surface."""

    def __init__(self, gt_depth, camera: CameraModel):
        self.tree = cKDTree(depth_points(gt_depth, camera))

    def is_flying(
        self,
        points: np.ndarray,
        tolerance_rel: float = DEFAULT_TOLERANCE_REL,
        tolerance_abs: float = DEFAULT_TOLERANCE_ABS,
    ) -> np.ndarray:
        """Bool (N,): True where a point (N, 3) is farther than the tolerance from every GT point."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        tolerance = np.maximum(tolerance_abs, tolerance_rel * np.abs(points[:, 2]))
        bound = float(tolerance.max(initial=0.0)) * 1.001
        distance, _ = self.tree.query(points, k=1, distance_upper_bound=bound, workers=-1)
        return distance > tolerance


def evaluate_removal(
    points: np.ndarray,
    removed: np.ndarray,
    surface: GroundTruthSurface,
    tolerance_rel: float = DEFAULT_TOLERANCE_REL,
    tolerance_abs: float = DEFAULT_TOLERANCE_ABS,
) -> FlyingPixelReport:
    """Score a filter: ``points`` (N, 3) valid points before it, ``removed`` (N,) bool what it removed."""
    removed = np.asarray(removed, dtype=bool).reshape(-1)
    flying = surface.is_flying(points, tolerance_rel, tolerance_abs)
    return FlyingPixelReport(
        points=int(flying.size),
        flying=int(flying.sum()),
        flying_removed=int((flying & removed).sum()),
        true_removed=int((~flying & removed).sum()),
    )


def evaluate_depth_filter(
    depth,
    removed_mask,
    gt_depth,
    camera: CameraModel,
    tolerance_rel: float = DEFAULT_TOLERANCE_REL,
    tolerance_abs: float = DEFAULT_TOLERANCE_ABS,
) -> FlyingPixelReport:
    """Score an image-space filter: ``removed_mask`` (H, W) True = removed, over the valid pixels of ``depth``."""
    points = unproject(depth, camera.ray_grid(dtype=torch.float64)).reshape(-1, 3).numpy()
    valid = np.isfinite(points[:, 2])
    removed = np.asarray(removed_mask.cpu() if isinstance(removed_mask, torch.Tensor) else removed_mask)
    return evaluate_removal(
        points[valid], removed.reshape(-1)[valid], GroundTruthSurface(gt_depth, camera), tolerance_rel, tolerance_abs
    )


def blur_like_regression(scene, camera: CameraModel, pose, factor: int = 4):
    """Depth as a regression network blurs it: GT rendered at 1/``factor`` size, bilinearly upsampled.

    Returns (blurred depth (H, W) float32, GT depth, GT rgb) at the size of ``camera``.
    """
    from ppd_ros.synthetic.render import render

    rgb, gt_depth = render(scene, camera, pose)
    small = camera.scaled_to(max(camera.width // factor, 1), max(camera.height // factor, 1))
    _, small_depth = render(scene, small, pose)
    blurred = torch.nn.functional.interpolate(
        torch.from_numpy(small_depth)[None, None], size=(camera.height, camera.width), mode="bilinear",
        align_corners=False)[0, 0]
    return blurred.numpy(), gt_depth, rgb
