"""One depth node serving two cameras from one model, in its own process over real DDS: every output
carries its own camera's header and CameraInfo, frames of both run, a bad frame on one camera never
stalls the other; and a camera whose CameraInfo arrives without images, or with far fewer images, is
reported with the fix."""
from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from ppd_ros.ros.conversions import numpy_to_image  # noqa: E402
from ros_helpers.harness import (NodeProcess, RosClient, camera_info_msg, diagnostic_values, make_stamp,  # noqa: E402
                                 same_stamp, synthetic_frames)

DOMAIN_ID = 78
CAMERAS = {"front": (96, 72), "rear": (128, 96)}  # different sizes: the two never share a batch
TARGET_AREA = 64 * 48


@pytest.fixture(scope="module")
def two_cameras():
    node = NodeProcess.depth_node(["-p", "model:=tiny-random", "-p", "device:=cpu", "-p", "steps:=1",
                                   "-p", f"target_area:={TARGET_AREA}", "-p", "cameras:=[front, rear, idle, sparse]",
                                   "-p", "diagnostics_period:=0.25"], DOMAIN_ID)
    client = RosClient(DOMAIN_ID, "two_camera_client")
    publishers = {}
    for name in (*CAMERAS, "idle", "sparse"):
        for topic, msg_type in (("depth", Image), ("depth/camera_info", CameraInfo), ("points", PointCloud2)):
            client.subscribe(f"{name}/{topic}", msg_type)
        publishers[name] = (client.publisher(f"{name}/image", Image),
                            client.publisher(f"{name}/camera_info", CameraInfo))
    client.subscribe("/diagnostics", DiagnosticArray)
    try:
        node.wait_for_line("Output:", timeout=60)
        client.wait_until_connected([pub for pair in publishers.values() for pub in pair])
        yield client, node, publishers
    finally:
        client.close()
        assert node.stop() == 0, "\n".join(node.output()[-30:])


def frame(name: str, index: int, encoding: str = "rgb8"):
    width, height = CAMERAS[name]
    (rgb, *_), camera = synthetic_frames(1, width, height, seed=index)
    stamp = make_stamp(index)
    image = numpy_to_image(rgb, "rgb8")
    image.header.stamp, image.header.frame_id = stamp, f"{name}_optical_frame"
    image.encoding = encoding
    return image, camera_info_msg(camera, stamp, f"{name}_optical_frame"), stamp


def test_each_camera_gets_its_own_outputs_and_a_bad_frame_stalls_nobody(two_cameras):
    client, node, publishers = two_cameras
    sent = {}
    for round_index in range(3):
        for k, name in enumerate(CAMERAS):
            index = 10 * round_index + k
            bad = name == "rear" and round_index == 1
            image, info, stamp = frame(name, index, encoding="no-such-encoding" if bad else "rgb8")
            publishers[name][1].publish(info)
            time.sleep(0.02)
            publishers[name][0].publish(image)
            sent.setdefault(name, []).append((stamp, bad))
        time.sleep(0.3)
    for name, frames in sent.items():
        width, height = CAMERAS[name]
        for stamp, bad in frames:
            if bad:
                continue
            depth = client.wait_for(f"{name}/depth", same_stamp(stamp), timeout=30)
            info = client.wait_for(f"{name}/depth/camera_info", same_stamp(stamp))
            points = client.wait_for(f"{name}/points", same_stamp(stamp))
            for msg in (depth, info, points):
                assert msg.header.frame_id == f"{name}_optical_frame"
            assert (info.width, info.height) == (depth.width, depth.height) == (points.width, points.height)
            assert depth.width * depth.height == pytest.approx(TARGET_AREA, rel=0.3)
            # the CameraInfo is this camera's own, scaled to the depth grid
            assert np.asarray(info.k)[0] == pytest.approx(frame(name, 0)[1].k[0] * depth.width / width)
            assert np.isfinite(np.frombuffer(depth.data, np.float32)).any()
    (bad_stamp, _) = sent["rear"][1]
    time.sleep(0.5)
    assert not any(same_stamp(bad_stamp)(m) for m in client.received.get("rear/depth", []))
    errors = node.matching("[ERROR]", "rear/image", "no-such-encoding")
    assert len(errors) == 1 and "front" not in errors[0]

    msg = client.wait_for("/diagnostics", lambda m: len(m.status) == 4 and all(
        diagnostic_values(m, f"({n})") is not None for n in CAMERAS)
        and int(diagnostic_values(m, "(rear)")["skipped_frames"]) == 1
        and int(diagnostic_values(m, "(front)")["published_frames"]) == 3
        and int(diagnostic_values(m, "(rear)")["published_frames"]) == 2, timeout=10)
    front, rear = diagnostic_values(msg, "(front)"), diagnostic_values(msg, "(rear)")
    assert front["camera"] == "front" and int(front["published_frames"]) == 3 and front["skipped_frames"] == "0"
    assert rear["camera"] == "rear" and int(rear["published_frames"]) == 2
    assert front["image_topic"] == "/front/image" and rear["image_topic"] == "/rear/image"


def test_camera_info_without_images_is_reported_with_the_fix(two_cameras):
    client, node, publishers = two_cameras
    _, info, _ = frame("front", 99)
    for i in range(8):  # a camera driver whose big images Fast DDS drops: only CameraInfo gets through
        info.header.stamp = make_stamp(100 + i)
        publishers["idle"][1].publish(info)
        time.sleep(0.5)
    line = node.wait_for_line("[WARN]", "/idle/camera_info", "no image on /idle/image", timeout=20)
    assert "FASTRTPS_DEFAULT_PROFILES_FILE" in line and "ppd dds-profile" in line
    msg = client.wait_for("/diagnostics", lambda m: diagnostic_values(m, "(idle)") is not None
                          and "no image" in next(s.message for s in m.status if "(idle)" in s.name))
    assert any(s.level == b"\x01" for s in msg.status if "(idle)" in s.name)  # WARN
    assert len(node.matching("no image on /idle/image")) == 1  # warned once


def test_images_far_below_the_camera_info_rate_are_reported_with_the_fix(two_cameras):
    client, node, publishers = two_cameras
    image, info, _ = frame("front", 200)
    image_pub, info_pub = publishers["sparse"]
    info_pub.publish(info)
    image_pub.publish(image)  # one image gets through, then only CameraInfo (Fast DDS drops the big ones)
    for i in range(12):
        time.sleep(0.3)
        info.header.stamp = make_stamp(201 + i)
        info_pub.publish(info)
    line = node.wait_for_line("[WARN]", "/sparse/camera_info", "but only 1 image(s) on /sparse/image", timeout=20)
    assert "FASTRTPS_DEFAULT_PROFILES_FILE" in line
    msg = client.wait_for("/diagnostics", lambda m: diagnostic_values(m, "(sparse)") is not None
                          and "only 1 image(s)" in next(s.message for s in m.status if "(sparse)" in s.name))
    assert any(s.level == b"\x01" for s in msg.status if "(sparse)" in s.name)  # WARN
    assert not node.matching("/front/camera_info", "Fast DDS")  # a camera with its images is never warned


def test_a_huge_encoding_string_is_cut_in_the_error_line(two_cameras):
    client, node, publishers = two_cameras
    image, info, stamp = frame("rear", 300, encoding="x" * 10000)
    publishers["rear"][1].publish(info)
    publishers["rear"][0].publish(image)
    line = node.wait_for_line("[ERROR]", "rear/image", "unsupported image encoding 'xxx", timeout=20)
    assert len(line) < 500 and "x" * 301 not in line and line.endswith("characters)")  # "... (10440 characters)"
    good, good_info, good_stamp = frame("rear", 301)
    publishers["rear"][1].publish(good_info)
    publishers["rear"][0].publish(good)
    client.wait_for("rear/depth", same_stamp(good_stamp), timeout=30)  # and the camera keeps serving
