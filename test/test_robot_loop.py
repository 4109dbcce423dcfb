"""The robot fine-tune loop, end to end, as training/README.md documents it: its recipe block is run
command by command in a scratch folder (synthetic bag -> eval-bag of the demo model -> ppd-train fit
-> export -> eval-bag of the export), the node then serves the export by its path over real DDS,
and the fine-tuned model's held-out AbsRel must be clearly below the starting model's."""
from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO

pytest.importorskip("lightning")
pytest.importorskip("rclpy")

from sensor_msgs.msg import Image  # noqa: E402

from ros_helpers.harness import running_node  # noqa: E402

DOMAIN_ID = 81
RECIPE_MARK = "<!-- robot-loop recipe -->"


def recipe_commands(markdown: Path) -> list[list[str]]:
    """The commands of the bash block after RECIPE_MARK, continuation lines joined, as argv lists."""
    text = markdown.read_text()
    block = text[text.index(RECIPE_MARK):].split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def mean_abs_rel(out: Path) -> float:
    with open(out / "frames.csv") as handle:
        return float(np.mean([float(row["abs_rel"]) for row in csv.DictReader(handle)]))


def output_depth(out: Path) -> dict[tuple[int, int], bytes]:
    """(stamp) -> data of every /ppd/depth image of an eval-bag output bag."""
    from rosbags.highlevel import AnyReader

    from ppd_ros.evaluation.report import output_typestore

    found = {}
    with AnyReader([out / "depth"], default_typestore=output_typestore()) as reader:
        for connection, _, raw in reader.messages():
            if connection.topic == "/ppd/depth":
                msg = reader.deserialize(raw, connection.msgtype)
                found[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg.data.tobytes()
    return found


def first_frame(bag: Path, image_topic: str, info_topic: str) -> dict[str, bytes]:
    """The recorded CDR bytes of the first image and CameraInfo (what `ros2 bag play` sends)."""
    from rosbags.highlevel import AnyReader

    from ppd_ros.evaluation.bag import typestore

    first = {}
    with AnyReader([bag], default_typestore=typestore()) as reader:
        for connection, _, raw in reader.messages():
            if connection.topic in (image_topic, info_topic):
                first.setdefault(connection.topic, bytes(raw))
    return first


def check_lidar_matches_gt_depth(bag: Path) -> None:
    """The LiDAR variant: its cloud, projected by the training reader with the config's extrinsic,
    lands on the GT depth (sub-pixel offsets and the mount's parallax at edges aside)."""
    from ppd_ros.synthetic import bag as synth
    from ppd_ros.training.datasets import RosbagDataset

    dense = RosbagDataset(str(bag), synth.IMAGE_TOPIC, depth_topic=synth.DEPTH_TOPIC, max_images=2)
    sparse = RosbagDataset(str(bag), synth.IMAGE_TOPIC, cloud_topic=synth.CLOUD_TOPIC,
                           camera_info_topic=synth.CAMERA_INFO_TOPIC, lidar_translation=synth.LIDAR_TRANSLATION,
                           lidar_rotation_xyzw=synth.LIDAR_ROTATION_XYZW, max_images=2)
    for index in range(2):
        returns = sparse[index]["mask"][0].numpy()
        assert 0.05 < returns.mean() < 0.4  # sparse, in beams
        lidar, gt = sparse[index]["depth"][0].numpy()[returns], dense[index]["depth"][0].numpy()[returns]
        error = np.abs(lidar - gt) / gt
        assert np.median(error) < 0.01 and np.percentile(error, 90) < 0.05


def test_robot_loop_fine_tune_export_node_and_gain(tmp_path, monkeypatch):
    from ppd_ros.cli import main as ppd
    from ppd_ros.training.cli import main as ppd_train

    commands = recipe_commands(REPO / "training" / "README.md")
    assert recipe_commands(REPO / "README.md") == commands  # the README shows the same recipe
    assert [c[:2] for c in commands] == [["ppd", "synth-bag"], ["ppd", "eval-bag"], ["ppd-train", "fit"],
                                         ["ppd-train", "export"], ["ppd", "eval-bag"], ["ppd-depth-node", "--ros-args"]]
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "demo").symlink_to(REPO / "model" / "demo")
    (tmp_path / "training").symlink_to(REPO / "training")
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    try:
        for argv in commands[:-1]:
            argv = [word.replace("$PWD", str(tmp_path)) for word in argv]
            # eval-bag with one torch thread, as the node process runs: the same sums in the same order
            torch.set_num_threads(1 if argv[1] == "eval-bag" else threads)
            code = ppd(argv[1:]) if argv[0] == "ppd" else ppd_train(argv[1:])
            assert code == 0, argv
    finally:
        torch.set_num_threads(threads)

    check_lidar_matches_gt_depth(tmp_path / "data" / "tabletop")
    export = tmp_path / "model" / "tabletop.safetensors"
    meta = json.loads(export.with_suffix(".json").read_text())
    assert meta["native_size"] == {"height": 64, "width": 96} and meta["global_step"] == 30
    assert meta["semantic_encoder"]["weights"] == "embedded"
    start, tuned = mean_abs_rel(tmp_path / "out" / "tabletop_demo"), mean_abs_rel(tmp_path / "out" / "tabletop_tuned")
    print(f"held-out AbsRel: ppd-demo {start:.4f}, fine-tuned {tuned:.4f}")
    assert tuned < 0.8 * start  # 0.337 vs 0.524 when written

    # the node serves the export by its path and publishes what eval-bag measured for that frame
    node_args = [word.replace("$PWD", str(tmp_path)) for word in commands[-1][2:]]
    assert f"model:={export}" in node_args
    offline = output_depth(tmp_path / "out" / "tabletop_tuned")
    recorded = first_frame(tmp_path / "data" / "tabletop", "/camera/color/image_raw", "/camera/color/camera_info")
    with running_node(node_args, DOMAIN_ID, {"depth": Image}, image_topic="/camera/color/image_raw",
                      info_topic="/camera/color/camera_info") as (client, node):
        client.info_pub.publish(recorded["/camera/color/camera_info"])
        depth = client.publish_until_answered(client.image_pub, recorded["/camera/color/image_raw"], "depth",
                                              lambda msg: True)
        assert node.matching(f"model {export}, target area 6144")  # the export's native 96x64
    assert (depth.height, depth.width) == (64, 96)
    assert bytes(depth.data) == offline[(depth.header.stamp.sec, depth.header.stamp.nanosec)]
