"""The end-to-end demo (ppd_ros.ros.demo): the depth node as a subprocess, a synthetic camera over real
DDS, and every output file checked against an independent reading (bag, PLY, re-rendered exact depth)."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")

from ppd_ros.ros.demo import NAMESPACE, DemoConfig, DemoError, default_model, run_demo, write_ply  # noqa: E402
from test_colcon_route import install_dir, install_environment, package_prefix  # noqa: E402,F401  (fixture)

DOMAIN_ID = 83
FRAMES, WIDTH, HEIGHT, SEED = 4, 160, 128, 5
TARGET_AREA = 80 * 64  # the node resizes, so depth and clouds come on a smaller grid than the camera


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    output = tmp_path_factory.mktemp("demo")
    printed: list[str] = []
    summary = run_demo(DemoConfig(output=output, model="tiny-random", frames=FRAMES, width=WIDTH, height=HEIGHT,
                                  target_area=TARGET_AREA, seed=SEED, device="cpu", domain_id=DOMAIN_ID,
                                  startup_timeout=60.0, frame_timeout=30.0), print_fn=printed.append)
    return output, summary, printed


def read_ply(path):
    """(header lines, structured vertices) of a binary little-endian PLY with float xyz + uchar rgb."""
    raw = path.read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    header = raw[:end].decode("ascii").splitlines()
    count = int(next(line for line in header if line.startswith("element vertex")).split()[-1])
    dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    assert len(raw) - end == count * dtype.itemsize, "PLY body length does not match its vertex count"
    return header, np.frombuffer(raw[end:], dtype)


def read_bag(path):
    """topic -> list of deserialised messages, and topic -> msgtype, read with rosbags."""
    from rosbags.rosbag2 import Reader

    from ppd_ros.evaluation.report import output_typestore

    store = output_typestore()
    messages, types = {}, {}
    with Reader(path) as reader:
        for connection in reader.connections:
            types[connection.topic] = connection.msgtype
        for connection, _, raw in reader.messages():
            messages.setdefault(connection.topic, []).append(store.deserialize_cdr(raw, connection.msgtype))
    return messages, types


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def test_every_frame_answered_and_model_reported(demo):
    output, summary, printed = demo
    assert summary["model"] == "tiny-random"
    assert summary["frames_sent"] == FRAMES and summary["frames_answered"] == FRAMES
    for topic in ("depth", "depth/camera_info", "points", "depth/colored"):
        assert summary["received_per_topic"][topic] == FRAMES, topic
    assert summary["diagnostics_messages"] >= 1
    assert summary["node_exit_code"] == 0, (output / "node.log").read_text()[-2000:]
    assert any("model used: tiny-random" in line and "NOT depth" in line for line in printed)
    markdown = (output / "metrics_summary.md").read_text()
    assert "**Model: tiny-random**" in markdown and "NOT depth" in markdown
    assert json.loads((output / "metrics_summary.json").read_text())["frames_answered"] == FRAMES


def test_image_files(demo):
    output, summary, _ = demo
    depth_w, depth_h = summary["depth_size"]
    assert (depth_w, depth_h) != (WIDTH, HEIGHT) and depth_w * depth_h <= TARGET_AREA * 1.2
    for index in range(FRAMES):
        name = f"frame_{index:03d}"
        rgb = cv2.imread(str(output / "rgb" / f"{name}.png"))
        assert rgb.shape == (HEIGHT, WIDTH, 3)
        coloured = cv2.imread(str(output / "depth" / f"{name}.png"))
        assert coloured.shape == (depth_h, depth_w, 3) and coloured.std() > 0
        depth = np.load(output / "depth" / f"{name}.npy")
        assert depth.shape == (depth_h, depth_w) and depth.dtype == np.float32
    assert len(list((output / "depth").glob("*.png"))) == FRAMES
    assert len(list((output / "clouds").glob("*.ply"))) == FRAMES


def test_bag_holds_inputs_and_node_outputs(demo):
    output, summary, _ = demo
    messages, types = read_bag(output / "bag")
    expected = {f"{NAMESPACE}/{topic}": msgtype for topic, msgtype in (
        ("image", "sensor_msgs/msg/Image"), ("camera_info", "sensor_msgs/msg/CameraInfo"),
        ("depth", "sensor_msgs/msg/Image"), ("depth/camera_info", "sensor_msgs/msg/CameraInfo"),
        ("points", "sensor_msgs/msg/PointCloud2"), ("depth/colored", "sensor_msgs/msg/Image"))}
    for topic, msgtype in expected.items():
        assert types[topic] == msgtype
        assert len(messages[topic]) == FRAMES, topic
    assert types["/diagnostics"] == "diagnostic_msgs/msg/DiagnosticArray"
    assert len(messages["/diagnostics"]) == summary["diagnostics_messages"]
    # the depth in the bag is what was saved as .npy, frame by frame in stamp order
    depth_msgs = sorted(messages[f"{NAMESPACE}/depth"], key=stamp_ns)
    for index, msg in enumerate(depth_msgs):
        assert msg.encoding == "32FC1"
        from_bag = np.frombuffer(msg.data.tobytes(), "<f4").reshape(msg.height, msg.width)
        saved = np.load(output / "depth" / f"frame_{index:03d}.npy")
        np.testing.assert_array_equal(from_bag, saved)
    info = messages[f"{NAMESPACE}/depth/camera_info"][0]
    assert (info.width, info.height) == tuple(summary["depth_size"])


def test_ply_clouds_are_the_finite_points_of_the_published_clouds(demo):
    output, summary, _ = demo
    messages, _ = read_bag(output / "bag")
    clouds = sorted(messages[f"{NAMESPACE}/points"], key=stamp_ns)
    vertex_counts = []
    for index, msg in enumerate(clouds):
        offsets = {field.name: field.offset for field in msg.fields}
        raw = np.frombuffer(msg.data.tobytes(), np.uint8).reshape(-1, msg.point_step)
        xyz = np.stack([raw[:, offsets[a]:offsets[a] + 4].copy().view("<f4")[:, 0] for a in "xyz"], axis=1)
        packed = raw[:, offsets["rgb"]:offsets["rgb"] + 4].copy().view("<u4")[:, 0]
        finite = np.isfinite(xyz).all(axis=1)
        header, vertices = read_ply(output / "clouds" / f"frame_{index:03d}.ply")
        assert header[0] == "ply" and header[1] == "format binary_little_endian 1.0"
        assert f"element vertex {int(finite.sum())}" in header
        np.testing.assert_array_equal(np.stack([vertices["x"], vertices["y"], vertices["z"]], axis=1), xyz[finite])
        np.testing.assert_array_equal(vertices["r"], (packed[finite] >> 16) & 255)
        np.testing.assert_array_equal(vertices["b"], packed[finite] & 255)
        vertex_counts.append(len(vertices))
    assert math.isclose(summary["cloud_points_mean"], float(np.mean(vertex_counts)))


def test_summary_matches_independent_recomputation(demo):
    """AbsRel / delta1 recomputed from the saved depth and a fresh render of the exact depth, with an
    alignment written here (np.polyfit in log(d + 1))."""
    from ppd_ros.synthetic import Scene, camera_trajectory, default_camera, render

    output, summary, _ = demo
    depth_w, depth_h = summary["depth_size"]
    scene = Scene.random(SEED)
    camera = default_camera(WIDTH, HEIGHT).scaled_to(depth_w, depth_h)
    abs_rels, delta1s = [], []
    for index, pose in enumerate(camera_trajectory(FRAMES, SEED, scene)):
        gt = render(scene, camera, pose)[1]
        np.testing.assert_allclose(np.load(output / "gt" / f"frame_{index:03d}.npy"), gt, equal_nan=True)
        depth = np.load(output / "depth" / f"frame_{index:03d}.npy").astype(np.float64)
        valid = np.isfinite(gt) & (gt > 0) & np.isfinite(depth) & (depth > 0)
        slope, intercept = np.polyfit(np.log1p(depth[valid]), np.log1p(gt[valid]), 1)
        aligned = np.expm1(slope * np.log1p(depth[valid]) + intercept)
        abs_rels.append(np.mean(np.abs(aligned - gt[valid]) / gt[valid]))
        delta1s.append(np.mean(np.maximum(aligned / gt[valid], gt[valid] / aligned) < 1.25))
        row = summary["per_frame"][index]
        assert row["valid_pixels"] == int(valid.sum())
        assert math.isclose(row["abs_rel"], abs_rels[-1], rel_tol=1e-4, abs_tol=1e-6)
    assert math.isclose(summary["metrics"]["abs_rel"], float(np.mean(abs_rels)), rel_tol=1e-4)
    assert abs(summary["metrics"]["delta1"] - float(np.mean(delta1s))) < 1e-3
    markdown = (output / "metrics_summary.md").read_text()
    numbers = re.search(r"\| tiny-random \| ([0-9.]+) \| ([0-9.]+) \|", markdown)
    assert numbers and math.isclose(float(numbers.group(1)), np.mean(abs_rels), abs_tol=1e-4)
    # the summary says what the saved depth is and what share of the depth grid the clouds keep
    assert "Depth published by the node: **RELATIVE**" in markdown
    kept = re.search(r"Clouds: (\d+) points on average of the (\d+) pixels of the depth grid \((\d+)%\) are kept "
                     r"by the flying-pixel filter", markdown)
    assert kept and int(kept.group(2)) == depth_w * depth_h
    assert int(kept.group(3)) == round(100 * summary["cloud_points_mean"] / (depth_w * depth_h))


def test_round_trip_latency_is_measured(demo):
    _, summary, _ = demo
    round_trips = [row["round_trip_s"] for row in summary["per_frame"]]
    assert all(0 < value < 30 for value in round_trips)
    assert math.isclose(summary["latency"]["round_trip_mean_s"], float(np.mean(round_trips)), rel_tol=1e-9)


def test_write_ply_drops_nan_points_and_unpacks_colours(tmp_path):
    cloud = np.zeros((2, 2), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("rgb", "f4")])
    cloud["x"] = [[0, 1], [2, 3]]
    cloud["z"] = [[1, np.nan], [3, 4]]
    colours = np.array([[0x102030, 0], [0xFF0001, 0x00FF00]], dtype=np.uint32)
    cloud["rgb"] = colours.view(np.float32)
    assert write_ply(tmp_path / "c.ply", cloud) == 3
    header, vertices = read_ply(tmp_path / "c.ply")
    assert "element vertex 3" in header
    assert vertices["x"].tolist() == [0, 2, 3] and vertices["z"].tolist() == [1, 3, 4]
    assert vertices["r"].tolist() == [0x10, 0xFF, 0] and vertices["g"].tolist() == [0x20, 0, 0xFF]
    assert vertices["b"].tolist() == [0x30, 1, 0]


def test_default_model_is_the_demo_model_when_its_checkpoint_ships():
    from ppd_ros.paths import share_dir

    shipped = (share_dir() / "model" / "demo").is_dir() and any((share_dir() / "model" / "demo").glob("*.safetensors"))
    assert default_model() == ("ppd-demo" if shipped else "tiny-random")


def test_node_that_cannot_start_is_reported_with_its_log(tmp_path):
    config = DemoConfig(output=tmp_path, model="no-such-model", frames=1, width=32, height=32,
                        domain_id=DOMAIN_ID + 1, startup_timeout=60.0)
    with pytest.raises(DemoError, match="exited with code") as error:
        run_demo(config, print_fn=lambda line: None)
    assert "no-such-model" in str(error.value)


def test_colcon_install_records_depth_frames(install_dir, tmp_path):  # noqa: F811
    """On the colcon route (generated ppd_ros.msg) the node's DepthFrame output is recorded too and
    its latency / inference time reach the summary."""
    install = install_dir
    installed = next((package_prefix(install) / "lib").glob("python3*/site-packages/ppd_ros/ros/demo.py"), None)
    if installed is None:
        pytest.skip(f"the colcon install at {install} predates ppd_ros.ros.demo: run `bash .ci/build_colcon.sh`")
    env = install_environment(install)
    env.update(ROS_DOMAIN_ID=str(DOMAIN_ID + 2), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", OMP_NUM_THREADS="1")
    output = tmp_path / "demo"
    # cwd is tmp_path, so ppd_ros (with ppd_ros.msg) comes from the install
    result = subprocess.run([sys.executable, "-m", "ppd_ros.ros.demo", "--output", str(output), "--model",
                             "tiny-random", "--frames", "2", "--width", "64", "--height", "48", "--device", "cpu"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((output / "metrics_summary.json").read_text())
    assert summary["received_per_topic"]["depth/frame"] == 2
    assert 0 < summary["latency"]["node_inference_mean_s"] <= summary["latency"]["node_latency_mean_s"]
    messages, types = read_bag(output / "bag")
    assert types[f"{NAMESPACE}/depth/frame"] == "ppd_ros/msg/DepthFrame"
    frames = messages[f"{NAMESPACE}/depth/frame"]
    assert len(frames) == 2 and all(frame.model == "tiny-random" for frame in frames)
