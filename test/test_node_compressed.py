"""The depth node with compressed input, no CameraInfo at first, CameraInfo of another size scaled
(camera_info_size_mismatch=scale) and outputs at the input resolution (nearest upsampling).
One node process over real DDS serves the module; the tests run in file order."""
from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2  # noqa: E402

from ppd_ros.ros.conversions import pointcloud2_to_structured, rgb8_to_compressed  # noqa: E402
from ros_helpers.harness import (camera_info_msg, diagnostic_values, make_stamp, running_node,  # noqa: E402
                                 same_stamp, stamp_text, synthetic_frames)

DOMAIN_ID = 88
WIDTH, HEIGHT = 160, 120
TARGET_AREA = 64 * 48
W_INF, H_INF = 64, 48
STEPS = 2
FRAME_ID = "compressed_camera_optical_frame"
OUTPUTS = {"depth": Image, "depth/camera_info": CameraInfo, "points": PointCloud2}


@pytest.fixture(scope="module")
def frames():
    return synthetic_frames(3, WIDTH, HEIGHT, seed=5)


@pytest.fixture(scope="module")
def ros():
    with running_node([
        "-p", "model:=tiny-random", "-p", "device:=cpu", "-p", f"target_area:={TARGET_AREA}",
        "-p", f"steps:={STEPS}", "-p", "input_transport:=compressed", "-p", "camera_info_size_mismatch:=scale",
        "-p", "output_resolution:=input", "-p", "depth_scale:=0.2", "-p", "depth_shift:=1",
        "-p", "diagnostics_period:=0.25"], DOMAIN_ID, {**OUTPUTS, "/diagnostics": DiagnosticArray},
            image_topic="image/compressed", image_type=CompressedImage) as (client, node):
        client.raw_pub = client.publisher("image", Image)
        yield client, node


def send(client, rgb, index: int, fmt: str = "png", info=None, data: bytes | None = None):
    stamp = make_stamp(index)
    msg = rgb8_to_compressed(rgb, fmt)
    msg.header.stamp = stamp
    msg.header.frame_id = FRAME_ID
    if data is not None:
        msg.data = data
    if info is not None:
        client.info_pub.publish(info)
        time.sleep(0.02)
    client.image_pub.publish(msg)
    return stamp


def test_runs_without_camera_info_with_one_warning(ros, frames):
    client, node = ros
    (rgb, *_), _ = frames
    assert client.raw_pub.get_subscription_count() == 0  # compressed transport: no raw subscription
    stamps = [send(client, rgb, 1), None]
    client.wait_for("depth", same_stamp(stamps[0]))
    stamps[1] = send(client, rgb, 2)
    depth = client.wait_for("depth", same_stamp(stamps[1]))
    assert (depth.width, depth.height, depth.encoding) == (WIDTH, HEIGHT, "32FC1")
    assert len(node.matching("[WARN]", "no CameraInfo received")) == 1
    assert "points" not in client.received and "depth/camera_info" not in client.received
    values = diagnostic_values(client.wait_for("/diagnostics", lambda m: diagnostic_values(m) is not None))
    assert values["camera_info"].startswith("missing")


def test_png_input_scaled_camera_info_and_nearest_upsampled_depth(ros, frames):
    from ppd_ros.backends import BackendOptions, create_backend
    from ppd_ros.geometry.resize import nearest_indices
    from ppd_ros.model_specs import model_spec

    client, _ = ros
    (_, rgb, _), camera = frames
    big = camera.scaled_to(2 * WIDTH, 2 * HEIGHT)  # calibration made at twice the image size
    stamp = send(client, rgb, 3, "png", info=camera_info_msg(big, make_stamp(3), FRAME_ID))
    depth_msg = client.wait_for("depth", same_stamp(stamp))
    info = client.wait_for("depth/camera_info", same_stamp(stamp))
    cloud = pointcloud2_to_structured(client.wait_for("points", same_stamp(stamp)))

    # depth at input size = the model's depth upsampled nearest (each pixel copies one source pixel)
    backend = create_backend(model_spec("tiny-random"), BackendOptions(device="cpu", steps=STEPS,
                                                                       target_area=TARGET_AREA, seed=0))
    relative = backend.push(rgb, None)[0].relative.double().numpy()
    assert relative.shape == (H_INF, W_INF)
    rows, cols = nearest_indices(H_INF, HEIGHT), nearest_indices(W_INF, WIDTH)  # pixel centres aligned
    expected = np.expm1(0.2 * relative + 1.0)[rows[:, None], cols[None, :]]
    depth = np.frombuffer(depth_msg.data, np.float32).reshape(HEIGHT, WIDTH)
    np.testing.assert_allclose(depth, expected, rtol=2e-3, atol=1e-4)

    # CameraInfo scaled from 320x240 down to the image size, the cloud at the same size
    K = np.asarray(info.k).reshape(3, 3)
    assert (info.width, info.height) == (WIDTH, HEIGHT)
    np.testing.assert_allclose(K, camera.K, rtol=1e-9, atol=1e-9)
    assert cloud.shape == (HEIGHT, WIDTH)
    kept = np.isfinite(cloud["z"])
    assert kept.any()
    np.testing.assert_allclose(cloud["z"][kept], depth[kept], rtol=1e-6)


def test_jpeg_input(ros, frames):
    client, _ = ros
    (_, _, rgb), camera = frames
    stamp = send(client, rgb, 4, "jpeg", info=camera_info_msg(camera, make_stamp(4), FRAME_ID))
    depth = client.wait_for("depth", same_stamp(stamp))
    assert (depth.width, depth.height) == (WIDTH, HEIGHT)
    client.wait_for("points", same_stamp(stamp))


@pytest.mark.parametrize("case", ["corrupt compressed bytes", "CameraInfo of another aspect ratio"])
def test_bad_input_gives_one_clear_error_then_next_frame_is_served(ros, frames, case):
    client, node = ros
    (rgb, good, _), camera = frames
    index = 20 if case.startswith("corrupt") else 22
    bad_stamp = make_stamp(index)
    if case.startswith("corrupt"):
        png = rgb8_to_compressed(rgb, "png").data
        send(client, rgb, index, "png", info=camera_info_msg(camera, bad_stamp, FRAME_ID),
             data=bytes(png[:40]) + bytes(200))
        phrase = "compressed"
    else:
        send(client, rgb, index, "png", info=camera_info_msg(camera.scaled_to(WIDTH, WIDTH), bad_stamp, FRAME_ID))
        phrase = "aspect ratios differ"
    error = node.wait_for_line("[ERROR]", f"skipping frame {stamp_text(bad_stamp)}")
    print(error)
    assert phrase in error, error
    good_stamp = send(client, good, index + 1, "png", info=camera_info_msg(camera, make_stamp(index + 1), FRAME_ID))
    client.wait_for("points", same_stamp(good_stamp))
    assert len(node.matching(stamp_text(bad_stamp))) == 1, node.matching(stamp_text(bad_stamp))


def test_a_flood_of_decompression_bombs_is_refused_fast_logged_once_and_good_frames_served(ros, frames):
    from test_decode_limits import jpeg_bomb

    client, node = ros
    (rgb, good, _), camera = frames
    bombs = [make_stamp(40 + i) for i in range(10)]
    for i, stamp in enumerate(bombs):  # 20 Hz of ~600-byte JPEGs claiming 20000 x 20000 pixels
        send(client, rgb, 40 + i, "jpeg", info=camera_info_msg(camera, stamp, FRAME_ID), data=jpeg_bomb())
        time.sleep(0.05)
    good_stamp = send(client, good, 60, "png", info=camera_info_msg(camera, make_stamp(60), FRAME_ID))
    client.wait_for("points", same_stamp(good_stamp), timeout=10)
    refused = node.matching("[ERROR]", "above the limit")
    assert len(refused) == 1, refused  # one line per cause every few seconds, the rest counted
    assert len(refused[0]) < 500 and "20000x20000" in refused[0].replace(" x ", "x")
    values = diagnostic_values(client.wait_for("/diagnostics", lambda m: (v := diagnostic_values(m)) is not None
                                               and int(v["skipped_frames"]) >= 10))
    assert int(values["skipped_frames"]) >= 10
