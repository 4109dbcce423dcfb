"""`ppd synth-bag`: a rosbag2 (MCAP) of a synthetic camera sweep, as a robot would record it: colour
Image + CameraInfo + aligned GT depth (32FC1 metres), and optionally a 16-beam LiDAR PointCloud2.

The topics are those of ``training/finetune_robot.yaml``, so the bag trains, validates and
evaluates (``ppd eval-bag``) without renaming anything. The LiDAR is mounted on the camera with
the extrinsic of that config (8 cm above, 5 cm behind the camera).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

IMAGE_TOPIC = "/camera/color/image_raw"
CAMERA_INFO_TOPIC = "/camera/color/camera_info"
DEPTH_TOPIC = "/camera/aligned_depth_to_color/image_raw"
CLOUD_TOPIC = "/lidar/points"
CAMERA_FRAME = "camera_color_optical_frame"
LIDAR_FRAME = "lidar"
# pose of the LiDAR in the camera optical frame (p_camera = R p_lidar + t), as tf2_echo prints it
LIDAR_TRANSLATION = (0.0, -0.08, -0.05)
LIDAR_ROTATION_XYZW = (0.5, -0.5, 0.5, 0.5)  # LiDAR x forward / y left / z up -> optical z / -x / -y
SCENE_FAMILIES = ("tabletop", "room")
START_S = 1000  # stamp of the first frame


def scene_views(family: str, frames: int, seed: int):
    """(scene, camera-to-world poses (frames, 4, 4)) of one sweep through a scene of ``family``:
    ``tabletop`` (close range, :mod:`ppd_ros.synthetic.tabletop`) or ``room`` (the random rooms
    the demo model was trained on)."""
    from ppd_ros.synthetic import Scene, camera_trajectory
    from ppd_ros.synthetic.tabletop import tabletop_scene, tabletop_trajectory

    if family == "tabletop":
        return tabletop_scene(seed), tabletop_trajectory(frames, seed)
    if family == "room":
        scene = Scene.random(seed)
        return scene, camera_trajectory(frames, seed, scene)
    raise ValueError(f"unknown scene family {family!r}; choose one of {', '.join(SCENE_FAMILIES)}")


def lidar_to_camera() -> np.ndarray:
    """4x4 pose of the LiDAR frame in the camera optical frame."""
    from ppd_ros.metric.sparse import quaternion_to_matrix

    pose = np.eye(4)
    pose[:3, :3] = quaternion_to_matrix(*LIDAR_ROTATION_XYZW)
    pose[:3, 3] = LIDAR_TRANSLATION
    return pose


def write_synthetic_bag(path: str | Path, frames: int, seed: int, family: str = "tabletop", width: int = 96,
                        height: int = 64, horizontal_fov_deg: float = 60.0, lidar: bool = False,
                        rate_hz: float = 10.0) -> dict[str, int]:
    """Write the bag folder ``path`` (must not exist); returns the message count per topic.
    Every message of frame ``i`` carries the header stamp ``START_S + i / rate_hz``."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from ppd_ros.synthetic import default_camera, render
    from ppd_ros.synthetic.lidar import lidar_scan

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists already; choose a new output folder")
    if frames < 1 or width < 16 or height < 16:
        raise ValueError(f"need at least 1 frame of at least 16x16 pixels, got {frames} of {width}x{height}")
    scene, poses = scene_views(family, frames, seed)
    camera = default_camera(width, height, horizontal_fov_deg)
    mount = lidar_to_camera()
    store = get_typestore(Stores.ROS2_JAZZY)
    t = store.types
    counts: dict[str, int] = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        topics = {IMAGE_TOPIC: "sensor_msgs/msg/Image", CAMERA_INFO_TOPIC: "sensor_msgs/msg/CameraInfo",
                  DEPTH_TOPIC: "sensor_msgs/msg/Image"}
        if lidar:
            topics[CLOUD_TOPIC] = "sensor_msgs/msg/PointCloud2"
        connections = {topic: writer.add_connection(topic, msgtype, typestore=store)
                       for topic, msgtype in topics.items()}

        def write(topic, stamp_ns, msg):
            writer.write(connections[topic], stamp_ns, store.serialize_cdr(msg, topics[topic]))
            counts[topic] = counts.get(topic, 0) + 1

        for index, pose in enumerate(poses):
            stamp_ns = START_S * 10**9 + round(index * 1e9 / rate_hz)
            stamp = t["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
            header = t["std_msgs/msg/Header"](stamp=stamp, frame_id=CAMERA_FRAME)
            rgb, depth = render(scene, camera, pose)
            write(CAMERA_INFO_TOPIC, stamp_ns, _camera_info(t, header, camera))
            write(IMAGE_TOPIC, stamp_ns, _image(t, header, rgb, "rgb8"))
            write(DEPTH_TOPIC, stamp_ns, _image(t, header, depth.astype("<f4"), "32FC1"))
            if lidar:
                points = lidar_scan(scene, pose @ mount)
                write(CLOUD_TOPIC, stamp_ns, _cloud(t, t["std_msgs/msg/Header"](stamp=stamp, frame_id=LIDAR_FRAME),
                                                    points))
    return counts


def _image(t, header, array: np.ndarray, encoding: str):
    array = np.ascontiguousarray(array)
    height, width = array.shape[:2]
    return t["sensor_msgs/msg/Image"](header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
                                      step=array.nbytes // height, data=array.view(np.uint8).reshape(-1))


def _camera_info(t, header, camera):
    K = np.asarray(camera.K, dtype=np.float64)
    roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return t["sensor_msgs/msg/CameraInfo"](
        header=header, height=camera.height, width=camera.width, distortion_model="plumb_bob", d=np.zeros(5),
        k=K.reshape(-1), r=np.eye(3).reshape(-1), p=np.hstack([K, np.zeros((3, 1))]).reshape(-1),
        binning_x=0, binning_y=0, roi=roi)


def _cloud(t, header, points: np.ndarray):
    """Unorganised cloud: x, y, z float32 and the beam index ``ring`` (uint16), 16 bytes a point."""
    from ppd_ros.synthetic.lidar import BEAM_ELEVATIONS_DEG

    layout = np.dtype({"names": ["x", "y", "z", "ring"], "formats": ["<f4", "<f4", "<f4", "<u2"],
                       "offsets": [0, 4, 8, 12], "itemsize": 16})
    cloud = np.zeros(len(points), layout)
    cloud["x"], cloud["y"], cloud["z"] = points.T
    elevation = np.degrees(np.arctan2(points[:, 2], np.hypot(points[:, 0], points[:, 1])))
    cloud["ring"] = np.abs(elevation[:, None] - np.asarray(BEAM_ELEVATIONS_DEG)[None]).argmin(axis=1)
    Field = t["sensor_msgs/msg/PointField"]
    fields = [Field(name=name, offset=offset, datatype=datatype, count=1)
              for name, offset, datatype in (("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("ring", 12, 4))]
    return t["sensor_msgs/msg/PointCloud2"](header=header, height=1, width=len(cloud), fields=fields,
                                            is_bigendian=False, point_step=16, row_step=16 * len(cloud),
                                            data=cloud.view(np.uint8).reshape(-1), is_dense=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="bag folder to write (rosbag2, MCAP); must not exist")
    parser.add_argument("--frames", type=int, default=64, help="frames of the sweep (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="scene and trajectory seed (one seed, one scene)")
    parser.add_argument("--scene", choices=SCENE_FAMILIES, default="tabletop",
                        help="tabletop: close-range table with objects (default); room: the random rooms the "
                             "demo model was trained on")
    parser.add_argument("--width", type=int, default=96, help="image width (default 96: the demo model's)")
    parser.add_argument("--height", type=int, default=64, help="image height (default 64)")
    parser.add_argument("--fov", type=float, default=60.0, help="horizontal field of view, degrees")
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second of the stamps")
    parser.add_argument("--lidar", action="store_true", help=f"also a 16-beam LiDAR cloud on {CLOUD_TOPIC}")


def run(args: argparse.Namespace) -> int:
    try:
        counts = write_synthetic_bag(args.output, args.frames, args.seed, args.scene, args.width, args.height,
                                     args.fov, args.lidar, args.rate)
    except FileExistsError as error:
        print(f"ppd synth-bag: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {args.frames} frames of a {args.scene} scene (seed {args.seed}), "
          f"{args.width}x{args.height}")
    for topic, count in counts.items():
        print(f"  {topic}: {count} messages")
    if args.lidar:
        x, y, z = LIDAR_TRANSLATION
        qx, qy, qz, qw = LIDAR_ROTATION_XYZW
        print(f"  LiDAR pose in {CAMERA_FRAME}: --lidar-extrinsic {x:g} {y:g} {z:g} {qx:g} {qy:g} {qz:g} {qw:g}")
    return 0
