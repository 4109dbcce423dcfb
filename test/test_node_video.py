"""The depth node in mode video across processes over real DDS (tiny-random-video, stride 4).

Every input frame comes out exactly once, in order, with its own header and its own CameraInfo;
the tail still pending in the stream comes out on the ~/reset_stream service, on a stamp gap
(before the next sequence starts) and after video_max_gap seconds without frames.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from ppd_ros.ros.conversions import numpy_to_image  # noqa: E402
from ros_helpers.harness import camera_info_msg, diagnostic_values, running_node, synthetic_frames  # noqa: E402

DOMAIN_ID = 95
WIDTH, HEIGHT = 64, 48
STRIDE = 4
MAX_GAP = 2.0  # video_max_gap
FRAME_ID = "video_camera_optical_frame"


@pytest.fixture(scope="module")
def frames():
    return synthetic_frames(6, WIDTH, HEIGHT)


@pytest.fixture(scope="module")
def ros():
    with running_node(
        ["-r", "__node:=video_depth", "-p", "mode:=video", "-p", "video_model:=tiny-random-video",
         "-p", f"video_stride:={STRIDE}", "-p", "steps:=1", "-p", "device:=cpu",
         "-p", f"video_max_gap:={MAX_GAP}", "-p", "input_reliability:=reliable",
         "-p", "diagnostics_period:=0.25"], DOMAIN_ID,
            {"depth": Image, "depth/camera_info": CameraInfo, "/diagnostics": DiagnosticArray},
            client_name="video_test_client", queue_depth=100, startup_timeout=90) as connected:
        yield connected


def stamp_at(seconds: float) -> Time:
    return Time(sec=int(seconds), nanosec=int(round((seconds - int(seconds)) * 1e9)))


def key(stamp) -> tuple[int, int]:
    return stamp.sec, stamp.nanosec


def send(client, rgb, camera, seconds: float):
    stamp = stamp_at(seconds)
    client.info_pub.publish(camera_info_msg(camera, stamp, FRAME_ID))
    image = numpy_to_image(rgb, "rgb8")
    image.header.stamp = stamp
    image.header.frame_id = FRAME_ID
    client.image_pub.publish(image)
    time.sleep(0.03)
    return key(stamp)


def outputs(client, topic: str, since: set) -> list[tuple[int, int]]:
    return [key(msg.header.stamp) for msg in client.received.get(topic, []) if key(msg.header.stamp) in since]


def wait_outputs(client, sent: list, timeout: float = 60.0) -> None:
    client.wait_until(lambda: len(outputs(client, "depth", set(sent))) >= len(sent)
                      and len(outputs(client, "depth/camera_info", set(sent))) >= len(sent),
                      timeout, f"{len(sent)} depth outputs")


def reset_stream(client) -> Trigger.Response:
    return client.call(Trigger, "/video_depth/reset_stream", Trigger.Request(), timeout=30)


def node_diagnostics(client, predicate) -> dict[str, str]:
    msg = client.wait_for("/diagnostics", lambda m: (v := diagnostic_values(m, "video_depth")) is not None
                          and predicate(v), timeout=20)
    return diagnostic_values(msg, "video_depth")


def test_every_frame_once_in_order_with_its_header_then_tail_on_reset_service(ros, frames):
    client, _ = ros
    rgbs, camera = frames
    count = 10  # the first window runs at S + 3 = 7 frames, the second would need 11
    sent = [send(client, rgbs[i % len(rgbs)], camera, 2000.0 + 0.1 * i) for i in range(count)]
    client.wait_until(lambda: len(outputs(client, "depth", set(sent))) >= STRIDE + 3, 60, "first window")
    time.sleep(0.5)
    assert outputs(client, "depth", set(sent)) == sent[:STRIDE + 3]  # the tail waits for its window

    response = reset_stream(client)
    assert response.success, response.message
    wait_outputs(client, sent)
    assert outputs(client, "depth", set(sent)) == sent  # each once, in input order
    assert outputs(client, "depth/camera_info", set(sent)) == sent  # each with its own CameraInfo
    for msg in client.received["depth"]:
        if key(msg.header.stamp) in set(sent):
            assert msg.header.frame_id == FRAME_ID and msg.encoding == "32FC1"
            assert (msg.width, msg.height) == (64, 64)  # on the tiny video model's window grid (inference)
            assert np.isfinite(np.frombuffer(msg.data, np.float32)).any()

    values = node_diagnostics(client, lambda v: int(v["published_frames"]) >= count)
    print("diagnostics:", values)
    assert values["mode"] == "video" and values["model"] == "tiny-random-video"
    assert values["video_stride"] == str(STRIDE) and "service: 1" in values["stream_resets"]
    assert int(values["windows_run"]) == 2 and float(values["window_throughput_fps"]) > 0
    assert 0 < float(values["latency_frames"]) <= STRIDE + 2 and float(values["latency_ms"]) > 0
    assert values["dropped_frames"] == "0" and values["stream_pending_frames"] == "0"


def test_stamp_gap_flushes_and_restarts_and_idle_tail_comes_out(ros, frames):
    client, _ = ros
    rgbs, camera = frames
    first = [send(client, rgbs[i], camera, 3000.0 + 0.1 * i) for i in range(3)]
    after_gap = send(client, rgbs[3], camera, 3000.0 + 0.2 + 10 * MAX_GAP)
    # the gap flushes the 3 pending frames before the new sequence; the lone frame after it comes
    # out once no frame arrived for video_max_gap seconds
    wait_outputs(client, first + [after_gap], timeout=60)
    assert outputs(client, "depth", set(first + [after_gap])) == first + [after_gap]
    values = node_diagnostics(client, lambda v: "idle" in v["stream_resets"])
    assert "time_gap: 1" in values["stream_resets"] and values["stream_pending_frames"] == "0"


def test_camera_info_change_flushes_and_restarts(ros, frames):
    from ppd_ros.geometry.camera import CameraModel

    client, _ = ros
    rgbs, camera = frames
    zoomed = CameraModel.pinhole(1.2 * camera.fx, 1.2 * camera.fy, camera.cx, camera.cy, WIDTH, HEIGHT)
    first = [send(client, rgbs[i], camera, 4000.0 + 0.1 * i) for i in range(3)]
    changed = send(client, rgbs[3], zoomed, 4000.3)
    wait_outputs(client, first + [changed], timeout=60)
    assert outputs(client, "depth", set(first + [changed])) == first + [changed]
    infos = {key(msg.header.stamp): msg for msg in client.received["depth/camera_info"]}
    assert infos[changed].k[0] == pytest.approx(1.2 * camera.fx) and infos[first[-1]].k[0] == pytest.approx(camera.fx)
    values = node_diagnostics(client, lambda v: "camera_changed" in v["stream_resets"])
    assert "camera_changed: 1" in values["stream_resets"]
