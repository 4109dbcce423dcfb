"""`ppd bench cloud`: depth -> flying-pixel-filtered organised PointCloud2 bytes, against Open3D
statistical outlier removal (SOR) measured in the same run, on a synthetic room whose depth is
blurred across edges the way a regression network blurs it. Prints time per frame, the speed-up
and how many flying / true-surface points each removes (exact ground truth from the renderer).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="1024x768,512x384", help="comma-separated WIDTHxHEIGHT list")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs of our pipeline per size")
    parser.add_argument("--sor-repeats", type=int, default=3, help="timed runs of the Open3D baseline per size")
    parser.add_argument("--seed", type=int, default=0, help="synthetic scene seed")
    parser.add_argument("--blur-factor", type=int, default=4, help="GT rendered at 1/N size, bilinearly upsampled")
    parser.add_argument("--neighbours", type=int, default=20, help="SOR nb_neighbors")
    parser.add_argument("--std-ratio", type=float, default=3.0, help="SOR std_ratio")
    parser.add_argument("--device", default="cpu", help="torch device for our pipeline (the baseline is CPU)")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads for our pipeline (0 = torch default); 1 by default: the pass is memory bound "
        "and torch's thread pool degrades badly when cores are shared. Open3D uses its own threads.",
    )


def open3d_unavailable_reason(error: BaseException) -> str:
    """Why ``import open3d`` failed, with the fix (the baseline is skipped, not the benchmark)."""
    text = str(error).strip()
    if "libusb" in text:  # the pip wheel links against a system library pip cannot install
        return (f"open3d is installed but cannot load libusb-1.0.so.0 ({text}); install the system package: "
                f"sudo apt install libusb-1.0-0 (Debian/Ubuntu)")
    return f"open3d is not importable ({text}); install it with pip install \".[bench]\" (open3d-cpu)"


def depth_message_16uc1(depth):
    """A sensor_msgs/Image (rosbags type, no ROS needed) of ``depth`` in millimetres, as a ToF camera sends."""
    import numpy as np

    from ppd_ros.evaluation.bag import typestore

    types = typestore().types
    millimetres = np.nan_to_num(np.round(depth * 1000.0), nan=0).clip(0, 65535).astype("<u2")
    header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id="tof")
    return types["sensor_msgs/msg/Image"](header=header, height=depth.shape[0], width=depth.shape[1],
                                          encoding="16UC1", is_bigendian=0, step=depth.shape[1] * 2,
                                          data=millimetres.view(np.uint8).reshape(-1))


def cloud_node_path(message, camera, rgb) -> bytes:
    """What ``ppd-cloud-node`` does per depth message, without the ROS publish."""
    from ppd_ros.msg_decode import depth_image_msg_to_metres
    from ppd_ros.pipeline.cloud import colour_cloud

    cloud, _ = colour_cloud(depth_image_msg_to_metres(message), camera, rgb)
    return cloud.tobytes()


def _median_ms(function, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        width, _, height = item.strip().lower().partition("x")
        sizes.append((int(width), int(height)))
    return sizes


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ppd_ros.geometry.cloud import (DEFAULT_MAX_GRAZING_ANGLE_DEG, DEFAULT_MAX_RELATIVE_JUMP, depth_to_cloud,
                                        flying_pixel_mask, unproject)
    from ppd_ros.synthetic import Scene, camera_trajectory, default_camera
    from ppd_ros.synthetic.metrics import (
        DEFAULT_TOLERANCE_ABS,
        DEFAULT_TOLERANCE_REL,
        GroundTruthSurface,
        blur_like_regression,
        evaluate_removal,
    )

    try:
        import open3d
    except (ImportError, OSError) as error:  # a missing system library surfaces as either
        open3d = None
        missing = open3d_unavailable_reason(error)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    scene = Scene.random(args.seed)
    pose = camera_trajectory(3, args.seed, scene)[1]

    print("ppd bench cloud: depth -> flying-pixel-filtered organised PointCloud2 bytes")
    print(
        f"  ours: {device}, torch {torch.__version__}, {torch.get_num_threads()} torch thread(s) of "
        f"{os.cpu_count()} cores; "
        f"max_relative_jump={DEFAULT_MAX_RELATIVE_JUMP}, max_grazing_angle_deg={DEFAULT_MAX_GRAZING_ANGLE_DEG}"
    )
    if open3d is None:
        print(f"  baseline: SKIPPED - {missing}")
    else:
        print(
            f"  baseline: Open3D {open3d.__version__} remove_statistical_outlier(nb_neighbors={args.neighbours}, "
            f"std_ratio={args.std_ratio}) on CPU with Open3D's own threads, same unprojection and packing"
        )
    print(
        f"  scene: Scene.random({args.seed}); depth = GT rendered at 1/{args.blur_factor} size, bilinearly upsampled; "
        f"flying = farther than max({DEFAULT_TOLERANCE_ABS} m, {DEFAULT_TOLERANCE_REL:.0%} of depth) from every "
        "GT point"
    )
    print("  times: median per frame, including the final cloud.tobytes()")

    met = True
    for width, height in _parse_sizes(args.sizes):
        camera = default_camera(width, height)
        blurred, gt_depth, rgb = blur_like_regression(scene, camera, pose, args.blur_factor)
        depth_on_device = torch.from_numpy(blurred).to(device)
        rgb_on_device = torch.from_numpy(rgb).to(device)

        def ours(depth=depth_on_device, camera=camera, rgb=rgb_on_device) -> bytes:
            cloud, _ = depth_to_cloud(depth, camera, rgb)
            return cloud.tobytes()

        if device.type == "cuda":
            def timed_ours() -> bytes:
                data = ours()
                torch.cuda.synchronize()
                return data
        else:
            timed_ours = ours
        ours_ms = _median_ms(timed_ours, args.repeats, warmup=2)

        rays = camera.ray_grid()
        points = unproject(blurred, rays).reshape(-1, 3).numpy()
        valid = np.isfinite(points[:, 2])
        surface = GroundTruthSurface(gt_depth, camera)
        ours_removed = flying_pixel_mask(blurred, rays).numpy().reshape(-1)[valid]
        ours_report = evaluate_removal(points[valid], ours_removed, surface)

        print(f"\n  {width}x{height} ({valid.sum()} points, {ours_report.flying_share_before:.2%} flying before "
              "filtering)")
        print(f"    ours      {ours_ms:9.1f} ms   {ours_report.summary()}")
        message = depth_message_16uc1(blurred)
        node_ms = _median_ms(lambda m=message, c=camera, r=rgb: cloud_node_path(m, c, r), args.repeats)
        print(f"    cloud node path (16UC1 mm Image -> metres -> coloured cloud bytes) {node_ms:9.1f} ms "
              f"= {node_ms / ours_ms:.2f}x ours")

        if open3d is None:
            continue

        def sor(blurred=blurred, camera=camera, rgb=rgb) -> bytes:
            cloud, _ = depth_to_cloud(blurred, camera, rgb, filter=False)
            flat = cloud.reshape(-1)
            index = np.flatnonzero(np.isfinite(flat["z"]))
            xyz = np.stack([flat["x"][index], flat["y"][index], flat["z"][index]], axis=-1).astype(np.float64)
            point_cloud = open3d.geometry.PointCloud(open3d.utility.Vector3dVector(xyz))
            _, kept = point_cloud.remove_statistical_outlier(nb_neighbors=args.neighbours, std_ratio=args.std_ratio)
            removed = np.ones(len(index), bool)
            removed[np.asarray(kept)] = False
            for name in ("x", "y", "z"):
                flat[name][index[removed]] = np.nan
            sor.removed = removed
            return cloud.tobytes()

        sor_ms = _median_ms(sor, args.sor_repeats, warmup=1)
        sor_report = evaluate_removal(points[valid], sor.removed, surface)
        speedup = sor_ms / ours_ms
        print(f"    SOR       {sor_ms:9.1f} ms   {sor_report.summary()}")
        better = ours_report.flying_removed_share >= sor_report.flying_removed_share
        print(
            f"    speed-up  {speedup:9.1f}x   flying removed ours {ours_report.flying_removed_share:.1%} vs SOR "
            f"{sor_report.flying_removed_share:.1%} ({'ours better or equal' if better else 'SOR better'}); "
            f"true surface removed ours {ours_report.true_removed_share:.2%} vs SOR {sor_report.true_removed_share:.2%}"
        )
        met &= speedup >= 50.0 and better
    if open3d is not None:
        verdict = "met" if met else "NOT met"
        print(f"\n  target (>= 50x faster than SOR, flying removal >= SOR at every size): {verdict}")
    return 0
