"""A close-range scene family: one table with objects in a small room, seen by a camera that
sweeps around the table looking down at it (a robot arm's or a mobile manipulator's view).

It differs from :meth:`Scene.random` (rooms 4-9 m wide, camera at
room height looking level): objects at 0.3-1.5 m, views 30-55 degrees down, wood-grain and
fine textures, a low side light. One seed is one arrangement (a robot's workspace); the
trajectory sweeps once around it. The varied family (:mod:`~ppd_ros.synthetic.varied`) mixes it in.
"""
from __future__ import annotations

import math

import numpy as np

from ppd_ros.synthetic.scene import Box, Room, Scene, Sphere, Texture, look_at

TABLE_CENTRE = (2.0, 2.0)
TABLE_HALF = (0.6, 0.4)
TABLE_TOP_Z = 0.75


def tabletop_scene(seed: int) -> Scene:
    """A 4 x 4 x 2.6 m room with a table (1.2 x 0.8 m top at 0.75 m) holding 6-10 boxes and spheres."""
    rng = np.random.default_rng(seed)
    cx, cy = TABLE_CENTRE
    room = Room(size=(4.0, 4.0, 2.6),
                wall=Texture((0.85, 0.82, 0.75), (0.6, 0.58, 0.52), "noise", 0.3, int(rng.integers(2**31))),
                floor=Texture((0.35, 0.35, 0.38), (0.2, 0.2, 0.22), "checker", 0.3, int(rng.integers(2**31))),
                ceiling=Texture((0.9, 0.9, 0.9), pattern="plain"))
    wood = Texture((0.62, 0.42, 0.25), (0.45, 0.28, 0.15), "stripes", 0.015, int(rng.integers(2**31)))
    top = Box((cx, cy, TABLE_TOP_Z - 0.02), (TABLE_HALF[0], TABLE_HALF[1], 0.02), 0.0, wood)
    leg_height = (TABLE_TOP_Z - 0.04) / 2
    legs = [Box((cx + sx * (TABLE_HALF[0] - 0.05), cy + sy * (TABLE_HALF[1] - 0.05), leg_height),
                (0.025, 0.025, leg_height), 0.0, wood) for sx in (-1, 1) for sy in (-1, 1)]
    objects = []
    for _ in range(int(rng.integers(6, 11))):
        texture = Texture(tuple(float(c) for c in rng.uniform(0.3, 1.0, 3)),
                          tuple(float(c) for c in rng.uniform(0.0, 0.4, 3)),
                          str(rng.choice(["checker", "stripes", "noise"])), float(rng.uniform(0.01, 0.04)),
                          int(rng.integers(2**31)))
        x = cx + float(rng.uniform(-0.8, 0.8)) * TABLE_HALF[0]
        y = cy + float(rng.uniform(-0.8, 0.8)) * TABLE_HALF[1]
        if rng.random() < 0.65:
            half = tuple(float(v) for v in rng.uniform((0.03, 0.03, 0.03), (0.1, 0.1, 0.15)))
            objects.append(Box((x, y, TABLE_TOP_Z + half[2]), half, float(rng.uniform(0, math.pi)), texture))
        else:
            radius = float(rng.uniform(0.03, 0.08))
            objects.append(Sphere((x, y, TABLE_TOP_Z + radius), radius, texture))
    return Scene(room=room, objects=(top, *legs, *objects), camera_region=(cx, cy, 0.0, 1.1, 1.4),
                 light_direction=(0.8, -0.35, 0.45))


def tabletop_trajectory(n: int, seed: int) -> np.ndarray:
    """``n`` camera-to-world poses (n, 4, 4) on one sweep of about 200 degrees around the table,
    0.65-0.9 m from its centre and 0.35-0.6 m above its top, looking at points on the table."""
    rng = np.random.default_rng(seed)
    cx, cy = TABLE_CENTRE
    start = rng.uniform(0, 2 * math.pi)
    span = math.radians(200)
    poses = []
    for i in range(n):
        s = i / max(n - 1, 1)
        azimuth = start + span * s
        distance = 0.775 + 0.125 * math.sin(2 * math.pi * s + seed)
        height = TABLE_TOP_Z + 0.475 + 0.125 * math.cos(3 * math.pi * s)
        eye = (cx + distance * math.cos(azimuth), cy + distance * math.sin(azimuth), height)
        target = (cx + 0.15 * math.cos(5 * azimuth), cy + 0.1 * math.sin(3 * azimuth), TABLE_TOP_Z)
        poses.append(look_at(eye, target))
    return np.stack(poses)


__all__ = ["TABLE_CENTRE", "TABLE_HALF", "TABLE_TOP_Z", "tabletop_scene", "tabletop_trajectory"]
