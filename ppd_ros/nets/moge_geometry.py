"""MoGe-2 post-processing: camera focal and z-shift from an affine point map, then metric depth.

MoGe-2 predicts a point map that is correct up to an unknown shift along z and, through the
focal, a scale of x/y against the view plane. ``infer`` recovers both from the point map
(MoGe's convention: focal relative to half the image diagonal, principal point at the centre),
builds normalised intrinsics and applies the predicted metric scale.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

# The focal/shift fit runs on a point map nearest-resampled to this size (rows, cols).
FIT_SIZE = (64, 64)


def normalized_view_plane_uv(
    width: int,
    height: int,
    aspect_ratio: float | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(height, width, 2) pixel-centre view-plane coordinates (u right, v down).

    The image plane spans [-a, a] x [-b, b] with a = aspect/sqrt(1+aspect^2) and
    b = 1/sqrt(1+aspect^2) (half diagonal = 1); pixel centres sit at (i + 0.5)/n of that span.
    ``aspect_ratio`` defaults to width / height.
    """
    if aspect_ratio is None:
        aspect_ratio = width / height
    span_x = aspect_ratio / (1 + aspect_ratio**2) ** 0.5
    span_y = 1 / (1 + aspect_ratio**2) ** 0.5
    # linspace (not arange) so the values equal MoGe's bit for bit.
    u = torch.linspace(-span_x * (width - 1) / width, span_x * (width - 1) / width, width, dtype=dtype, device=device)
    v = torch.linspace(-span_y * (height - 1) / height, span_y * (height - 1) / height, height, dtype=dtype,
                       device=device)
    v_grid, u_grid = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([u_grid, v_grid], dim=-1)


def _projection_residuals(shift: np.ndarray, uv: np.ndarray, xy: np.ndarray, z: np.ndarray) -> np.ndarray:
    """f * xy / (z + shift) - uv for the best focal f at this shift (closed form), flattened."""
    projected = xy / (z + shift)[:, None]
    focal = (projected * uv).sum() / np.square(projected).sum()
    return (focal * projected - uv).ravel()


def solve_focal_shift(uv: np.ndarray, points: np.ndarray) -> tuple[float, float]:
    """Least-squares (shift, focal) with focal * xy / (z + shift) ~ uv.

    ``uv`` (N, 2) and ``points`` (N, 3) float32. The shift is found by scipy's
    Levenberg-Marquardt with ftol 1e-3 from 0 (the official call, so results agree to its
    precision); the focal is the closed-form optimum at that shift, evaluated in float32.
    """
    from scipy.optimize import least_squares

    xy, z = points[:, :2], points[:, 2]
    solution = least_squares(_projection_residuals, x0=0, ftol=1e-3, method="lm", args=(uv, xy, z))
    shift = np.float32(solution.x.squeeze())
    projected = xy / (z + shift)[:, None]
    focal = (projected * uv).sum() / np.square(projected).sum()
    return float(shift), float(focal)


def recover_focal_shift(points: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Focal (relative to half the diagonal) and z-shift of each point map.

    ``points`` (B, H, W, 3), ``mask`` (B, H, W) bool or None. The map, its view-plane uv and the
    mask are nearest-resampled to :data:`FIT_SIZE`; only masked-in samples enter the fit. With
    fewer than 2 samples the result is focal 1, shift 0. Returns two (B,) tensors in the
    points' dtype/device.
    """
    batch, height, width, _ = points.shape
    uv = normalized_view_plane_uv(width, height, dtype=points.dtype, device=points.device)
    points_lr = F.interpolate(points.permute(0, 3, 1, 2), FIT_SIZE, mode="nearest").permute(0, 2, 3, 1)
    uv_lr = F.interpolate(uv.permute(2, 0, 1)[None], FIT_SIZE, mode="nearest")[0].permute(1, 2, 0)
    points_np = points_lr.detach().cpu().numpy()
    uv_np = uv_lr.cpu().numpy()
    if mask is not None:
        mask_np = (F.interpolate(mask.float()[:, None], FIT_SIZE, mode="nearest")[:, 0] > 0).cpu().numpy()
    focals, shifts = [], []
    for index in range(batch):
        if mask is None:
            uv_i, points_i = uv_np.reshape(-1, 2), points_np[index].reshape(-1, 3)
        else:
            uv_i, points_i = uv_np[mask_np[index]], points_np[index][mask_np[index]]
        if uv_i.shape[0] < 2:
            focals.append(1.0)
            shifts.append(0.0)
            continue
        shift, focal = solve_focal_shift(uv_i, points_i)
        focals.append(focal)
        shifts.append(shift)
    as_tensor = lambda values: torch.tensor(values, dtype=points.dtype, device=points.device)  # noqa: E731
    return as_tensor(focals), as_tensor(shifts)


def normalized_intrinsics(focal: torch.Tensor, aspect_ratio: float) -> torch.Tensor:
    """(B, 3, 3) intrinsics in image-size units (cx = cy = 0.5) from MoGe's diagonal-relative focal."""
    # Same operation order as MoGe so the float32 values agree exactly.
    fx = focal / 2 * (1 + aspect_ratio**2) ** 0.5 / aspect_ratio
    fy = focal / 2 * (1 + aspect_ratio**2) ** 0.5
    intrinsics = torch.zeros(*focal.shape, 3, 3, dtype=focal.dtype, device=focal.device)
    intrinsics[..., 0, 0] = fx
    intrinsics[..., 1, 1] = fy
    intrinsics[..., 0, 2] = 0.5
    intrinsics[..., 1, 2] = 0.5
    intrinsics[..., 2, 2] = 1.0
    return intrinsics


def depth_to_points(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) camera points of a depth map (B, H, W) with normalised intrinsics (B, 3, 3).

    Pixel (i, j) looks through its centre ((j + 0.5)/W, (i + 0.5)/H) in normalised image units.
    """
    height, width = depth.shape[-2:]
    u = (torch.arange(width, dtype=depth.dtype, device=depth.device) + 0.5) / width
    v = (torch.arange(height, dtype=depth.dtype, device=depth.device) + 0.5) / height
    fx, fy = intrinsics[:, 0, 0, None, None], intrinsics[:, 1, 1, None, None]
    cx, cy = intrinsics[:, 0, 2, None, None], intrinsics[:, 1, 2, None, None]
    x = (u[None, None, :] - cx) / fx * depth
    y = (v[None, :, None] - cy) / fy * depth
    return torch.stack([x, y, depth], dim=-1)


class MetricGeometry(NamedTuple):
    """Result of MoGe-2 ``infer`` (batched: B leading; unbatched input drops it).

    depth (B, H, W) metres, +inf where invalid; mask (B, H, W) bool; intrinsics (B, 3, 3)
    normalised (multiply row 0 by W and row 1 by H for pixels); points (B, H, W, 3) metres,
    +inf where invalid; normal (B, H, W, 3) unit, 0 where invalid (None without a normal head);
    metric_scale (B,) the factor that was applied (None without a scale head).
    """

    depth: torch.Tensor
    mask: torch.Tensor
    intrinsics: torch.Tensor
    points: torch.Tensor
    normal: torch.Tensor | None
    metric_scale: torch.Tensor | None


def metric_geometry_from_outputs(outputs: dict[str, torch.Tensor], apply_mask: bool = True) -> MetricGeometry:
    """MoGe-2 ``infer`` post-processing of the raw ``forward`` outputs (float32).

    Fits focal and shift on the masked point map, depth = z + shift, mask = (p > 0.5) and
    depth > 0, points recomputed from depth and intrinsics, both multiplied by the metric scale;
    with ``apply_mask`` invalid pixels become +inf (normal 0).
    """
    points = outputs["points"].float()
    mask_prob = outputs.get("mask")
    normal = outputs.get("normal")
    metric_scale = outputs.get("metric_scale")
    height, width = points.shape[1:3]
    aspect_ratio = width / height

    mask = mask_prob.float() > 0.5 if mask_prob is not None else None
    focal, shift = recover_focal_shift(points, mask)
    intrinsics = normalized_intrinsics(focal, aspect_ratio)
    depth = points[..., 2] + shift[:, None, None]
    if mask is None:
        mask = torch.ones_like(depth, dtype=torch.bool)
    mask = mask & (depth > 0)
    points = depth_to_points(depth, intrinsics)
    if metric_scale is not None:
        metric_scale = metric_scale.float()
        points = points * metric_scale[:, None, None, None]
        depth = depth * metric_scale[:, None, None]
    if normal is not None:
        normal = normal.float()
    if apply_mask:
        points = torch.where(mask[..., None], points, torch.inf)
        depth = torch.where(mask, depth, torch.inf)
        if normal is not None:
            normal = torch.where(mask[..., None], normal, torch.zeros_like(normal))
    return MetricGeometry(depth, mask, intrinsics, points, normal, metric_scale)


__all__ = [
    "FIT_SIZE",
    "MetricGeometry",
    "depth_to_points",
    "metric_geometry_from_outputs",
    "normalized_intrinsics",
    "normalized_view_plane_uv",
    "recover_focal_shift",
    "solve_focal_shift",
]
