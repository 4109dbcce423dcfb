"""A spinning multi-beam LiDAR in the synthetic scenes: exact returns by ray casting."""
from __future__ import annotations

import numpy as np

from ppd_ros.synthetic.render import cast_rays
from ppd_ros.synthetic.scene import Scene

BEAM_ELEVATIONS_DEG = tuple(np.linspace(-15.0, 15.0, 16))  # a 16-beam sensor (VLP-16 layout)


def lidar_scan(scene: Scene, lidar_to_world, elevations_deg=BEAM_ELEVATIONS_DEG, azimuth_step_deg: float = 1.0,
               max_range: float = 30.0) -> np.ndarray:
    """(N, 3) float32 returns in the LiDAR frame (x forward, y left, z up) of one full turn at
    ``lidar_to_world`` (4x4): one ray per beam elevation every ``azimuth_step_deg``, a point
    where it meets a surface within ``max_range`` metres (beam-major order)."""
    pose = np.asarray(lidar_to_world, dtype=np.float64)
    elevation = np.radians(np.asarray(elevations_deg, dtype=np.float64))[:, None]
    azimuth = np.radians(np.arange(0.0, 360.0, azimuth_step_deg))[None, :]
    directions = np.stack(np.broadcast_arrays(np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                                              np.sin(elevation)), axis=-1).reshape(-1, 3)
    distance = cast_rays(scene, pose[:3, 3], directions @ pose[:3, :3].T)
    hit = np.isfinite(distance) & (distance <= max_range)
    return (directions[hit] * distance[hit, None]).astype(np.float32)


__all__ = ["BEAM_ELEVATIONS_DEG", "lidar_scan"]
