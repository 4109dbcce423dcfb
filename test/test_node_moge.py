"""metric_source moge2 in the depth node, over real DDS with the node in this process.

The released ppd-moge2 weights are not available in tests, so the node is given (through its
``backend_factory``) a real torch backend whose semantic encoder is the tiny MoGe-2 of
golden/moge2_tiny (strictly loaded) and whose DiT is tiny and random. The camera publishes no
CameraInfo: the node must use MoGe-2's intrinsics for depth/camera_info and points, fit the relative
depth to MoGe-2's metric depth from the same encoder pass, and say so in its diagnostics.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402

from ppd_ros.ros.conversions import numpy_to_image  # noqa: E402
from ros_helpers.harness import RosClient, diagnostic_values, make_stamp, same_stamp, synthetic_frames  # noqa: E402

DOMAIN_ID = 97
WIDTH, HEIGHT = 160, 120
TARGET_AREA = 128 * 96
W_INF, H_INF = 128, 96
MOGE_WEIGHTS = ("encoder.", "neck.", "points_head.", "normal_head.", "mask_head.", "scale_head.")


@pytest.fixture(scope="module")
def rgb():
    return synthetic_frames(1, WIDTH, HEIGHT)[0][0]


@pytest.fixture(scope="module")
def estimator(rgb):
    """Tiny MoGe-2 (golden weights) + tiny random DiT; the DiT seed is the first whose random
    relative depth fits MoGe's depth with a positive slope on this frame (chance with random
    weights; the fit rejects the others by design)."""
    from conftest import load_golden

    from ppd_ros.backends import BackendOptions
    from ppd_ros.backends.torch_backend import TorchImageBackend
    from ppd_ros.backends.torch_networks import TINY_DIT, randomize_
    from ppd_ros.model_specs import model_spec
    from ppd_ros.metric import fit_log_depth
    from ppd_ros.nets.dinov2 import DinoV2Config
    from ppd_ros.nets.dit import PixelDiT
    from ppd_ros.nets.moge import load_moge2
    from ppd_ros.pipeline.metric_depth import moge_reference

    tensors, sidecar = load_golden("moge2_tiny")
    checkpoint = {"model_config": sidecar["config"],
                  "model": {k: v for k, v in tensors.items() if k.startswith(MOGE_WEIGHTS)}}
    moge = load_moge2(checkpoint, backbone=DinoV2Config(embed_dim=64, depth=4, num_heads=2))
    for seed in range(1, 10):
        dit = randomize_(PixelDiT(**dict(TINY_DIT, semantic_dim=moge.dim_out)), seed=seed)
        candidate = TorchImageBackend(dit, moge, model_spec("ppd-moge2"),
                                      BackendOptions(device="cpu", steps=1, target_area=TARGET_AREA))
        (output,) = candidate.push(rgb, None)
        if fit_log_depth(output.relative, *moge_reference(output.metric_depth, output.metric_mask), seed=0).ok:
            return candidate
    pytest.fail("no DiT seed gives a fittable relative depth")


@pytest.fixture(scope="module")
def ros(estimator):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from ppd_ros.ros.depth_node import DepthNode

    client = RosClient(DOMAIN_ID, "moge_test_client")
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    overrides = [Parameter("model", value="ppd-moge2"), Parameter("metric_source", value="moge2"),
                 Parameter("device", value="cpu"), Parameter("steps", value=1),
                 Parameter("target_area", value=TARGET_AREA), Parameter("diagnostics_period", value=0.25),
                 Parameter("auto_start", value=False)]
    node = DepthNode("moge_depth", backend_factory=lambda config: estimator, context=context,
                     parameter_overrides=overrides)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        from rclpy.lifecycle import TransitionCallbackReturn

        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        node.trigger_activate()
        for topic, msg_type in (("depth", Image), ("depth/camera_info", CameraInfo), ("points", PointCloud2),
                                ("/diagnostics", DiagnosticArray)):
            client.subscribe(topic, msg_type)
        client.image_pub = client.publisher("image", Image)
        client.wait_until(lambda: node.count_subscribers("points") > 0, 20, "matching")
        client.wait_until_connected([client.image_pub])
        yield client, node
    finally:
        client.close()
        executor.shutdown()
        node.release()
        node.stop_worker()
        node.destroy_node()
        context.try_shutdown()
        spinner.join(5)


def test_moge2_metric_depth_and_intrinsics_without_camera_info(ros, estimator, rgb):
    from ppd_ros.metric import fit_log_depth
    from ppd_ros.pipeline.metric_depth import moge_reference

    client, _ = ros
    (output,) = estimator.push(rgb, None)
    relative = output.relative.double().numpy()
    reference, mask = moge_reference(output.metric_depth, output.metric_mask)
    fit = fit_log_depth(output.relative, reference, mask, seed=0)

    stamp = make_stamp(1)
    image = numpy_to_image(rgb, "rgb8")
    image.header.stamp = stamp
    image.header.frame_id = "moge_camera"
    depth_msg = client.publish_until_answered(client.image_pub, image, "depth", same_stamp(stamp))
    info = client.wait_for("depth/camera_info", same_stamp(stamp))
    cloud = client.wait_for("points", same_stamp(stamp))

    depth = np.frombuffer(depth_msg.data, np.float32).reshape(H_INF, W_INF)
    np.testing.assert_allclose(depth, np.expm1(fit.scale * relative + fit.shift), rtol=1e-4)
    error = np.mean(np.abs(depth[mask] - reference[mask]) / reference[mask])
    print(f"AbsRel against MoGe-2's own metric depth {error:.3f}")
    assert error < 0.2  # in MoGe's metres (the random DiT adds no geometry)

    # MoGe's normalised intrinsics in pixels of the inference grid (pixel centres at (j + 0.5) / w)
    normalised = output.intrinsics.double().numpy()
    K = np.asarray(info.k).reshape(3, 3)
    assert (info.width, info.height) == (W_INF, H_INF) and info.header.frame_id == "moge_camera"
    assert K[0, 0] == pytest.approx(normalised[0, 0] * W_INF, rel=1e-6)
    assert K[1, 1] == pytest.approx(normalised[1, 1] * H_INF, rel=1e-6)
    assert K[0, 2] == pytest.approx(normalised[0, 2] * W_INF - 0.5, rel=1e-6)
    assert K[1, 2] == pytest.approx(normalised[1, 2] * H_INF - 0.5, rel=1e-6)
    assert (cloud.height, cloud.width) == (H_INF, W_INF)

    msg = client.wait_for("/diagnostics", lambda m: (v := diagnostic_values(m, "moge_depth")) is not None
                          and int(v["published_frames"]) >= 1)
    values = diagnostic_values(msg, "moge_depth")
    print("diagnostics:", values)
    assert values["camera_info"] == "MoGe-2 estimate (no CameraInfo)"
    assert values["metric_source"] == "moge2" and values["depth_kind"] == "metric"
    assert values["fit_status"] == "ok" and float(values["fit_residual"]) == pytest.approx(fit.residual, rel=1e-3)
    assert float(values["scale"]) == pytest.approx(fit.scale, rel=1e-4)
