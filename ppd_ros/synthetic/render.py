"""Vectorised ray casting of :mod:`ppd_ros.synthetic.scene` scenes into RGB + exact depth."""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ppd_ros.geometry.camera import CameraModel
from ppd_ros.synthetic.scene import Box, Plane, Room, Scene, Sphere, Texture

_EPS = 1e-6
_BACKGROUND = (0.55, 0.7, 0.9)  # seen where a scene without a room has no surface


def render(scene: Scene, camera: CameraModel, pose, dtype: torch.dtype = torch.float32
           ) -> tuple[np.ndarray, np.ndarray]:
    """Render ``scene`` seen by ``camera`` at ``pose`` (4x4 camera-to-world, optical frame).

    Returns ``rgb`` (H, W, 3) uint8 and ``depth`` (H, W) float32: metres along the optical axis,
    exact up to float rounding, NaN where no surface is hit. Pixel rays come from
    ``camera.ray_grid()``, so lens distortion of the camera model is rendered too.
    Use ``CameraModel.pinhole(fx, fy, cx, cy, width, height)`` for plain intrinsics.
    """
    pose = torch.as_tensor(np.asarray(pose, dtype=np.float64), dtype=dtype)
    if pose.shape != (4, 4):
        raise ValueError(f"pose must be 4x4, got {tuple(pose.shape)}")
    rays = camera.ray_grid(dtype=dtype).reshape(-1, 3)
    rotation, origin = pose[:3, :3], pose[:3, 3]
    directions = rays @ rotation.T  # world directions; the ray parameter t is the optical depth
    best_t, best_normal, best_texture, textures = _nearest_hits(scene, origin, directions)
    n_rays = directions.shape[0]

    hit = torch.isfinite(best_t)
    points = origin + directions * torch.where(hit, best_t, torch.zeros_like(best_t)).unsqueeze(-1)
    colour = torch.empty((n_rays, 3), dtype=dtype)
    colour[:] = torch.tensor(_BACKGROUND, dtype=dtype)
    light = torch.tensor(scene.light_direction, dtype=dtype)
    light = light / light.norm()
    gain = torch.tensor(scene.light_color, dtype=dtype)
    for index, texture in enumerate(textures):
        mask = best_texture == index
        if not bool(mask.any()):
            continue
        normal = best_normal[mask]
        albedo = _texture_colour(texture, points[mask], normal)
        # two-sided Lambert plus ambient, so faces of different orientation differ in brightness
        shade = scene.ambient + (1.0 - scene.ambient) * (normal @ light).abs()
        colour[mask] = albedo * shade.unsqueeze(-1) * gain
    rgb = (colour.clamp(0, 1) ** (1 / 2.2) * 255.0 + 0.5).to(torch.uint8)
    depth = torch.where(hit, best_t, torch.full_like(best_t, float("nan")))
    return (
        rgb.reshape(camera.height, camera.width, 3).numpy(),
        depth.reshape(camera.height, camera.width).to(torch.float32).numpy(),
    )


def cast_rays(scene: Scene, origin, directions) -> np.ndarray:
    """Ray parameter t (N,) float64 of the nearest surface along each ray ``origin + t * direction``
    (world frame; ``directions`` (N, 3), t is the distance for unit directions); inf where no hit."""
    origin = torch.as_tensor(np.asarray(origin, dtype=np.float64))
    directions = torch.as_tensor(np.asarray(directions, dtype=np.float64)).reshape(-1, 3)
    return _nearest_hits(scene, origin, directions)[0].numpy()


def _nearest_hits(scene: Scene, origin: torch.Tensor, directions: torch.Tensor):
    """(t, normal, texture index) of the nearest hit per ray, and the textures indexed."""
    dtype = directions.dtype
    n_rays = directions.shape[0]
    best_t = torch.full((n_rays,), math.inf, dtype=dtype)
    best_normal = torch.zeros((n_rays, 3), dtype=dtype)
    best_texture = torch.full((n_rays,), -1, dtype=torch.long)
    textures: list[Texture] = []

    def merge(t, normal, texture_index):
        closer = t < best_t
        best_t[closer] = t[closer]
        best_normal[closer] = normal[closer] if normal.dim() == 2 else normal
        best_texture[closer] = texture_index[closer] if texture_index.dim() else texture_index

    if scene.room is not None:
        t, normal, face = _hit_room(scene.room, origin, directions)
        base = len(textures)
        textures += [scene.room.wall, scene.room.floor, scene.room.ceiling]
        merge(t, normal, face + base)
    for obj in scene.objects:
        if isinstance(obj, Box):
            t, normal = _hit_box(obj, origin, directions)
        elif isinstance(obj, Sphere):
            t, normal = _hit_sphere(obj, origin, directions)
        elif isinstance(obj, Plane):
            t, normal = _hit_plane(obj, origin, directions)
        else:
            raise TypeError(f"unknown scene object {type(obj).__name__}")
        merge(t, normal, torch.tensor(len(textures)))
        textures.append(obj.texture)
    return best_t, best_normal, best_texture, textures


def _safe(d: torch.Tensor) -> torch.Tensor:
    """Directions with zero components nudged so divisions give huge, not infinite/NaN, values."""
    return torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)


def _hit_room(room: Room, origin, directions):
    """Exit distance from inside the room box, its inward normal and face (0 wall, 1 floor, 2 ceiling)."""
    size = torch.tensor(room.size, dtype=directions.dtype)
    d = _safe(directions)
    bound = torch.where(d > 0, size, torch.zeros_like(size))
    t_axes = (bound - origin) / d
    t, axis = t_axes.min(dim=-1)
    normal = torch.zeros_like(directions)
    normal.scatter_(1, axis.unsqueeze(-1), -torch.sign(d.gather(1, axis.unsqueeze(-1))))
    going_up = d[:, 2] > 0
    face = torch.where(axis == 2, torch.where(going_up, 2, 1), 0)
    t = torch.where(t > _EPS, t, torch.full_like(t, math.inf))
    return t, normal, face


def _hit_box(box: Box, origin, directions):
    dtype = directions.dtype
    c, s = math.cos(box.yaw), math.sin(box.yaw)
    to_world = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)
    local_origin = (origin - torch.tensor(box.center, dtype=dtype)) @ to_world
    local_d = _safe(directions @ to_world)
    half = torch.tensor(box.half_size, dtype=dtype)
    t1 = (-half - local_origin) / local_d
    t2 = (half - local_origin) / local_d
    t_near, axis = torch.minimum(t1, t2).max(dim=-1)
    t_far = torch.maximum(t1, t2).min(dim=-1).values
    hit = (t_near <= t_far) & (t_near > _EPS)
    local_normal = torch.zeros_like(directions)
    local_normal.scatter_(1, axis.unsqueeze(-1), -torch.sign(local_d.gather(1, axis.unsqueeze(-1))))
    return torch.where(hit, t_near, torch.full_like(t_near, math.inf)), local_normal @ to_world.T


def _hit_sphere(sphere: Sphere, origin, directions):
    dtype = directions.dtype
    center = torch.tensor(sphere.center, dtype=dtype)
    oc = origin - center
    a = (directions * directions).sum(-1)
    half_b = directions @ oc
    c = float(oc @ oc) - sphere.radius**2
    disc = half_b * half_b - a * c
    root = torch.sqrt(disc.clamp(min=0))
    t = (-half_b - root) / a
    hit = (disc >= 0) & (t > _EPS)
    t = torch.where(hit, t, torch.full_like(t, math.inf))
    normal = (origin + directions * torch.where(hit, t, 0).unsqueeze(-1) - center) / sphere.radius
    return t, normal


def _hit_plane(plane: Plane, origin, directions):
    dtype = directions.dtype
    n, u, v = (torch.tensor(a, dtype=dtype) for a in plane.axes())
    point = torch.tensor(plane.point, dtype=dtype)
    denom = _safe(directions @ n)
    t = float((point - origin) @ n) / denom
    hit = t > _EPS
    if plane.half_extent is not None:
        offset = origin - point + directions * torch.where(hit, t, 0).unsqueeze(-1)
        hit &= ((offset @ u).abs() <= plane.half_extent[0]) & ((offset @ v).abs() <= plane.half_extent[1])
    return torch.where(hit, t, torch.full_like(t, math.inf)), n.expand_as(directions)


def _texture_colour(texture: Texture, points: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """Albedo (N, 3) of ``texture`` at world ``points`` (N, 3) on surfaces of ``normals`` (N, 3)."""
    dtype = points.dtype
    a = torch.tensor(texture.color_a, dtype=dtype)
    b = torch.tensor(texture.color_b, dtype=dtype)
    if texture.pattern == "plain":
        return a.expand(points.shape[0], 3).clone()
    if texture.pattern == "photo":
        return _photo_colour(texture, points, normals) * a
    rng = np.random.default_rng(texture.seed)
    # a per-texture phase keeps pattern boundaries off axis-aligned faces (no salt-and-pepper)
    phase = torch.tensor(rng.uniform(0.1, 0.9, 3), dtype=dtype)
    q = points / texture.scale + phase
    if texture.pattern == "checker":
        weight = (torch.floor(q).to(torch.long).sum(-1) % 2).to(dtype)
    elif texture.pattern == "stripes":
        direction = torch.tensor(rng.normal(size=3), dtype=dtype)
        weight = (torch.floor(q @ (direction / direction.norm())).to(torch.long) % 2).to(dtype)
    elif texture.pattern == "noise":
        weight = 0.65 * _value_noise(q, texture.seed) + 0.35 * _value_noise(q * 2.7, texture.seed + 1)
    else:
        raise ValueError(f"unknown texture pattern {texture.pattern!r}")
    weight = weight.unsqueeze(-1)
    return a * (1 - weight) + b * weight


@functools.lru_cache(maxsize=32)
def _photo_albedo(path: str, dtype: torch.dtype) -> torch.Tensor:
    """The image file ``path`` as linear RGB (H, W, 3) of ``dtype``, longer side at most 512 px."""
    import cv2

    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"photo texture: cannot read {path}")
    scale = 512 / max(bgr.shape[:2])
    if scale < 1:
        bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return torch.from_numpy((bgr[:, :, ::-1] / 255.0) ** 2.2).to(dtype)


def _photo_colour(texture: Texture, points: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """The photo projected along the dominant axis of each surface normal, tiled with mirroring
    (no seams), ``texture.scale`` metres per image width, offset by a per-texture phase."""
    image = _photo_albedo(texture.photo, points.dtype)
    height, width = image.shape[:2]
    dominant = normals.abs().argmax(-1)
    # in-plane world axes per dominant normal axis: x -> (y, z), y -> (x, z), z -> (x, y)
    first = torch.tensor([1, 0, 0])[dominant]
    second = torch.tensor([2, 2, 1])[dominant]
    phase = np.random.default_rng(texture.seed).uniform(0, 2, 2)
    u = points.gather(1, first[:, None])[:, 0] / texture.scale + phase[0]
    v = points.gather(1, second[:, None])[:, 0] / texture.scale * (width / height) + phase[1]

    def mirrored(x):  # 0 1 2 3 -> 0 1 0 1 (triangle wave in [0, 1])
        x = torch.remainder(x, 2.0)
        return torch.where(x > 1, 2 - x, x)

    cols = (mirrored(u) * (width - 1)).round().long()
    rows = ((1 - mirrored(v)) * (height - 1)).round().long()  # world up = image up
    return image[rows, cols]


def _lattice_value(cells: torch.Tensor, seed: int) -> torch.Tensor:
    """Pseudo-random value in [0, 1] per integer lattice point (N, 3)."""
    h = cells[:, 0] * 73856093 ^ cells[:, 1] * 19349663 ^ cells[:, 2] * 83492791 ^ seed
    h = (h * 2654435761) & 0xFFFFFFFF
    h = h ^ (h >> 15)
    return (h & 0xFFFF).to(torch.float32) / 65535.0


def _value_noise(q: torch.Tensor, seed: int) -> torch.Tensor:
    """Smooth 3-D value noise in [0, 1] at points ``q`` (N, 3)."""
    cell = torch.floor(q)
    frac = q - cell
    smooth = frac * frac * (3 - 2 * frac)
    cell = cell.to(torch.long)
    total = torch.zeros(q.shape[0], dtype=q.dtype)
    for corner in range(8):
        offset = torch.tensor([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
        weight = torch.where(offset.bool(), smooth, 1 - smooth).prod(-1)
        total += weight * _lattice_value(cell + offset, seed).to(q.dtype)
    return total
