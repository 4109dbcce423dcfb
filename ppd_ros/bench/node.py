"""`ppd bench node`: the depth node's cost outside the model, per stage, at 1024x768.

Runs the node's own stage functions on a rendered synthetic frame: decode (sensor_msgs/Image rgb8
and CompressedImage jpeg -> rgb array), geometry (relative -> metres, organised flying-pixel-free
cloud), conversion (depth Image, PointCloud2, CameraInfo, colour map) and publish (rclpy publish to
a subscriber over DDS). Baselines measured in the same run: the naive conversion that assigns
numpy arrays to ``msg.data`` (element-wise copy in rclpy) and a plain memory copy of the same bytes.
The model is left out (see `ppd bench model`).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=20, help="repeats per stage (median reported)")
    parser.add_argument("--naive-repeats", type=int, default=2, help="repeats of the slow naive baseline")
    parser.add_argument("--device", default="cpu", help="torch device of the geometry stage")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID for the publish stage")


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, caches such as the camera ray grid)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def run(args: argparse.Namespace) -> int:
    from ppd_ros.paths import share_dir

    profile = share_dir() / "config" / "fastdds_shm.xml"
    if "FASTRTPS_DEFAULT_PROFILES_FILE" not in os.environ and Path(profile).is_file():
        os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(profile)  # as the launch files do
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if args.domain_id is not None:
        os.environ["ROS_DOMAIN_ID"] = str(args.domain_id)

    import numpy as np
    import rclpy
    import torch
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from ppd_ros.geometry.cloud import depth_to_cloud
    from ppd_ros.ros.conversions import (camera_model_to_info, compressed_to_rgb8, image_to_rgb8, numpy_to_image,
                                         rgb8_to_compressed, structured_to_pointcloud2)
    from ppd_ros.ros.depth_node import colorize_depth, relative_to_depth
    from ppd_ros.ros.params import DEFAULT_DEPTH_SCALE, DEFAULT_DEPTH_SHIFT
    from ppd_ros.ros.qos import make_qos
    from ppd_ros.synthetic import Scene, camera_trajectory, default_camera, render

    width, height = args.width, args.height
    scene = Scene.random(0)
    camera = default_camera(width, height)
    rgb, true_depth = render(scene, camera, camera_trajectory(1, 0, scene)[0])
    # the model's output stand-in: relative log-depth that the node's default mapping turns back into metres
    relative = torch.from_numpy((np.log1p(true_depth) - DEFAULT_DEPTH_SHIFT) / DEFAULT_DEPTH_SCALE).to(args.device)
    image_msg = numpy_to_image(rgb, "rgb8")
    jpeg_msg = rgb8_to_compressed(rgb, "jpeg")
    print(f"node overhead at {width}x{height} (inference size = input size), geometry on {args.device}, "
          f"median of {args.repeats}; model excluded")

    decode_raw = _median_ms(lambda: image_to_rgb8(image_msg), args.repeats)
    decode_jpeg = _median_ms(lambda: compressed_to_rgb8(jpeg_msg), args.repeats)

    state = {}

    def geometry():
        depth = relative_to_depth(relative, DEFAULT_DEPTH_SCALE, DEFAULT_DEPTH_SHIFT)
        state["cloud"], state["counts"] = depth_to_cloud(depth, camera, rgb=rgb, filter=True, keep_organized=True)
        state["depth"] = depth.cpu().numpy()

    geometry_ms = _median_ms(geometry, args.repeats)

    def conversion():
        state["depth_msg"] = numpy_to_image(state["depth"], "32FC1")
        state["cloud_msg"] = structured_to_pointcloud2(state["cloud"])
        state["info_msg"] = camera_model_to_info(camera)

    conversion_ms = _median_ms(conversion, args.repeats)
    colored_ms = _median_ms(lambda: numpy_to_image(colorize_depth(state["depth"]), "rgb8"), args.repeats)

    rclpy.init()
    node = rclpy.create_node("ppd_bench_node")
    received = {"depth": 0, "points": 0}
    qos = make_qos("reliable", 1)
    publishers = {"depth": node.create_publisher(Image, "bench/depth", qos),
                  "points": node.create_publisher(PointCloud2, "bench/points", qos),
                  "info": node.create_publisher(CameraInfo, "bench/camera_info", qos)}
    for key, msg_type in (("depth", Image), ("points", PointCloud2)):
        node.create_subscription(msg_type, f"bench/{key}", lambda _msg, key=key: received.__setitem__(
            key, received[key] + 1), qos)
    deadline = time.monotonic() + 10
    while publishers["points"].get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)

    def publish():
        publishers["depth"].publish(state["depth_msg"])
        publishers["points"].publish(state["cloud_msg"])
        publishers["info"].publish(state["info_msg"])
        rclpy.spin_once(node, timeout_sec=0)  # keep the subscriber draining

    publish_ms = _median_ms(publish, args.repeats)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and received["points"] < args.repeats + 1:
        rclpy.spin_once(node, timeout_sec=0.05)

    def naive_conversion():  # what a node does when it assigns arrays to msg.data
        depth_msg = Image(height=height, width=width, encoding="32FC1", step=width * 4)
        depth_msg.data = state["depth"].view(np.uint8).reshape(-1)
        cloud_msg = PointCloud2(height=height, width=width, point_step=16, row_step=width * 16)
        cloud_msg.data = state["cloud"].view(np.uint8).reshape(-1)

    naive_ms = _median_ms(naive_conversion, args.naive_repeats)
    memcpy_ms = _median_ms(lambda: (state["depth"].tobytes(), state["cloud"].tobytes()), args.repeats)
    node.destroy_node()
    rclpy.try_shutdown()

    counts = state["counts"]
    total = decode_raw + geometry_ms + conversion_ms + publish_ms
    rows = [
        ("decode rgb8 Image -> array", decode_raw),
        ("decode jpeg CompressedImage (compressed transport)", decode_jpeg),
        ("geometry: metres + filtered organised cloud", geometry_ms),
        ("conversion: depth Image + PointCloud2 + CameraInfo", conversion_ms),
        ("conversion: depth/colored (only when subscribed)", colored_ms),
        ("publish: depth + points + camera_info (rclpy -> DDS)", publish_ms),
        ("total per frame outside the model (raw input)", total),
    ]
    for label, value in rows:
        print(f"  {label:<55s} {value:9.2f} ms")
    print(f"  cloud: {counts.kept} kept, {counts.flying} flying removed, {counts.invalid} without depth; "
          f"a keep-last-1 subscriber in this process took {received['points']} of {args.repeats + 1} clouds")
    print("baselines (same run):")
    print(f"  naive conversion (ndarray -> msg.data, element-wise)      {naive_ms:9.2f} ms"
          f"  -> ours is {naive_ms / conversion_ms:.0f}x faster")
    print(f"  memcpy of the same depth + cloud bytes                    {memcpy_ms:9.2f} ms"
          f"  -> our conversion costs {conversion_ms / memcpy_ms:.1f}x a plain copy")
    return 0
