"""The cloud step of the pipeline: depth in metres + camera (+ colour) -> organised x y z rgb
cloud with flying pixels removed. Shared by the depth node's pipeline and the cloud node."""
from __future__ import annotations

import cv2
import numpy as np

from ppd_ros.geometry.camera import CameraModel
from ppd_ros.geometry.cloud import RemovalCounts, depth_to_cloud


def colour_cloud(depth, camera: CameraModel, rgb: np.ndarray | None, filter_flying_pixels: bool = True,
                 keep_organized: bool = True, thresholds: dict | None = None) -> tuple[np.ndarray, RemovalCounts]:
    """(cloud, removal counts) of a (h, w) depth (torch or numpy, NaN/0 = none) seen by ``camera``
    (scaled to (w, h)). ``rgb`` of another size is resized to the depth grid with area averaging
    (colours may be averaged; depth never is)."""
    height, width = depth.shape[:2]
    if rgb is not None and rgb.shape[:2] != (height, width):
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    return depth_to_cloud(depth, camera, rgb=rgb, filter=filter_flying_pixels, keep_organized=keep_organized,
                          **(thresholds or {}))
