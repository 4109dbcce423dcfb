"""A varied scene family for training demo models (the second-edition attempt, training/demo_varied.yaml):
one random view of a varied scene per seed.

Two kinds of scene: rooms of 3-30 m with objects whose size runs from 0.2 m to 10 m (log-uniform,
bounded by the room), the camera 0.3-2.5 m high; and the close-range tabletops of
:mod:`~ppd_ros.synthetic.tabletop` (objects at 0.3-1.5 m). Textures are procedural or cut from
real photos (``photos``: image files, tiled on the surfaces), and the light changes per scene
(direction, ambient share, colour and exposure). The horizontal field of view is 50-90 degrees.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ppd_ros.synthetic.scene import PATTERNS, Box, Plane, Room, Scene, Sphere, Texture, camera_trajectory
from ppd_ros.synthetic.tabletop import tabletop_scene, tabletop_trajectory

TABLETOP_SHARE = 0.3
PHOTO_SHARE = 0.4  # of the textures, when photos are given
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclasses.dataclass(frozen=True)
class View:
    """A scene, a 4x4 camera-to-world pose in it and the horizontal field of view in degrees."""

    scene: Scene
    pose: np.ndarray
    horizontal_fov_deg: float


def photo_files(directory: str | Path | None) -> tuple[str, ...]:
    """The image files (jpg/png) in ``directory``, sorted; none for ``None``."""
    if directory is None:
        return ()
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"photo directory not found: {directory}")
    files = tuple(str(p) for p in sorted(directory.iterdir()) if p.suffix.lower() in PHOTO_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no .jpg/.png photos in {directory}")
    return files


def varied_view(seed: int, photos: Sequence[str] = ()) -> View:
    """The view of seed ``seed``: a room (70 %) or a tabletop (30 %), relit, some textures photos."""
    rng = np.random.default_rng([seed, 15])
    if rng.random() < TABLETOP_SHARE:
        scene = tabletop_scene(seed)
        pose = tabletop_trajectory(16, seed)[int(rng.integers(16))]
    else:
        scene = _room(rng)
        pose = camera_trajectory(1, seed, scene)[0]
    scene = _with_photos(scene, rng, photos)
    elevation = rng.uniform(0.2, 1.4)
    azimuth = rng.uniform(0, 2 * math.pi)
    light = (math.cos(azimuth) * math.cos(elevation), math.sin(azimuth) * math.cos(elevation), math.sin(elevation))
    tint = rng.uniform(0.85, 1.15, 3)
    light_color = tuple(float(c) for c in tint / tint.mean() * rng.uniform(0.55, 1.4))
    scene = dataclasses.replace(scene, light_direction=light, ambient=float(rng.uniform(0.15, 0.6)),
                                light_color=light_color)
    return View(scene, pose, float(rng.uniform(50.0, 90.0)))


def object_extent(obj) -> float:
    """The largest size in metres of a Box, Sphere or bounded Plane (an infinite plane: 2 m)."""
    if isinstance(obj, Box):
        return 2 * max(obj.half_size)
    if isinstance(obj, Sphere):
        return 2 * obj.radius
    return 2 * max(obj.half_extent or (1.0, 1.0))


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _texture(rng: np.random.Generator, object_size: float) -> Texture:
    return Texture(
        color_a=tuple(float(c) for c in rng.uniform(0.3, 1.0, 3)),
        color_b=tuple(float(c) for c in rng.uniform(0.0, 0.5, 3)),
        pattern=str(rng.choice(PATTERNS[:3])),
        scale=_log_uniform(rng, 0.05 + 0.02 * object_size, 0.1 + 0.2 * object_size),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def _room(rng: np.random.Generator) -> Scene:
    """A room of 3-30 m with 4-14 boxes, spheres and panels of 0.2-10 m, the camera region at its centre."""
    size_x, size_y = _log_uniform(rng, 3.0, 30.0), _log_uniform(rng, 3.0, 30.0)
    size_z = float(rng.uniform(2.5, max(3.0, 0.3 * max(size_x, size_y))))
    # floor and wall patterns grow with the room: fine ones alias to noise at a distance
    room_scale = 0.1 * max(size_x, size_y)
    room = Room((size_x, size_y, size_z), wall=_texture(rng, room_scale), floor=_texture(rng, room_scale),
                ceiling=_texture(rng, room_scale))
    region = (size_x / 2, size_y / 2, 0.4, 0.3, min(2.5, size_z - 0.3))
    objects = []
    n_objects = int(rng.integers(4, 15))
    for _ in range(200):
        if len(objects) >= n_objects:
            break
        extent = _log_uniform(rng, 0.2, min(10.0, 0.5 * min(size_x, size_y), size_z))
        half = extent / 2
        x, y = float(rng.uniform(half, size_x - half)), float(rng.uniform(half, size_y - half))
        if math.hypot(x - region[0], y - region[1]) < region[2] + half * math.sqrt(2) + 0.3:
            continue  # keep the camera region free
        kind = rng.choice(["box", "box", "sphere", "panel"])
        texture = _texture(rng, extent)
        if kind == "box":
            half_size = tuple(float(half * f) for f in rng.uniform(0.3, 1.0, 3))
            on_floor = rng.random() < 0.75
            z = half_size[2] if on_floor else float(rng.uniform(half_size[2], max(half_size[2], size_z - half_size[2])))
            objects.append(Box((x, y, z), half_size, float(rng.uniform(0, math.pi)), texture))
        elif kind == "sphere":
            z = float(rng.uniform(half, max(half, min(size_z - half, 2.0 * half + 1.0))))
            objects.append(Sphere((x, y, z), half, texture))
        else:
            yaw, tilt = float(rng.uniform(0, math.pi)), float(rng.uniform(-0.6, 0.6))
            normal = (math.cos(yaw) * math.cos(tilt), math.sin(yaw) * math.cos(tilt), math.sin(tilt))
            extents = (half * float(rng.uniform(0.4, 1.0)), half * float(rng.uniform(0.4, 1.0)))
            z = float(rng.uniform(min(extents[1] + 0.05, size_z / 2), max(size_z / 2, size_z - extents[1] - 0.05)))
            objects.append(Plane((x, y, z), normal, extents, texture))
    return Scene(room=room, objects=tuple(objects), camera_region=region)


def _with_photos(scene: Scene, rng: np.random.Generator, photos: Sequence[str]) -> Scene:
    """``scene`` with about :data:`PHOTO_SHARE` of its textures replaced by photos, one image
    about as wide as the surface (walls 2-8 m, floors 1-4 m)."""
    if not photos:
        return scene

    def maybe_photo(texture: Texture, width_m: float) -> Texture:
        if rng.random() >= PHOTO_SHARE:
            return texture
        tint = tuple(float(c) for c in rng.uniform(0.8, 1.0, 3))
        return Texture(color_a=tint, pattern="photo", scale=width_m, seed=int(rng.integers(0, 2**31 - 1)),
                       photo=str(photos[int(rng.integers(len(photos)))]))

    room = scene.room
    if room is not None:
        room = dataclasses.replace(room, wall=maybe_photo(room.wall, float(rng.uniform(2.0, 8.0))),
                                   floor=maybe_photo(room.floor, float(rng.uniform(1.0, 4.0))))
    objects = tuple(
        dataclasses.replace(o, texture=maybe_photo(o.texture, object_extent(o) * float(rng.uniform(0.7, 2.0))))
        for o in scene.objects)
    return dataclasses.replace(scene, room=room, objects=objects)


__all__ = ["View", "object_extent", "photo_files", "varied_view"]
