"""The depth node as the colcon install runs it (lib/ppd_ros/depth_node, with the generated
ppd_ros.msg): its DepthFrame output on depth/frame. Skips without an install (see
test_colcon_route.py, whose install helpers this reuses)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from test_colcon_route import install_dir, install_environment, package_prefix  # noqa: F401  (fixture)

HELPERS = Path(__file__).resolve().parent / "ros_helpers"
DOMAIN_ID = 91
TIMEOUT_S = 40


def test_installed_node_publishes_depth_frame(install_dir, tmp_path):  # noqa: F811
    env = install_environment(install_dir)
    env.update(ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               RCUTILS_COLORIZED_OUTPUT="0", OMP_NUM_THREADS="1")
    launcher = package_prefix(install_dir) / "lib" / "ppd_ros" / "depth_node"
    assert launcher.is_file()
    # cwd is tmp_path, so ppd_ros (and ppd_ros.msg) come from the install
    node = subprocess.Popen(
        [sys.executable, str(launcher), "--ros-args", "-p", "model:=tiny-random", "-p", "device:=cpu",
         "-p", "target_area:=3072", "-p", "steps:=1", "-p", "depth_scale:=0.2", "-p", "depth_shift:=1.0"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        probe = subprocess.run([sys.executable, str(HELPERS / "depth_frame_probe.py"), str(TIMEOUT_S - 10)],
                               cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    finally:
        node.send_signal(2)
        try:
            node_out, _ = node.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            node.kill()
            node_out, _ = node.communicate()
    assert probe.returncode == 0, probe.stderr + "\nnode:\n" + node_out
    frame = json.loads(probe.stdout)
    assert "DepthFrame is not built" not in node_out
    assert frame["stamp"] == frame["depth_stamp"] == [4242, 5]
    assert frame["frame_id"] == "probe_optical_frame"
    assert frame["encoding"] == "32FC1" and frame["depth_shape"] == [48, 64] == frame["info_shape"]
    assert frame["finite_depth"] > 0
    assert frame["info_k"][0] == pytest.approx(frame["info_k"][4])  # square pixels stay square
    assert frame["is_metric"] is False and frame["metric_source"] == "none"
    assert frame["scale"] == pytest.approx(0.2) and frame["shift"] == pytest.approx(1.0)
    assert math.isnan(frame["fit_residual"])
    assert frame["fit_status"] == "relative" and math.isnan(frame["scale_age"])
    assert frame["scale_age_frames"] == 0 and frame["metric_stale"] is False
    assert frame["model"] == "tiny-random" and frame["steps"] == 1
    assert 0 < frame["inference_time"] < frame["latency"]
    assert frame["skipped_frames"] == 0
