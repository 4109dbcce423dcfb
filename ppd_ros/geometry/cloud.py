"""Depth image -> organised point cloud with flying pixels removed, packed for PointCloud2 (no ROS).

Everything runs in torch on the device of the depth/rays (CUDA or CPU) in one O(pixels) pass and
leaves the device only as the final packed array.

Flying pixels: a depth network that regresses depth blurs it across object edges, so pixels along
an edge get depths between foreground and background: points hanging in the air. In the image they
form short ramps where depth changes steeply on *both* sides of a pixel, while a real object border
pixel has a steep step on one side only and a flat neighbour on the other. The filter therefore
measures, per pixel and per image axis, the gentler of the two one-sided slopes and removes the pixel
when even that one is too steep, either as a relative depth jump or as a surface seen at a grazing
angle (angle between the local surface normal and the view ray).
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from ppd_ros.constants import DEFAULT_MAX_GRAZING_ANGLE_DEG, DEFAULT_MAX_RELATIVE_JUMP
from ppd_ros.geometry.camera import CameraModel
from ppd_ros.geometry.resize import resize_nearest

# PointCloud2 layout: x, y, z, rgb as float32 (rgb carries the bits 0x00RRGGBB).
CLOUD_DTYPE = np.dtype({"names": ["x", "y", "z", "rgb"], "formats": ["<f4"] * 4, "offsets": [0, 4, 8, 12],
                        "itemsize": 16})
POINT_STEP = 16
# (name, byte offset) of each PointCloud2 field; all are FLOAT32 (PointField datatype 7), count 1.
POINT_FIELDS = (("x", 0), ("y", 4), ("z", 8), ("rgb", 12))



@dataclass(frozen=True)
class RemovalCounts:
    """What happened to the pixels of one depth image."""

    total: int  # pixels in the image
    invalid: int  # no depth (NaN, inf, <= 0)
    flying: int  # valid depth removed by the flying-pixel filter
    kept: int  # points in the cloud with finite x/y/z


def _as_tensor(array, device=None, dtype=None) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.to(device=device if device is not None else array.device, dtype=dtype or array.dtype)
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # e.g. np.frombuffer over message bytes; torch wants writable memory
        array = array.copy()
    return torch.as_tensor(array, device=device, dtype=dtype)


def valid_depth_mask(depth: torch.Tensor) -> torch.Tensor:
    """True where depth is finite and > 0 (REP 117: NaN/inf/0 = no depth)."""
    return (depth > 0) & (depth < math.inf)  # NaN compares False


def _depth_or_nan(depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(depth with NaN where there is no depth, validity mask)."""
    valid = valid_depth_mask(depth)
    return torch.where(valid, depth, float("nan")), valid


def unproject(depth, rays: torch.Tensor) -> torch.Tensor:
    """Points (H, W, 3) = depth * ray (optical frame); NaN where there is no depth.

    ``depth`` (H, W) torch or numpy, metres along the optical axis; ``rays`` (H, W, 3) with z = 1
    (see :meth:`CameraModel.ray_grid`). The result is on ``rays``' device and dtype.
    """
    depth = _as_tensor(depth, device=rays.device, dtype=rays.dtype)
    if depth.shape != rays.shape[:2]:
        raise ValueError(f"depth shape {tuple(depth.shape)} does not match ray grid {tuple(rays.shape[:2])}")
    return rays * _depth_or_nan(depth)[0].unsqueeze(-1)


def _padded_differences(z: torch.Tensor, dim: int) -> torch.Tensor:
    """Differences of neighbours along ``dim`` with a NaN at each end: size n + 1 along ``dim``.

    Element i is z[i] - z[i-1], so for pixel i the forward difference is element i + 1 and the
    backward difference element i.
    """
    n = z.shape[dim]
    size = list(z.shape)
    size[dim] = n + 1
    padded = torch.empty(size, dtype=z.dtype, device=z.device)
    padded.narrow(dim, 0, 1).fill_(float("nan"))
    padded.narrow(dim, n, 1).fill_(float("nan"))
    torch.sub(z.narrow(dim, 1, n - 1), z.narrow(dim, 0, n - 1), out=padded.narrow(dim, 1, n - 1))
    return padded


_ray_terms_cache: dict = {}


def _ray_terms(rays: torch.Tensor) -> torch.Tensor:
    """Per-pixel terms of the surface normal that depend on the camera only, (6, H, W).

    With r = (x, y, 1) the ray of a pixel and a = dr/du, b = dr/dv its change per pixel (z parts 0),
    a surface z(u, v) has the normal n = z [g_u (r x b) + g_v (a x r) + z (a x b)], where g_u, g_v are
    the depth changes per pixel along u and v, and n . r = z^2 det(a, b). Rows (each divided by
    det(a, b), so that n / (z det) . r = z): -b_y, a_y, b_x, -a_x, x b_y - y b_x, a_x y - a_y x;
    then |r|^2.
    Cached per ray tensor (the ray grid of a camera is itself cached), so this runs once per camera.
    """
    key = id(rays)
    cached = _ray_terms_cache.get(key)
    if cached is not None and cached[0]() is rays:
        return cached[1]
    x, y = rays[..., 0], rays[..., 1]
    a_x, a_y = torch.gradient(x, dim=1)[0], torch.gradient(y, dim=1)[0]
    b_x, b_y = torch.gradient(x, dim=0)[0], torch.gradient(y, dim=0)[0]
    det = a_x * b_y - a_y * b_x
    terms = torch.stack([
        -b_y / det, a_y / det, b_x / det, -a_x / det,
        (x * b_y - y * b_x) / det,
        (a_x * y - a_y * x) / det,
        x * x + y * y + 1.0,
    ])
    if len(_ray_terms_cache) > 16:
        _ray_terms_cache.clear()
    _ray_terms_cache[key] = (weakref.ref(rays), terms)
    return terms


def flying_pixel_mask(
    depth,
    rays: torch.Tensor,
    max_relative_jump: float | None = DEFAULT_MAX_RELATIVE_JUMP,
    max_grazing_angle_deg: float | None = DEFAULT_MAX_GRAZING_ANGLE_DEG,
) -> torch.Tensor:
    """Boolean (H, W) mask, True = flying pixel to remove (pixels without depth are False).

    ``max_relative_jump``: remove a pixel when, along the image rows or columns, its depth differs
    from *both* neighbours by more than this fraction of its own depth. Resolution independent;
    catches blur ramps at low resolution.
    ``max_grazing_angle_deg``: remove a pixel whose local surface, built from the gentler one-sided
    depth difference along rows and along columns, is seen at more than this angle between its
    normal and the view ray. Scales with focal length; catches shallow blur ramps at high resolution.
    ``None`` disables a test. Object borders survive both tests: they have one flat side.
    A pixel is judged only along axes where it has a neighbour with depth.
    """
    depth = _as_tensor(depth, device=rays.device, dtype=rays.dtype)
    if depth.shape != rays.shape[:2]:
        raise ValueError(f"depth shape {tuple(depth.shape)} does not match ray grid {tuple(rays.shape[:2])}")
    return _flying_mask_of_depth(_depth_or_nan(depth)[0], rays, max_relative_jump, max_grazing_angle_deg)


def _flying_mask_of_depth(z, rays, max_relative_jump, max_grazing_angle_deg) -> torch.Tensor:
    """:func:`flying_pixel_mask` for depth ``z`` with NaN already where there is no depth.

    True only where ``z`` is valid: every comparison with a NaN is False.
    """
    remove = torch.zeros(z.shape, dtype=torch.bool, device=z.device)
    limit = None if max_relative_jump is None else max_relative_jump * z
    slopes = []  # per axis: the gentler one-sided depth difference
    for dim in (1, 0):  # along rows (u), then along columns (v)
        n = z.shape[dim]
        differences = _padded_differences(z, dim)
        magnitudes = differences.abs()
        forward, backward = differences.narrow(dim, 1, n), differences.narrow(dim, 0, n)
        forward_size, backward_size = magnitudes.narrow(dim, 1, n), magnitudes.narrow(dim, 0, n)
        if limit is not None:
            # minimum propagates NaN and NaN compares False: a missing neighbour means "not judged"
            remove |= torch.minimum(forward_size, backward_size) > limit
        if max_grazing_angle_deg is not None:
            # the one side that exists where the other is missing (image border, hole)
            take_forward = (forward_size <= backward_size) | torch.isnan(backward_size)
            slopes.append(torch.where(take_forward, forward, backward))

    if max_grazing_angle_deg is not None:
        # normal scaled by z: (g_u t0 + g_v t1, g_u t2 + g_v t3, g_u t4 + g_v t5 + z), n . r = z
        g_u, g_v = slopes
        t = _ray_terms(rays)
        n_x = torch.addcmul(g_u * t[0], g_v, t[1])
        n_y = torch.addcmul(g_u * t[2], g_v, t[3])
        n_z = torch.addcmul(torch.addcmul(z, g_u, t[4]), g_v, t[5])
        # angle(n, r) > limit  <=>  (n . r)^2 < cos^2(limit) |n|^2 |r|^2
        norm_squared = torch.addcmul(torch.addcmul(n_x * n_x, n_y, n_y), n_z, n_z).mul_(t[6])
        cos_squared = math.cos(math.radians(max_grazing_angle_deg)) ** 2
        remove |= norm_squared.mul_(cos_squared) > z * z  # NaN compares False
    return remove


def depth_to_cloud(
    depth,
    camera: CameraModel,
    rgb=None,
    filter: bool = True,
    keep_organized: bool = True,
    **thresholds,
) -> tuple[np.ndarray, RemovalCounts]:
    """Depth (H, W) metres -> (cloud, counts).

    ``cloud`` is a numpy structured array of :data:`CLOUD_DTYPE` (x, y, z, rgb float32; 16 bytes per
    point): shape (H, W) when ``keep_organized`` with NaN x/y/z for invalid and removed points, else
    (N,) holding only the kept points. ``camera`` must match the depth size (scale it with
    :meth:`CameraModel.scaled_to`). ``rgb`` (h, w, 3) uint8 is resized nearest to the depth size;
    without it the rgb field is 0. ``thresholds`` go to :func:`flying_pixel_mask`.
    ``cloud.tobytes()`` is the PointCloud2 data (row_step = width * 16).
    """
    device = depth.device if isinstance(depth, torch.Tensor) else None
    depth = _as_tensor(depth, device=device, dtype=torch.float32)
    if depth.dim() != 2:
        raise ValueError(f"depth must be (H, W), got shape {tuple(depth.shape)}")
    height, width = depth.shape
    if (camera.width, camera.height) != (width, height):
        raise ValueError(
            f"camera is {camera.width}x{camera.height} but depth is {width}x{height}; use camera.scaled_to()"
        )
    rays = camera.ray_grid(device=depth.device, dtype=torch.float32)
    z, valid = _depth_or_nan(depth)
    if filter:
        unknown = set(thresholds) - {"max_relative_jump", "max_grazing_angle_deg"}
        if unknown:
            raise TypeError(f"unknown flying-pixel threshold(s): {', '.join(sorted(unknown))}")
        thresholds = {
            "max_relative_jump": thresholds.get("max_relative_jump", DEFAULT_MAX_RELATIVE_JUMP),
            "max_grazing_angle_deg": thresholds.get("max_grazing_angle_deg", DEFAULT_MAX_GRAZING_ANGLE_DEG),
        }
        flying = _flying_mask_of_depth(z, rays, **thresholds)  # only True where valid
        z = z.masked_fill_(flying, float("nan"))
        n_flying = int(torch.count_nonzero(flying))
    else:
        flying = None
        n_flying = 0

    # One buffer laid out as the PointCloud2 data (16 bytes per point, little endian). x/y/z are
    # written through a float32 view; the colour bytes B, G, R, 0 are written directly so the bits
    # are stored exactly.
    buffer = torch.empty((height, width, 16), dtype=torch.uint8, device=depth.device)
    torch.mul(rays, z.unsqueeze(-1), out=buffer.view(torch.float32)[..., :3])
    if rgb is not None:
        colour = _as_tensor(rgb, device=depth.device)
        if colour.dim() != 3 or colour.shape[-1] != 3 or colour.dtype != torch.uint8:
            raise ValueError(f"rgb must be (H, W, 3) uint8, got shape {tuple(colour.shape)} {colour.dtype}")
        colour = resize_nearest(colour, height, width)
        for byte, channel in ((12, 2), (13, 1), (14, 0)):
            buffer[..., byte] = colour[..., channel]
        buffer[..., 15] = 0
    else:
        buffer[..., 12:] = 0
    if not keep_organized:
        buffer = buffer[valid if flying is None else valid & ~flying]
    array = buffer.cpu().numpy()
    cloud = array.view(CLOUD_DTYPE)[..., 0]
    n_valid = int(torch.count_nonzero(valid))
    counts = RemovalCounts(
        total=height * width, invalid=height * width - n_valid, flying=n_flying, kept=n_valid - n_flying
    )
    return cloud, counts
