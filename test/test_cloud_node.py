"""The cloud node in its own process over real DDS: a rendered depth image (16UC1 millimetres and
32FC1 metres, 0 / NaN invalid) with CameraInfo and a registered colour image of another size gives
the organised, flying-pixel-filtered x y z rgb cloud of the same pipeline step, byte for byte; a bad
depth message gives one error and the next one is served."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402

from ppd_ros.msg_decode import depth_image_msg_to_metres  # noqa: E402
from ppd_ros.pipeline.cloud import colour_cloud  # noqa: E402
from ppd_ros.ros.conversions import numpy_to_image  # noqa: E402
from ros_helpers.harness import NodeProcess, RosClient, camera_info_msg, make_stamp, same_stamp  # noqa: E402

DOMAIN_ID = 79
WIDTH, HEIGHT = 80, 60


@pytest.fixture(scope="module")
def scene():
    from ppd_ros.synthetic import Scene, camera_trajectory, default_camera
    from ppd_ros.synthetic.metrics import blur_like_regression

    scene = Scene.random(4)
    camera = default_camera(WIDTH, HEIGHT)
    blurred, _, rgb = blur_like_regression(scene, camera, camera_trajectory(2, 4, scene)[1], 4)
    return camera, blurred.astype(np.float32), rgb


@pytest.fixture(scope="module")
def ros():
    node = NodeProcess([__import__("sys").executable, "-m", "ppd_ros.ros.cloud_node", "--ros-args", "-r",
                        "__ns:=/tof", "-p", "use_color:=true"], DOMAIN_ID)
    client = RosClient(DOMAIN_ID, "cloud_client")
    client.subscribe("/tof/points", PointCloud2)
    publishers = {name: client.publisher(f"/tof/{name}", kind) for name, kind in
                  (("depth", Image), ("camera_info", CameraInfo), ("image", Image))}
    try:
        node.wait_for_line("cloud node:", timeout=30)
        client.wait_until_connected(list(publishers.values()))
        yield client, node, publishers
    finally:
        client.close()
        assert node.stop() == 0, "\n".join(node.output()[-30:])


def send(publishers, camera, depth_msg, rgb, index):
    stamp = make_stamp(index)
    depth_msg.header.stamp, depth_msg.header.frame_id = stamp, "tof_optical_frame"
    colour = numpy_to_image(np.ascontiguousarray(np.repeat(np.repeat(rgb, 2, 0), 2, 1)), "rgb8")  # twice the size
    colour.header.stamp = stamp
    publishers["camera_info"].publish(camera_info_msg(camera, stamp, "tof_optical_frame"))
    publishers["image"].publish(colour)
    publishers["depth"].publish(depth_msg)
    return stamp


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_depth_sensor_cloud_equals_the_pipeline_step(ros, scene, encoding):
    client, node, publishers = ros
    camera, depth, rgb = scene
    if encoding == "16UC1":
        message = numpy_to_image(np.round(np.nan_to_num(depth) * 1000).astype(np.uint16), "16UC1")
    else:
        depth = depth.copy()
        depth[:5, :5] = np.nan  # REP 118: NaN (and 0) = no depth
        message = numpy_to_image(depth, "32FC1")
    index = 1 if encoding == "16UC1" else 2
    stamp = send(publishers, camera, message, rgb, index)
    cloud_msg = client.publish_until_answered(publishers["depth"], message, "/tof/points", same_stamp(stamp))
    assert cloud_msg.header.frame_id == "tof_optical_frame" and (cloud_msg.height, cloud_msg.width) == (HEIGHT, WIDTH)
    assert [f.name for f in cloud_msg.fields] == ["x", "y", "z", "rgb"] and not cloud_msg.is_dense
    colour_big = np.ascontiguousarray(np.repeat(np.repeat(rgb, 2, 0), 2, 1))
    expected, removal = colour_cloud(depth_image_msg_to_metres(message), camera, colour_big)
    assert bytes(cloud_msg.data) == expected.tobytes()
    assert removal.flying > 0  # the blurred edges held flying pixels, and they are gone
    z = np.frombuffer(bytes(cloud_msg.data), np.float32).reshape(HEIGHT, WIDTH, 4)[..., 2]
    assert np.isnan(z[:5, :5]).all() if encoding == "32FC1" else np.isfinite(z).sum() == removal.kept


def test_bad_depth_message_is_one_error_then_served(ros, scene):
    client, node, publishers = ros
    camera, depth, rgb = scene
    bad = numpy_to_image(rgb, "rgb8")  # a colour image on the depth topic
    send(publishers, camera, bad, rgb, 10)
    node.wait_for_line("[ERROR]", "unsupported depth encoding 'rgb8'", timeout=10)
    good = numpy_to_image(depth, "32FC1")
    stamp = send(publishers, camera, good, rgb, 11)
    client.publish_until_answered(publishers["depth"], good, "/tof/points", same_stamp(stamp))
    errors = node.matching("[ERROR]", "unsupported depth encoding 'rgb8'")
    assert len(errors) == 1, node.output()[-10:]
