"""`ppd eval-bag` measures what the node publishes: one bag replayed through the depth node over real
DDS (its raw messages published in bag order, each frame answered before the next) and through
`ppd eval-bag` with the same params file gives byte-identical depth images and point clouds."""
from __future__ import annotations

import argparse

import pytest
import torch

pytest.importorskip("rclpy")

from sensor_msgs.msg import Image, PointCloud2  # noqa: E402

from ppd_ros.evaluation.eval_bag import add_arguments, run  # noqa: E402
from ros_helpers.harness import running_node  # noqa: E402
from test_eval_bag import synthetic_frames as synthetic_frames  # noqa: E402 - the fixture
from test_eval_bag import write_bag  # noqa: E402

DOMAIN_ID = 76
PARAMS = ("/**:\n  ros__parameters:\n    model: tiny-random\n    device: cpu\n    steps: 1\n    target_area: 1024\n"
          "    output_resolution: input\n    max_relative_jump: 0.05\n")


def bag_messages(bag):
    from rosbags.highlevel import AnyReader

    from ppd_ros.evaluation.bag import typestore

    with AnyReader([bag], default_typestore=typestore()) as reader:
        return [(c.topic, bytes(raw), reader.deserialize(raw, c.msgtype).header.stamp)
                for c, _, raw in reader.messages() if c.topic in ("/camera/image", "/camera/camera_info")]


def eval_outputs(out):
    from rosbags.highlevel import AnyReader

    from ppd_ros.evaluation.report import output_typestore

    found = {}
    with AnyReader([out / "depth"], default_typestore=output_typestore()) as reader:
        for connection, _, raw in reader.messages():
            if connection.topic in ("/ppd/depth", "/ppd/points"):
                msg = reader.deserialize(raw, connection.msgtype)
                key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
                found.setdefault(key, {})[connection.topic.split("/")[-1]] = (msg.height, msg.width, msg.data.tobytes())
    return found


def test_node_and_eval_bag_publish_the_same_bytes(tmp_path, synthetic_frames):
    camera, frames = synthetic_frames
    bag = write_bag(tmp_path / "bag", "mcap", camera, frames)
    params = tmp_path / "node.yaml"
    params.write_text(PARAMS)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "eval"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the node process (OMP_NUM_THREADS=1): the same sums in the same order
    try:
        code = run(parser.parse_args([str(bag), "--image-topic", "/camera/image", "--camera-info-topic",
                                    "/camera/camera_info", "--params-file", str(params), "--output", str(out)]))
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    offline = eval_outputs(out)
    assert len(offline) == len(frames)

    live = {}
    with running_node(["--params-file", str(params), "-r", "image:=/camera/image", "-r",
                       "camera_info:=/camera/camera_info"], DOMAIN_ID,
                      {"depth": Image, "points": PointCloud2}, image_topic="/camera/image",
                      info_topic="/camera/camera_info") as (client, _):
        for topic, raw, stamp in bag_messages(bag):
            if topic == "/camera/camera_info":
                client.info_pub.publish(raw)  # the recorded CDR bytes, as `ros2 bag play` sends them
                continue
            key = (stamp.sec, stamp.nanosec)
            for name in ("depth", "points"):
                msg = client.publish_until_answered(client.image_pub, raw, name, lambda m, key=key: (
                    m.header.stamp.sec, m.header.stamp.nanosec) == key)
                live.setdefault(key, {})[name] = (msg.height, msg.width, bytes(msg.data))
    assert sorted(live) == sorted(offline)
    for key in offline:
        for name in ("depth", "points"):
            assert live[key][name][:2] == offline[key][name][:2] == (48, 64), (key, name)
            assert live[key][name][2] == offline[key][name][2], (key, name)
