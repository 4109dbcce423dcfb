"""Synthetic scenes: a room with boxes, spheres and flat panels, procedurally textured.

World frame: z up, metres. Camera poses are 4x4 camera-to-world transforms of the optical frame
(z forward, x right, y down).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

PATTERNS = ("checker", "stripes", "noise", "plain", "photo")


@dataclass(frozen=True)
class Texture:
    """Texture in world coordinates: two colours mixed by ``pattern`` at ``scale`` metres, or with
    ``pattern="photo"`` the image file ``photo`` tiled (mirrored) on the surface, ``scale`` metres
    per image width, tinted by ``color_a``."""

    color_a: tuple[float, float, float] = (0.8, 0.8, 0.8)  # linear RGB in [0, 1]
    color_b: tuple[float, float, float] = (0.3, 0.3, 0.3)
    pattern: str = "checker"
    scale: float = 0.5
    seed: int = 0
    photo: str = ""


@dataclass(frozen=True)
class Room:
    """Inside of an axis-aligned box [0, size_x] x [0, size_y] x [0, size_z]; the camera is inside."""

    size: tuple[float, float, float]
    wall: Texture = field(default_factory=Texture)
    floor: Texture = field(default_factory=lambda: Texture(pattern="checker", scale=0.5))
    ceiling: Texture = field(default_factory=lambda: Texture(pattern="plain"))


@dataclass(frozen=True)
class Box:
    """Solid box: ``center``, ``half_size`` along its own axes, rotated by ``yaw`` radians about z."""

    center: tuple[float, float, float]
    half_size: tuple[float, float, float]
    yaw: float = 0.0
    texture: Texture = field(default_factory=Texture)


@dataclass(frozen=True)
class Sphere:
    center: tuple[float, float, float]
    radius: float
    texture: Texture = field(default_factory=Texture)


@dataclass(frozen=True)
class Plane:
    """Plane through ``point`` with ``normal``; a rectangle of ``half_extent`` (along two in-plane
    axes ``u`` = normal x z-up (or x when the normal is vertical), ``v`` = normal x u) when given,
    infinite when ``half_extent`` is None. Visible from both sides."""

    point: tuple[float, float, float]
    normal: tuple[float, float, float]
    half_extent: tuple[float, float] | None = None
    texture: Texture = field(default_factory=Texture)

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit normal and the in-plane axes u, v."""
        n = np.asarray(self.normal, dtype=np.float64)
        n = n / np.linalg.norm(n)
        reference = np.array([0.0, 0.0, 1.0]) if abs(n[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        u = np.cross(n, reference)
        u /= np.linalg.norm(u)
        return n, u, np.cross(n, u)


@dataclass(frozen=True)
class Scene:
    """A room (optional) plus objects. ``camera_region`` = (x, y, radius, z_min, z_max): a vertical
    cylinder free of objects where :func:`camera_trajectory` may place the camera."""

    room: Room | None = None
    objects: tuple = ()
    camera_region: tuple[float, float, float, float, float] = (0.0, 0.0, 0.5, 1.0, 1.8)
    light_direction: tuple[float, float, float] = (0.4, 0.3, 0.85)  # towards the light
    ambient: float = 0.35  # share of the light that does not depend on the surface orientation
    light_color: tuple[float, float, float] = (1.0, 1.0, 1.0)  # linear RGB gain (colour and exposure)

    @classmethod
    def random(cls, seed: int, n_objects: int | None = None) -> "Scene":
        """A random room (4-9 m wide, 2.5-3.5 m high) with boxes, spheres and panels."""
        rng = np.random.default_rng(seed)
        size = (float(rng.uniform(5.0, 9.0)), float(rng.uniform(4.0, 8.0)), float(rng.uniform(2.5, 3.5)))
        room = Room(
            size=size,
            wall=_random_texture(rng),
            floor=_random_texture(rng, pattern="checker"),
            ceiling=_random_texture(rng, pattern="plain"),
        )
        region = (size[0] / 2, size[1] / 2, 0.6, 1.0, min(1.8, size[2] - 0.5))
        n_objects = int(rng.integers(6, 12)) if n_objects is None else n_objects
        objects = []
        attempts = 0
        while len(objects) < n_objects and attempts < 200:
            attempts += 1
            kind = rng.choice(["box", "box", "sphere", "panel"])
            x = float(rng.uniform(0.5, size[0] - 0.5))
            y = float(rng.uniform(0.5, size[1] - 0.5))
            texture = _random_texture(rng)
            if kind == "box":
                half = (float(rng.uniform(0.15, 0.6)), float(rng.uniform(0.15, 0.6)), float(rng.uniform(0.15, 0.8)))
                footprint = math.hypot(half[0], half[1])
                z = half[2] if rng.random() < 0.7 else float(rng.uniform(half[2], size[2] - half[2]))
                candidate = Box((x, y, z), half, float(rng.uniform(0, math.pi)), texture)
            elif kind == "sphere":
                radius = float(rng.uniform(0.15, 0.5))
                footprint = radius
                z = float(rng.uniform(radius, min(size[2] - radius, 2.0)))
                candidate = Sphere((x, y, z), radius, texture)
            else:
                half = (float(rng.uniform(0.2, 0.7)), float(rng.uniform(0.2, 0.6)))
                footprint = max(half)
                yaw = float(rng.uniform(0, math.pi))
                tilt = float(rng.uniform(-0.6, 0.6))
                normal = (math.cos(yaw) * math.cos(tilt), math.sin(yaw) * math.cos(tilt), math.sin(tilt))
                z = float(rng.uniform(half[1] + 0.1, size[2] - half[1] - 0.1))
                candidate = Plane((x, y, z), normal, half, texture)
            # keep the camera region and a margin around it free
            if math.hypot(x - region[0], y - region[1]) < region[2] + footprint + 0.6:
                continue
            objects.append(candidate)
        return cls(room=room, objects=tuple(objects), camera_region=region)


def _random_texture(rng: np.random.Generator, pattern: str | None = None) -> Texture:
    return Texture(
        color_a=tuple(float(c) for c in rng.uniform(0.3, 1.0, 3)),
        color_b=tuple(float(c) for c in rng.uniform(0.0, 0.5, 3)),
        pattern=pattern or str(rng.choice(PATTERNS[:3])),
        scale=float(rng.uniform(0.08, 0.4)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """4x4 camera-to-world pose of an optical frame at ``eye`` looking at ``target``."""
    eye = np.asarray(eye, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.asarray(up, dtype=np.float64))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, eye
    return pose


def camera_trajectory(n: int, seed: int, scene: Scene | None = None) -> np.ndarray:
    """``n`` smooth camera-to-world poses (n, 4, 4) inside the scene's camera region.

    The camera drifts on a slow ellipse, turns (yaw up to ~1 rad over the sequence) and looks
    slightly down, so consecutive frames overlap like a handheld sweep.
    """
    rng = np.random.default_rng(seed)
    scene = scene or Scene()
    cx, cy, radius, z_min, z_max = scene.camera_region
    phase = rng.uniform(0, 2 * math.pi)
    if scene.objects:
        # start facing one of the objects so that views have foreground/background edges
        target = scene.objects[int(rng.integers(len(scene.objects)))]
        tx, ty = target.center[:2] if hasattr(target, "center") else target.point[:2]
        yaw0 = math.atan2(ty - cy, tx - cx) + rng.uniform(-0.3, 0.3)
    else:
        yaw0 = rng.uniform(0, 2 * math.pi)
    yaw_span = rng.uniform(-0.8, 0.8)
    height = rng.uniform(z_min, z_max)
    pitch = rng.uniform(-0.35, 0.0)
    poses = []
    for i in range(n):
        s = i / max(n - 1, 1)
        angle = phase + 1.5 * s
        eye = np.array([
            cx + 0.8 * radius * math.cos(angle),
            cy + 0.5 * radius * math.sin(angle),
            height + 0.1 * math.sin(3.0 * s),
        ])
        yaw = yaw0 + yaw_span * s
        direction = np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), math.sin(pitch)])
        poses.append(look_at(eye, eye + direction))
    return np.stack(poses)
