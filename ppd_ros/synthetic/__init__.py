"""Synthetic RGB-D scenes with exact depth, for tests, training smoke runs and benchmarks.

    scene = Scene.random(seed)
    camera = CameraModel.pinhole(fx, fy, cx, cy, width, height)   # or default_camera(width, height)
    poses = camera_trajectory(n, seed, scene)                      # (n, 4, 4) camera-to-world
    rgb, depth = render(scene, camera, poses[0])                   # uint8 (H, W, 3), float32 (H, W) metres

Also: :mod:`~ppd_ros.synthetic.tabletop` (a close-range scene family), :mod:`~ppd_ros.synthetic.lidar`
(a 16-beam LiDAR scan by ray casting) and :mod:`~ppd_ros.synthetic.bag` (``ppd synth-bag``: a rosbag2
of a camera sweep with GT depth and LiDAR).
"""
from ppd_ros.synthetic.render import render
from ppd_ros.synthetic.scene import Box, Plane, Room, Scene, Sphere, Texture, camera_trajectory, look_at


def default_camera(width: int, height: int, horizontal_fov_deg: float = 60.0):
    """Pinhole camera with square pixels, principal point at the image centre."""
    import math

    from ppd_ros.geometry.camera import CameraModel

    focal = (width / 2) / math.tan(math.radians(horizontal_fov_deg) / 2)
    return CameraModel.pinhole(focal, focal, (width - 1) / 2, (height - 1) / 2, width, height)


FAMILIES = ("rooms", "varied")  # what synthetic_view renders


def synthetic_view(seed: int, width: int, height: int, family: str = "rooms", horizontal_fov_deg: float = 60.0,
                   photos=()):
    """(scene, pose, camera) of training sample ``seed``: family ``rooms`` (``Scene.random`` at
    ``horizontal_fov_deg``, first pose of ``camera_trajectory``) or ``varied`` (``varied_view``
    with ``photos``, its own field of view)."""
    from ppd_ros.synthetic.varied import varied_view

    if family not in FAMILIES:
        raise ValueError(f"synthetic family must be one of {', '.join(FAMILIES)}, got {family!r}")
    if family == "varied":
        view = varied_view(seed, photos)
        return view.scene, view.pose, default_camera(width, height, view.horizontal_fov_deg)
    scene = Scene.random(seed)
    return scene, camera_trajectory(1, seed, scene)[0], default_camera(width, height, horizontal_fov_deg)


__all__ = [
    "FAMILIES", "Box", "Plane", "Room", "Scene", "Sphere", "Texture",
    "camera_trajectory", "default_camera", "look_at", "render", "synthetic_view",
]
