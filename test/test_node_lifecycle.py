"""The depth node under careless lifecycle managers and parameter changes, in its own process over
real DDS: invalid transitions are refused and the node keeps serving, a cleanup during a slow frame
leaves one worker and never publishes that frame later, runtime parameter changes are validated
(live ones applied at once, reload ones refused with the reason)."""
from __future__ import annotations

import os
import time

import pytest

pytest.importorskip("rclpy")

from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from ppd_ros.ros.conversions import numpy_to_image  # noqa: E402
from ros_helpers.harness import (NodeProcess, RosClient, camera_info_msg, diagnostic_values, make_stamp,  # noqa: E402
                                 same_stamp, synthetic_frames)

DOMAIN_ID = 77
NODE = "/careless_depth"


@pytest.fixture(scope="module")
def managed():
    node = NodeProcess.depth_node(["-r", "__node:=careless_depth", "-p", "auto_start:=false",
                                   "-p", "model:=tiny-random", "-p", "device:=cpu", "-p", "target_area:=196608",
                                   "-p", "steps:=1", "-p", "diagnostics_period:=0.2"], DOMAIN_ID)
    client = RosClient(DOMAIN_ID, "careless_manager")
    client.subscribe("depth", Image)
    client.subscribe("/diagnostics", DiagnosticArray)
    client.image_pub = client.publisher("image", Image)
    client.info_pub = client.publisher("camera_info", CameraInfo)
    (client.rgb, *_), client.camera = synthetic_frames(1, 128, 96)
    try:
        yield client, node
    finally:
        client.close()
        assert node.stop() == 0, "\n".join(node.output()[-30:])


def transition(client, transition_id: int) -> bool:
    request = ChangeState.Request()
    request.transition.id = transition_id
    return client.call(ChangeState, f"{NODE}/change_state", request, timeout=60).success


def state(client) -> int:
    return client.call(GetState, f"{NODE}/get_state", GetState.Request(), resend_every=5.0).current_state.id


def send(client, index: int):
    stamp = make_stamp(index)
    image = numpy_to_image(client.rgb, "rgb8")
    image.header.stamp = stamp
    client.info_pub.publish(camera_info_msg(client.camera, stamp, "cam"))
    client.image_pub.publish(image)
    return stamp


def answered(client, index: int) -> None:
    client.wait_until(lambda: client.image_pub.get_subscription_count() > 0, 20, "node subscription")
    client.publish_until_answered(client.image_pub, _image(client, index), "depth", same_stamp(make_stamp(index)))


def _image(client, index):
    image = numpy_to_image(client.rgb, "rgb8")
    image.header.stamp = make_stamp(index)
    return image


def threads(node) -> int:
    return len(os.listdir(f"/proc/{node.process.pid}/task"))


def test_invalid_transitions_are_refused_and_the_node_keeps_serving(managed):
    client, node = managed
    assert transition(client, Transition.TRANSITION_CONFIGURE)
    assert transition(client, Transition.TRANSITION_ACTIVATE)
    answered(client, 1)
    for transition_id in (Transition.TRANSITION_ACTIVATE, Transition.TRANSITION_CONFIGURE,
                          Transition.TRANSITION_CLEANUP, 99):
        assert not transition(client, transition_id)
        assert node.process.poll() is None and state(client) == State.PRIMARY_STATE_ACTIVE
    assert transition(client, Transition.TRANSITION_DEACTIVATE)
    assert not transition(client, Transition.TRANSITION_DEACTIVATE)  # twice
    assert len(node.matching("refused lifecycle transition")) == 5
    # inactive: the image subscription is gone, so nothing is received or deserialised
    client.wait_until(lambda: client.image_pub.get_subscription_count() == 0, 10, "subscription removed")
    assert transition(client, Transition.TRANSITION_ACTIVATE)
    answered(client, 2)


def test_runtime_parameters_validated_live_applied_reload_refused(managed):
    client, node = managed
    assert state(client) == State.PRIMARY_STATE_ACTIVE

    def set_parameter(name, value, kind):
        field = {ParameterType.PARAMETER_INTEGER: "integer_value", ParameterType.PARAMETER_DOUBLE: "double_value",
                 ParameterType.PARAMETER_STRING: "string_value",
                 ParameterType.PARAMETER_DOUBLE_ARRAY: "double_array_value"}[kind]
        value_msg = ParameterValue(type=kind, **{field: value})
        request = SetParameters.Request(parameters=[Parameter(name=name, value=value_msg)])
        return client.call(SetParameters, f"{NODE}/set_parameters", request).results[0]

    integer, double = ParameterType.PARAMETER_INTEGER, ParameterType.PARAMETER_DOUBLE
    string, doubles = ParameterType.PARAMETER_STRING, ParameterType.PARAMETER_DOUBLE_ARRAY
    bad = [("steps", 0, integer), ("steps", -3, integer), ("target_area", -5, integer),
           ("depth_scale", float("nan"), double), ("sync_tolerance", -1.0, double),
           ("input_reliability", "bogus", string), ("diagnostics_period", 0.0, double), ("video_stride", 100, integer),
           ("metric_lidar_translation", [1.0, 2.0], doubles)]
    for name, value, kind in bad:
        result = set_parameter(name, value, kind)
        assert not result.successful and f"parameter {name}" in result.reason, (name, result.reason)
    result = set_parameter("model", "ppd-demo", string)
    assert not result.successful and "needs a reload" in result.reason
    result = set_parameter("device", "cuda", string)
    assert not result.successful and "needs a reload" in result.reason
    result = set_parameter("steps", 2, integer)
    assert result.successful
    msg = client.wait_for("/diagnostics", lambda m: (v := diagnostic_values(m, "careless_depth")) is not None
                          and v.get("steps") == "2")
    assert diagnostic_values(msg, "careless_depth")["state"] == "active"
    answered(client, 3)
    assert node.process.poll() is None


def test_cleanup_during_a_slow_frame_keeps_one_worker_and_drops_the_frame(managed):
    client, node = managed
    assert state(client) == State.PRIMARY_STATE_ACTIVE
    before = threads(node)
    stale = send(client, 10)  # ~1 s of inference at this size on a busy CPU
    time.sleep(0.1)
    assert transition(client, Transition.TRANSITION_DEACTIVATE)
    assert transition(client, Transition.TRANSITION_CLEANUP)
    assert transition(client, Transition.TRANSITION_CONFIGURE)
    assert transition(client, Transition.TRANSITION_ACTIVATE)
    answered(client, 11)
    time.sleep(1.0)
    assert not any(same_stamp(stale)(msg) for msg in client.received["depth"])  # received before deactivate
    assert threads(node) <= before
