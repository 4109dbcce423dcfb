"""The depth node across processes over real DDS (raw image transport).

One node process (tiny-random model, small inference area, parameters from a --params-file plus a
-p override) serves the whole module; this process publishes rendered camera frames and CameraInfo
and checks every output, bad inputs, drops under a 60 Hz burst and the no-subscriber idle mode.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402

from ppd_ros.ros.conversions import numpy_to_image, pointcloud2_to_structured  # noqa: E402
from ros_helpers.harness import (camera_info_msg, diagnostic_values, make_stamp, running_node,  # noqa: E402
                                 same_stamp, stamp_text, synthetic_frames)

DOMAIN_ID = 87
WIDTH, HEIGHT = 160, 120
TARGET_AREA = 128 * 96
W_INF, H_INF = 128, 96  # inference size of a 160x120 (4:3) image at TARGET_AREA
DEPTH_SCALE, DEPTH_SHIFT = 0.2, 1.0  # keeps the tiny-random model's output positive
STEPS = 4  # from the -p override; the params file says 1
FRAME_ID = "test_camera_optical_frame"
OUTPUTS = {"depth": Image, "depth/camera_info": CameraInfo, "points": PointCloud2, "depth/colored": Image}


@pytest.fixture(scope="module")
def frames():
    return synthetic_frames(4, WIDTH, HEIGHT)


@pytest.fixture(scope="module")
def ros(tmp_path_factory):
    params = tmp_path_factory.mktemp("node") / "params.yaml"
    params.write_text(
        "/**:\n  ros__parameters:\n"
        f"    model: tiny-random\n    device: cpu\n    target_area: {TARGET_AREA}\n    steps: 1\n"
        f"    depth_scale: {DEPTH_SCALE}\n    depth_shift: {DEPTH_SHIFT}\n    diagnostics_period: 0.25\n")
    with running_node(["--params-file", str(params), "-p", f"steps:={STEPS}"], DOMAIN_ID,
                      {**OUTPUTS, "/diagnostics": DiagnosticArray}) as connected:
        yield connected


def send(client, rgb, camera, index: int, image=None, info=None, pause: float = 0.02):
    """Publish frame ``index`` (CameraInfo first, then the image) with stamp make_stamp(index)."""
    stamp = make_stamp(index)
    if info is None:
        info = camera_info_msg(camera, stamp, FRAME_ID)
    if image is None:
        image = numpy_to_image(rgb, "rgb8")
    image.header.stamp = stamp
    image.header.frame_id = FRAME_ID
    client.info_pub.publish(info)
    time.sleep(pause)
    client.image_pub.publish(image)
    return stamp


def expected_depth(rgb) -> np.ndarray:
    """The node's depth computed here independently: the same tiny-random model and seed, then
    depth = exp(scale * relative + shift) - 1."""
    from ppd_ros.backends import BackendOptions, create_backend
    from ppd_ros.model_specs import model_spec

    backend = create_backend(model_spec("tiny-random"), BackendOptions(device="cpu", steps=STEPS,
                                                                       target_area=TARGET_AREA, seed=0))
    relative = backend.push(rgb, None)[0].relative.double().numpy()
    return np.expm1(DEPTH_SCALE * relative + DEPTH_SHIFT)


def test_outputs_encodings_sizes_stamps_and_values(ros, frames):
    client, _ = ros
    (rgb, *_), camera = frames
    stamp = send(client, rgb, camera, 1)
    depth = client.wait_for("depth", same_stamp(stamp))
    info = client.wait_for("depth/camera_info", same_stamp(stamp))
    colored = client.wait_for("depth/colored", same_stamp(stamp))
    for msg in (depth, info, colored):
        assert msg.header.frame_id == FRAME_ID
    assert (depth.encoding, depth.width, depth.height, depth.step) == ("32FC1", W_INF, H_INF, W_INF * 4)
    assert (colored.encoding, colored.width, colored.height, colored.step) == ("rgb8", W_INF, H_INF, W_INF * 3)
    values = np.frombuffer(depth.data, np.float32).reshape(H_INF, W_INF)
    np.testing.assert_allclose(values, expected_depth(rgb), rtol=2e-3, atol=1e-4)

    # CameraInfo scaled to the inference resolution (pixel-centre aligned resize)
    sx, sy = W_INF / WIDTH, H_INF / HEIGHT
    K = np.asarray(info.k).reshape(3, 3)
    assert (info.width, info.height) == (W_INF, H_INF)
    assert K[0, 0] == pytest.approx(camera.fx * sx) and K[1, 1] == pytest.approx(camera.fy * sy)
    assert K[0, 2] == pytest.approx((camera.cx + 0.5) * sx - 0.5)
    assert K[1, 2] == pytest.approx((camera.cy + 0.5) * sy - 0.5)
    assert np.asarray(info.p).reshape(3, 4)[:, :3] == pytest.approx(K)


def test_organised_cloud_layout_and_points(ros, frames):
    from ppd_ros.geometry.camera import CameraModel
    from ppd_ros.geometry.cloud import flying_pixel_mask

    client, _ = ros
    (_, rgb, *_), camera = frames
    stamp = send(client, rgb, camera, 2)
    cloud_msg = client.wait_for("points", same_stamp(stamp))
    depth_msg = client.wait_for("depth", same_stamp(stamp))
    info = client.wait_for("depth/camera_info", same_stamp(stamp))
    assert cloud_msg.header.frame_id == FRAME_ID
    assert (cloud_msg.height, cloud_msg.width, cloud_msg.point_step) == (H_INF, W_INF, 16)
    assert cloud_msg.row_step == W_INF * 16 and not cloud_msg.is_dense
    assert [(f.name, f.offset, f.datatype, f.count) for f in cloud_msg.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("rgb", 12, 7, 1)]
    cloud = pointcloud2_to_structured(cloud_msg)
    assert cloud.shape == (H_INF, W_INF)

    depth = np.frombuffer(depth_msg.data, np.float32).reshape(H_INF, W_INF)
    K = np.asarray(info.k).reshape(3, 3)
    v, u = np.mgrid[0:H_INF, 0:W_INF]
    kept = np.isfinite(cloud["z"])
    # the filter removed something from this noisy depth, and removed points are NaN, not dropped
    assert 0 < kept.sum() < kept.size
    np.testing.assert_allclose(cloud["z"][kept], depth[kept], rtol=1e-6)
    np.testing.assert_allclose(cloud["x"][kept], ((u - K[0, 2]) / K[0, 0] * depth)[kept], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cloud["y"][kept], ((v - K[1, 2]) / K[1, 1] * depth)[kept], rtol=1e-5, atol=1e-6)
    assert np.isnan(cloud["x"][~kept]).all() and np.isnan(cloud["y"][~kept]).all()
    # the NaN pattern is the flying-pixel filter with the node's default thresholds
    model = CameraModel.pinhole(K[0, 0], K[1, 1], K[0, 2], K[1, 2], W_INF, H_INF)
    removed = flying_pixel_mask(torch.from_numpy(depth.copy()), model.ray_grid()).numpy()
    np.testing.assert_array_equal(~kept, removed | ~np.isfinite(depth))
    colours = cloud["rgb"].view(np.uint32)
    assert (colours >> 24 == 0).all() and colours.any()


BAD_INPUTS = {
    "unknown encoding": (lambda rgb, cam, stamp: (_image(rgb, encoding="weird8"), None), "encoding 'weird8'"),
    "data shorter than step*height": (lambda rgb, cam, stamp: (_image(rgb, data=rgb.tobytes()[:-100]), None),
                                      "shorter than step x height"),
    "step not matching width": (lambda rgb, cam, stamp: (_image(rgb, step=WIDTH * 3 - 3), None),
                                f"step {WIDTH * 3 - 3} is smaller than width {WIDTH}"),
    "zero focal length": (lambda rgb, cam, stamp: (None, _info(cam, stamp, fx=0.0)), "focal length"),
    "CameraInfo of another size": (lambda rgb, cam, stamp: (None, _info(cam, stamp, width=2 * WIDTH)),
                                   f"CameraInfo is {2 * WIDTH}x{HEIGHT} but the image is {WIDTH}x{HEIGHT}"),
}


def _image(rgb, encoding="rgb8", data=None, step=None):
    image = numpy_to_image(rgb, "rgb8")
    image.encoding = encoding
    if data is not None:
        image.data = data
    if step is not None:
        image.step = step
    return image


def _info(camera, stamp, fx=None, width=None):
    info = camera_info_msg(camera, stamp, FRAME_ID)
    if fx is not None:
        info.k[0] = fx
        info.p[0] = fx
    if width is not None:
        info.width = width
    return info


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_clear_error_then_next_frame_is_served(ros, frames, case):
    client, node = ros
    (_, _, rgb, good), camera = frames
    make, phrase = BAD_INPUTS[case]
    index = 10 + list(BAD_INPUTS).index(case) * 2
    bad_stamp = make_stamp(index)
    image, info = make(rgb, camera, bad_stamp)
    send(client, rgb, camera, index, image=image, info=info)
    error = node.wait_for_line("[ERROR]", f"skipping frame {stamp_text(bad_stamp)}")
    print(error)
    assert phrase in error, error

    good_stamp = send(client, good, camera, index + 1)
    client.wait_for("depth", same_stamp(good_stamp))
    client.wait_for("points", same_stamp(good_stamp))
    assert len(node.matching(stamp_text(bad_stamp))) == 1, node.matching(stamp_text(bad_stamp))
    assert not any(same_stamp(bad_stamp)(msg) for msg in client.received["depth"])


def latest_diagnostics(client, after: float) -> dict[str, str]:
    """Values of the first node diagnostics message stamped after ``after`` (node clock, seconds)."""
    msg = client.wait_for("/diagnostics", lambda m: m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec > after
                          and diagnostic_values(m) is not None)
    return diagnostic_values(msg)


def settled_totals(client) -> dict[str, int]:
    """Frame totals from diagnostics once every received frame is accounted for."""
    keys = ("received_frames", "published_frames", "dropped_frames", "skipped_frames", "idle_frames")
    deadline = time.monotonic() + 20
    while True:
        values = latest_diagnostics(client, time.time())
        totals = {key: int(values[key]) for key in keys}
        if totals["received_frames"] == sum(totals[key] for key in keys[1:]) or time.monotonic() > deadline:
            return totals


def test_drops_counted_under_60hz_burst_and_newest_frame_wins(ros, frames):
    client, _ = ros
    rgbs, camera = frames
    before = settled_totals(client)
    count = 60
    start = time.monotonic()
    for i in range(count):
        send(client, rgbs[i % len(rgbs)], camera, 100 + i, pause=0.0)
        time.sleep(max(0.0, start + (i + 1) / 60.0 - time.monotonic()))
    last = make_stamp(100 + count - 1)
    client.wait_for("depth", same_stamp(last))  # the newest frame is always processed
    after = settled_totals(client)
    delta = {key: after[key] - before[key] for key in after}
    assert delta["received_frames"] >= count // 2  # best-effort input may lose a few on the wire
    assert delta["skipped_frames"] == 0 and delta["idle_frames"] == 0
    assert delta["dropped_frames"] > 0, (delta, latest_diagnostics(client, time.time()))
    assert delta["published_frames"] + delta["dropped_frames"] == delta["received_frames"], delta

    values = latest_diagnostics(client, time.time())
    print("diagnostics after the burst:", values)
    assert values["model"] == "tiny-random" and values["steps"] == str(STEPS)
    assert values["depth_kind"] == "relative" and "RELATIVE" in values["depth_note"]
    for key in ("input_rate_hz", "output_rate_hz", "latency_ms", "decode_ms", "model_ms", "geometry_ms", "publish_ms"):
        assert key in values


def test_no_subscribers_means_no_inference(ros, frames):
    client, _ = ros
    rgbs, camera = frames
    for topic in OUTPUTS:
        client.unsubscribe(topic)
    try:
        time.sleep(1.0)  # let the node see the subscriptions go
        before = settled_totals(client)
        send(client, rgbs[0], camera, 300)
        client.wait_until(lambda: settled_totals(client)["idle_frames"] > before["idle_frames"], 10, "idle frame")
        after = settled_totals(client)
        assert after["published_frames"] == before["published_frames"]
    finally:
        for topic, msg_type in OUTPUTS.items():
            client.subscribe(topic, msg_type)
