"""`ppd bench node`: what the depth node costs around the model, and what several cameras cost.

1. Stages at 1024x768 (default), timed on the node's own code: the frame pipeline's post-model
   path (:meth:`FrameProcessor.finish`: metres, nearest resize, flying-pixel-free cloud, colour
   map) fed with the rendered frame's exact depth as the model output (the model is left out, see
   ``ppd bench model``), the node's message building (:mod:`ppd_ros.ros.publishing`) and an rclpy
   publish to a subscriber over DDS. Baselines in the same run: assigning numpy arrays to
   ``msg.data`` (element-wise in rclpy) and a plain memory copy of the same bytes.
2. ``--cameras 1,2,4``: real depth node processes (tiny random model, CPU) answering N cameras in
   closed loop over DDS (a camera's next frame goes out when its depth came back): frames/s and
   resident memory of ONE node serving N cameras (one model copy, frames batched) against N
   single-camera nodes.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=20, help="repeats per stage (median reported)")
    parser.add_argument("--naive-repeats", type=int, default=2, help="repeats of the slow naive baseline")
    parser.add_argument("--device", default="cpu", help="torch device of the pipeline stages")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: from the pid)")
    parser.add_argument("--cameras", default="", help="camera counts to compare, e.g. 1,2,4 (empty: skip)")
    parser.add_argument("--camera-width", type=int, default=320, help="image width of the camera comparison")
    parser.add_argument("--camera-height", type=int, default=240)
    parser.add_argument("--target-area", type=int, default=128 * 96, help="inference area of the tiny model there")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per configuration")


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, caches such as the camera ray grid)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _ros_environment(domain_id: int) -> dict[str, str]:
    from ppd_ros.paths import share_dir

    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    profile = share_dir() / "config" / "fastdds_shm.xml"
    if "FASTRTPS_DEFAULT_PROFILES_FILE" not in env and profile.is_file():
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(profile)  # as the launch files do
    return env


def stage_table(args) -> None:
    import numpy as np
    import rclpy
    import torch
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from ppd_ros.backends import BackendOptions, DepthOutput, create_backend
    from ppd_ros.model_specs import model_spec
    from ppd_ros.parameters import DEFAULT_DEPTH_SCALE, DEFAULT_DEPTH_SHIFT, config_with
    from ppd_ros.pipeline import CLOUD, COLORED, FrameInput, FrameProcessor
    from ppd_ros.ros import publishing
    from ppd_ros.ros.conversions import compressed_to_rgb8, image_to_rgb8, numpy_to_image, rgb8_to_compressed
    from ppd_ros.ros.qos import make_qos
    from ppd_ros.synthetic import Scene, camera_trajectory, default_camera, render

    width, height = args.width, args.height
    scene = Scene.random(0)
    camera = default_camera(width, height)
    rgb, true_depth = render(scene, camera, camera_trajectory(1, 0, scene)[0])
    # the model's output stand-in: relative log-depth that the default mapping turns back into metres
    relative = torch.from_numpy(((np.log1p(true_depth) - DEFAULT_DEPTH_SHIFT) / DEFAULT_DEPTH_SCALE)
                                .astype(np.float32)).to(args.device)
    backend = create_backend(model_spec("tiny-random"), BackendOptions(device=args.device,
                                                                        target_area=width * height))
    processor = FrameProcessor(backend, config_with({"model": "tiny-random", "device": args.device}))
    image_msg = numpy_to_image(rgb, "rgb8")
    jpeg_msg = rgb8_to_compressed(rgb, "jpeg")
    print(f"node stages at {width}x{height} (inference size = input size), pipeline on {args.device}, median of "
          f"{args.repeats}; the model is left out (its output is the frame's exact relative depth)")

    decode_raw = _median_ms(lambda: image_to_rgb8(image_msg), args.repeats)
    decode_jpeg = _median_ms(lambda: compressed_to_rgb8(jpeg_msg), args.repeats)
    state = {}

    def pipeline(wanted):
        token = processor.prepare(FrameInput(rgb, 0, camera), wanted)
        state["result"] = processor.finish(DepthOutput(token, relative, (height, width), 0.0))

    pipeline_ms = _median_ms(lambda: pipeline((CLOUD,)), args.repeats)
    stages = state["result"].timings
    colored_ms = _median_ms(lambda: pipeline((CLOUD, COLORED)), args.repeats) - pipeline_ms
    result = state["result"]
    header = image_msg.header

    def messages():
        state["depth"] = publishing.depth_image(result, header)
        state["points"] = publishing.point_cloud(result, header)
        state["info"] = publishing.depth_camera_info(result, header)

    conversion_ms = _median_ms(messages, args.repeats)
    rclpy.init(domain_id=args.domain_id)
    node = rclpy.create_node("ppd_bench_node")
    received = {"points": 0}
    qos = make_qos("reliable", 1)
    publishers = {"depth": node.create_publisher(Image, "bench/depth", qos),
                  "points": node.create_publisher(PointCloud2, "bench/points", qos),
                  "info": node.create_publisher(CameraInfo, "bench/camera_info", qos)}
    node.create_subscription(PointCloud2, "bench/points", lambda _msg: received.__setitem__(
        "points", received["points"] + 1), qos)
    deadline = time.monotonic() + 10
    while publishers["points"].get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)

    def publish():
        for key, publisher in publishers.items():
            publisher.publish(state[key])
        rclpy.spin_once(node, timeout_sec=0)  # keep the subscriber draining

    publish_ms = _median_ms(publish, args.repeats)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and received["points"] < args.repeats + 1:
        rclpy.spin_once(node, timeout_sec=0.05)
    depth_np, cloud = result.depth, result.cloud

    def naive_conversion():  # what a node does when it assigns arrays to msg.data
        depth_msg = Image(height=height, width=width, encoding="32FC1", step=width * 4)
        depth_msg.data = depth_np.view(np.uint8).reshape(-1)
        cloud_msg = PointCloud2(height=height, width=width, point_step=16, row_step=width * 16)
        cloud_msg.data = cloud.view(np.uint8).reshape(-1)

    naive_ms = _median_ms(naive_conversion, args.naive_repeats)
    memcpy_ms = _median_ms(lambda: (depth_np.tobytes(), cloud.tobytes()), args.repeats)
    node.destroy_node()
    rclpy.try_shutdown()

    total = decode_raw + pipeline_ms + conversion_ms + publish_ms
    rows = [
        ("decode rgb8 Image -> array", decode_raw),
        ("decode jpeg CompressedImage (compressed transport)", decode_jpeg),
        ("pipeline after the model (FrameProcessor.finish)", pipeline_ms),
        ("  of which metric step (metres)", 1000 * stages["metric"]),
        ("  of which geometry (resize + filtered organised cloud)", 1000 * stages["geometry"]),
        ("colour map depth/colored (only when subscribed)", colored_ms),
        ("messages: depth Image + PointCloud2 + CameraInfo", conversion_ms),
        ("publish: depth + points + camera_info (rclpy -> DDS)", publish_ms),
        ("total per frame outside the model (raw input)", total),
    ]
    for label, value in rows:
        print(f"  {label:<58s} {value:9.2f} ms")
    counts = result.removal
    print(f"  cloud: {counts.kept} kept, {counts.flying} flying removed, {counts.invalid} without depth; a keep-last-1 "
          f"subscriber in this process took {received['points']} of {args.repeats + 1} clouds")
    print("baselines (same run):")
    print(f"  naive conversion (ndarray -> msg.data, element-wise)         {naive_ms:9.2f} ms"
          f"  -> ours is {naive_ms / conversion_ms:.0f}x faster")
    print(f"  memcpy of the same depth + cloud bytes                       {memcpy_ms:9.2f} ms"
          f"  -> our conversion costs {conversion_ms / memcpy_ms:.1f}x a plain copy")


# ------------------------------------------------------------------------------------ cameras
def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _start_nodes(count: int, one_process: bool, args, env) -> list[subprocess.Popen]:
    common = [sys.executable, "-m", "ppd_ros.ros.depth_node", "--ros-args", "-p", "model:=tiny-random",
              "-p", "device:=cpu", "-p", "steps:=1", "-p", f"target_area:={args.target_area}",
              "-p", "input_reliability:=reliable", "--log-level", "warn"]
    names = [f"cam{k}" for k in range(count)]
    if one_process:
        return [subprocess.Popen(common + ["-p", f"cameras:=[{','.join(names)}]"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    return [subprocess.Popen(common + ["-r", f"__ns:=/{name}"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for name in names]


def measure_cameras(count: int, one_process: bool, args, domain_id: int) -> tuple[float, float]:
    """(frames/s over all cameras, resident MiB of the node processes) in closed loop."""
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CameraInfo, Image

    from ppd_ros.ros.conversions import camera_model_to_info, numpy_to_image
    from ppd_ros.ros.qos import make_qos
    from ppd_ros.synthetic import Scene, camera_trajectory, default_camera, render

    env = _ros_environment(domain_id)
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTRTPS_DEFAULT_PROFILES_FILE")
                       if k in env})
    scene = Scene.random(1)
    camera = default_camera(args.camera_width, args.camera_height)
    rgb = render(scene, camera, camera_trajectory(1, 1, scene)[0])[0]
    processes = _start_nodes(count, one_process, args, env)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    node = rclpy.create_node("ppd_bench_cameras", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    qos = make_qos("reliable", 1)
    lock = threading.Lock()
    answered = [0] * count
    sent_at = [0.0] * count
    publishers = []

    def send(k: int) -> None:
        stamp = node.get_clock().now().to_msg()
        image = numpy_to_image(rgb, "rgb8")
        image.header.stamp = stamp
        info = camera_model_to_info(camera, image.header)
        publishers[k][1].publish(info)
        publishers[k][0].publish(image)
        sent_at[k] = time.monotonic()

    def on_depth(k: int) -> None:
        with lock:
            answered[k] += 1
        send(k)

    for k in range(count):
        publishers.append((node.create_publisher(Image, f"/cam{k}/image", qos),
                           node.create_publisher(CameraInfo, f"/cam{k}/camera_info", qos)))
        node.create_subscription(Image, f"/cam{k}/depth", lambda _msg, k=k: on_depth(k), qos)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + 90
        while min(answered) == 0:  # start-up and discovery: resend until every camera answered once
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError(f"{count} camera(s), {'one process' if one_process else 'processes'}: the "
                                   "node did not answer every camera")
            for k in range(count):
                if answered[k] == 0 and time.monotonic() - sent_at[k] > 2.0:
                    send(k)
            time.sleep(0.05)
        with lock:
            start_counts = list(answered)
        start = time.monotonic()
        time.sleep(args.seconds)
        with lock:
            frames = sum(answered) - sum(start_counts)
        elapsed = time.monotonic() - start
        rss = sum(_rss_mib(p.pid) for p in processes)
        return frames / elapsed, rss
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
        for process in processes:
            process.send_signal(2)
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def camera_table(args, domain_id: int) -> None:
    counts = [int(c) for c in args.cameras.split(",") if c.strip()]
    print(f"\ncameras in closed loop over DDS: tiny random model on the CPU, {args.camera_width}x"
          f"{args.camera_height} images, inference area {args.target_area}, {args.seconds:.0f} s each")
    print(f"  {'cameras':>7} | {'one node: fps':>13} {'RSS MiB':>8} | {'N nodes: fps':>12} {'RSS MiB':>8} | "
          f"{'fps ratio':>9} {'memory ratio':>12}")
    for count in counts:
        one_fps, one_rss = measure_cameras(count, True, args, domain_id)
        many_fps, many_rss = measure_cameras(count, False, args, domain_id)
        print(f"  {count:>7} | {one_fps:>13.1f} {one_rss:>8.0f} | {many_fps:>12.1f} {many_rss:>8.0f} | "
              f"{one_fps / many_fps:>9.2f} {one_rss / many_rss:>12.2f}", flush=True)
    print("  ratios: one node serving N cameras / N single-camera nodes (fps > 1 and memory < 1 favour one node)")


def run(args: argparse.Namespace) -> int:
    domain_id = args.domain_id if args.domain_id is not None else 100 + os.getpid() % 100
    args.domain_id = domain_id
    os.environ.update({k: v for k, v in _ros_environment(domain_id).items()
                       if k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTRTPS_DEFAULT_PROFILES_FILE")})
    stage_table(args)
    if args.cameras:
        camera_table(args, domain_id)
    return 0
