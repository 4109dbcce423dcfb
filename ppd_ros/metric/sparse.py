"""Sparse metric references on the prediction grid: depth images and projected LiDAR clouds.

A registered depth image becomes :class:`~ppd_ros.metric.alignment.ReferencePoints` (every valid
pixel a sample, at any resolution); a LiDAR cloud becomes a float32 (H, W) depth in metres, NaN
where there is no return (nearest return per grid pixel). :func:`ppd_ros.metric.alignment.fit_log_depth`
takes both. Images are assumed rectified: the intrinsics K are used without distortion.
"""
from __future__ import annotations

import numpy as np

from ppd_ros.metric.alignment import ReferencePoints, to_numpy

def depth_image_points(depth_metres, height: int, width: int) -> ReferencePoints:
    """Every valid pixel (finite, > 0) of a registered depth image of any resolution as a sample on
    the (height, width) prediction grid: reference pixel (u, v) of an (H, W) image has its centre at
    (u + 0.5) * width / W - 0.5 on the grid, so it falls in grid column floor((u + 0.5) * width / W)
    (rows alike). Samples keep their own depth; several may share a grid pixel."""
    depth = to_numpy(depth_metres)
    if depth.ndim != 2:
        raise ValueError(f"depth image must be 2-D, got shape {depth.shape}")
    h, w = depth.shape
    with np.errstate(invalid="ignore"):
        v, u = np.nonzero(np.isfinite(depth) & (depth > 0))
    rows = np.minimum(((v + 0.5) * height / h).astype(np.int64), height - 1)
    cols = np.minimum(((u + 0.5) * width / w).astype(np.int64), width - 1)
    return ReferencePoints(rows, cols, depth[v, u].astype(np.float32), (int(height), int(width)))


def quaternion_to_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """3x3 rotation of the quaternion (x, y, z, w) (ROS order, scipy's too); normalised first."""
    from scipy.spatial.transform import Rotation

    q = np.array([x, y, z, w], dtype=np.float64)
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm < 1e-12:
        raise ValueError(f"quaternion (x, y, z, w) = {(x, y, z, w)} has no rotation (zero or non-finite norm)")
    return Rotation.from_quat(q / norm).as_matrix()


class LidarProjector:
    """Projects LiDAR points into the camera image with a fixed extrinsic.

    ``translation`` (x, y, z) metres and ``rotation_xyzw`` give the pose of the LiDAR frame in the
    camera optical frame (z forward, x right, y down), i.e. what ``tf2`` returns for
    ``lookup_transform(camera_optical_frame, lidar_frame)``: p_camera = R p_lidar + t.
    """

    def __init__(self, translation, rotation_xyzw, min_depth: float = 0.05):
        t = np.asarray(translation, dtype=np.float64).reshape(-1)
        q = np.asarray(rotation_xyzw, dtype=np.float64).reshape(-1)
        if t.shape != (3,) or q.shape != (4,) or not np.all(np.isfinite(t)):
            raise ValueError(f"extrinsic needs a finite translation (3) and quaternion x,y,z,w (4), got {t}, {q}")
        self.rotation = quaternion_to_matrix(*q)
        self.translation = t
        self.min_depth = float(min_depth)

    def to_camera(self, points) -> np.ndarray:
        """(N, 3) LiDAR points -> (N, 3) camera optical frame, float64."""
        p = to_numpy(points).astype(np.float64).reshape(-1, 3)
        return p @ self.rotation.T + self.translation

    def project(self, points, K, height: int, width: int) -> np.ndarray:
        """Depth image (height, width) float32 metres from (N, 3) LiDAR points; NaN where no return.

        ``K`` is the 3x3 intrinsic matrix of the prediction grid (scale it to that grid first, e.g.
        ``CameraModel.scaled_to(width, height).K``). Points behind the camera, closer than
        ``min_depth`` or non-finite are dropped; where several land in one pixel the nearest wins.
        """
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
        p = self.to_camera(points)
        with np.errstate(invalid="ignore"):
            keep = np.all(np.isfinite(p), axis=1) & (p[:, 2] > self.min_depth)
        p = p[keep]
        z = p[:, 2]
        u = np.floor(K[0, 0] * p[:, 0] / z + K[0, 1] * p[:, 1] / z + K[0, 2] + 0.5).astype(np.int64)
        v = np.floor(K[1, 1] * p[:, 1] / z + K[1, 2] + 0.5).astype(np.int64)
        inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
        u, v, z = u[inside], v[inside], z[inside]
        depth = np.full(height * width, np.inf)
        np.minimum.at(depth, v * width + u, z)  # nearest return per pixel
        depth[np.isinf(depth)] = np.nan
        return depth.reshape(height, width).astype(np.float32)
