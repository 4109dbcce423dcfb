"""Start-up of the depth node in its own process: parameter validation (one clear error each, exit
code 1), missing weights naming `ppd fetch-weights`, and the lifecycle with auto_start:=false driven
over the standard lifecycle services."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from ppd_ros.ros.conversions import numpy_to_image  # noqa: E402
from ros_helpers.harness import (NodeProcess, RosClient, camera_info_msg, make_stamp, same_stamp,  # noqa: E402
                                 synthetic_frames)

DOMAIN_ID = 89
REPO = Path(__file__).resolve().parents[1]
CONSOLE_SCRIPT = Path(sys.prefix) / "bin" / "ppd-depth-node"
PIP_ENTRY = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.is_file() else [sys.executable, "-m", "ppd_ros.ros.depth_node"]


@pytest.fixture(scope="module")
def failing_nodes(tmp_path_factory):
    """Both invalid configurations start at once (start-up dominates their run time)."""
    empty = tmp_path_factory.mktemp("no_weights")
    nodes = {
        "bad parameters": NodeProcess.depth_node(
            ["-p", "model:=no-such-model", "-p", "steps:=0", "-p", "input_transport:=udp",
             "-p", "sync_tolerance:=-1.0"], DOMAIN_ID),
        "moge2 without its model": NodeProcess.depth_node(
            ["-p", "model:=tiny-random", "-p", "metric_source:=moge2"], DOMAIN_ID),
        "missing params file": NodeProcess.depth_node(["--params-file", str(empty / "nope.yaml")], DOMAIN_ID),
        "cuda on a CPU build": NodeProcess.depth_node(["-p", "model:=tiny-random", "-p", "device:=cuda"], DOMAIN_ID),
        # through the pip route's console script when this environment has it installed
        "missing weights": NodeProcess(
            [*PIP_ENTRY, "--ros-args", "-p", "model:=ppd-da2", "-p", f"weights_dir:={empty}"], DOMAIN_ID),
    }
    codes = {name: node.process.wait(60) for name, node in nodes.items()}
    return {name: (codes[name], node) for name, node in nodes.items()}


def test_invalid_parameters_give_one_error_each_and_exit_1(failing_nodes):
    code, node = failing_nodes["bad parameters"]
    assert code == 1
    errors = node.matching("[ERROR]")
    for phrase in ("model='no-such-model' is not one of", "steps=0 must be >= 1",
                   "input_transport='udp' is not one of raw, compressed", "sync_tolerance=-1.0"):
        assert len([line for line in errors if phrase in line]) == 1, (phrase, errors)
    assert len(errors) == 4, errors


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda_is_one_line_with_the_fix(failing_nodes):
    code, node = failing_nodes["cuda on a CPU build"]
    assert code == 1
    errors = node.matching("[ERROR]")
    assert len(errors) == 1 and "CUDA requested" in errors[0] and "device cpu" in errors[0], node.output()
    assert "Traceback" not in "\n".join(node.output())


def test_missing_params_file_is_one_line_naming_it(failing_nodes):
    code, node = failing_nodes["missing params file"]
    assert code == 1
    output = [line for line in node.output() if line.strip()]
    assert len(output) == 1 and "nope.yaml does not exist" in output[0], output
    assert "Traceback" not in "\n".join(node.output())


def test_metric_source_moge2_needs_the_moge2_model(failing_nodes):
    code, node = failing_nodes["moge2 without its model"]
    assert code == 1
    errors = node.matching("[ERROR]")
    assert len(errors) == 1, errors
    assert "metric_source='moge2' needs a MoGe-2 model (ppd-moge2 or an export" in errors[0]
    assert "model='tiny-random'" in errors[0]


def test_missing_weights_names_fetch_command(failing_nodes):
    code, node = failing_nodes["missing weights"]
    assert code == 1
    errors = node.matching("[ERROR]")
    assert len(errors) == 1 and "ppd fetch-weights" in errors[0], errors


def test_lifecycle_without_auto_start():
    # the shipped params file (every default) loads in rcl; -p overrides win over it
    shipped = str(REPO / "config" / "depth_node.yaml")
    node = NodeProcess.depth_node(["-r", "__node:=managed_depth", "--params-file", shipped,
                                   "-p", "auto_start:=false",
                                   "-p", "model:=tiny-random", "-p", "device:=cpu",
                                   "-p", "target_area:=3072", "-p", "steps:=1"], DOMAIN_ID)
    client = RosClient(DOMAIN_ID)
    try:
        client.subscribe("depth", Image)
        image_pub = client.publisher("image", Image)
        info_pub = client.publisher("camera_info", CameraInfo)

        def state():
            return client.call(GetState, "/managed_depth/get_state", GetState.Request(),
                               resend_every=5.0).current_state.id

        assert state() == State.PRIMARY_STATE_UNCONFIGURED
        assert image_pub.get_subscription_count() == 0  # nothing is subscribed before configure

        def transition(transition_id):
            request = ChangeState.Request()
            request.transition.id = transition_id
            assert client.call(ChangeState, "/managed_depth/change_state", request, timeout=60).success

        transition(Transition.TRANSITION_CONFIGURE)
        assert state() == State.PRIMARY_STATE_INACTIVE
        transition(Transition.TRANSITION_ACTIVATE)
        assert state() == State.PRIMARY_STATE_ACTIVE
        client.wait_until(lambda: image_pub.get_subscription_count() > 0, 20, "node subscription")

        (rgb, *_), camera = synthetic_frames(1, 64, 48)
        stamp = make_stamp(1)
        image = numpy_to_image(rgb, "rgb8")
        image.header.stamp = stamp
        info_pub.publish(camera_info_msg(camera, stamp, "cam"))
        image_pub.publish(image)
        client.wait_for("depth", same_stamp(stamp))

        transition(Transition.TRANSITION_DEACTIVATE)
        stamp = make_stamp(2)
        image.header.stamp = stamp
        image_pub.publish(image)
        time.sleep(1.0)
        assert not any(same_stamp(stamp)(msg) for msg in client.received["depth"])
    finally:
        client.close()
        assert node.stop() == 0, "\n".join(node.output()[-30:])
