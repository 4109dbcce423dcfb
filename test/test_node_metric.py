"""Sparse metric depth in the node across processes over real DDS.

Two depth nodes (tiny-random, metric_source sparse) start at once in their own namespaces: one
takes a registered depth image as metric reference (32FC1 metres, one frame in 16UC1 millimetres),
the other a LiDAR-like PointCloud2 in its own frame, projected with the extrinsic parameters. The
references are the renderer's exact depth, thinned out and noisy. The tiny random network's
relative depth carries no geometry, so the node's output is checked against (a) an independent
computation of the documented fit (robust log(d + 1) fit of that relative depth to the reference)
and (b) the exact depth: it must be in metres (median ratio near 1, AbsRel bounded) where the
fixed relative mapping is far off.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402

from ppd_ros.ros.conversions import numpy_to_image, structured_to_pointcloud2  # noqa: E402
from ros_helpers.harness import (NodeProcess, RosClient, camera_info_msg, diagnostic_values,  # noqa: E402
                                 make_stamp, same_stamp)

DOMAIN_ID = 93
WIDTH, HEIGHT = 160, 120
TARGET_AREA = 128 * 96
W_INF, H_INF = 128, 96
FRAME_ID = "metric_camera_optical_frame"
# LiDAR frame (x forward, y left, z up) in the camera optical frame (z forward, x right, y down)
LIDAR_ROTATION = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
LIDAR_TRANSLATION = np.array([0.05, -0.10, 0.02])
NODES = {"dimg": "depth_image", "dcloud": "pointcloud"}


@pytest.fixture(scope="module")
def scene_frames():
    """(rgb, exact depth) of 4 rendered frames and the camera."""
    from ppd_ros.synthetic import Scene, camera_trajectory, default_camera, render

    scene = Scene.random(5)
    camera = default_camera(WIDTH, HEIGHT)
    return [render(scene, camera, pose) for pose in camera_trajectory(4, 5, scene)], camera


@pytest.fixture(scope="module")
def ros():
    quaternion = Rotation.from_matrix(LIDAR_ROTATION).as_quat()  # x, y, z, w
    nodes = {}
    for namespace, reference_type in NODES.items():
        args = ["-r", f"__ns:=/{namespace}", "-r", f"__node:=depth_{namespace}",
                "-p", "model:=tiny-random", "-p", "device:=cpu", "-p", f"target_area:={TARGET_AREA}",
                "-p", "steps:=1", "-p", "diagnostics_period:=0.25", "-p", "metric_source:=sparse",
                "-p", f"metric_reference_type:={reference_type}", "-p", "metric_reference_topic:=reference"]
        if reference_type == "pointcloud":
            args += ["-p", f"metric_lidar_translation:={LIDAR_TRANSLATION.tolist()}",
                     "-p", f"metric_lidar_rotation_xyzw:={quaternion.tolist()}"]
        nodes[namespace] = NodeProcess.depth_node(args, DOMAIN_ID)
    client = RosClient(DOMAIN_ID, "metric_test_client")
    client.subscribe("/diagnostics", DiagnosticArray)
    publishers = {}
    for namespace, reference_type in NODES.items():
        client.subscribe(f"/{namespace}/depth", Image)
        publishers[namespace] = {
            "image": client.publisher(f"/{namespace}/image", Image),
            "camera_info": client.publisher(f"/{namespace}/camera_info", CameraInfo),
            "reference": client.publisher(f"/{namespace}/reference",
                                          Image if reference_type == "depth_image" else PointCloud2),
        }
    try:
        for namespace, node in nodes.items():
            node.wait_for_line("Output:", timeout=90)
        client.wait_until_connected([pub for group in publishers.values() for pub in group.values()])
        yield client, publishers, nodes
    finally:
        client.close()
        for node in nodes.values():
            assert node.stop() == 0, "\n".join(node.output()[-30:])


def thinned_depth(depth: np.ndarray, keep: float, noise: float, seed: int) -> np.ndarray:
    """Exact depth with a random ``keep`` share of pixels, multiplicative noise, NaN elsewhere."""
    rng = np.random.default_rng(seed)
    noisy = depth * (1.0 + noise * rng.standard_normal(depth.shape))
    return np.where(rng.random(depth.shape) < keep, noisy, np.nan).astype(np.float32)


def lidar_points(depth: np.ndarray, camera, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(points in the LiDAR frame (N, 3), the same in the camera frame) sampled from the exact depth,
    plus returns behind the camera (a spinning LiDAR sees all around)."""
    rng = np.random.default_rng(seed)
    v = rng.integers(0, HEIGHT, count)
    u = rng.integers(0, WIDTH, count)
    z = depth[v, u].astype(np.float64)
    camera_points = np.stack([(u - camera.cx) / camera.fx * z, (v - camera.cy) / camera.fy * z, z], axis=-1)
    behind = camera_points[:200] * np.array([1.0, 1.0, -1.0])
    all_camera = np.concatenate([camera_points, behind])
    return (all_camera - LIDAR_TRANSLATION) @ LIDAR_ROTATION, camera_points


def projected_grid(camera_points: np.ndarray, camera) -> np.ndarray:
    """Camera-frame points as depth on the inference grid (nearest return per pixel)."""
    scaled = camera.scaled_to(W_INF, H_INF)
    z = camera_points[:, 2]
    u = np.floor(scaled.fx * camera_points[:, 0] / z + scaled.cx + 0.5).astype(int)
    v = np.floor(scaled.fy * camera_points[:, 1] / z + scaled.cy + 0.5).astype(int)
    grid = np.full((H_INF, W_INF), np.nan, np.float32)
    for i in np.argsort(-z):  # far first, so the nearest return is written last
        if 0 <= u[i] < W_INF and 0 <= v[i] < H_INF:
            grid[v[i], u[i]] = z[i]
    return grid


def relative_depth(rgb) -> np.ndarray:
    from ppd_ros.backends import BackendOptions, create_backend
    from ppd_ros.model_specs import model_spec

    backend = create_backend(model_spec("tiny-random"), BackendOptions(device="cpu", steps=1,
                                                                       target_area=TARGET_AREA, seed=0))
    return backend.push(rgb, None)[0].relative.double().numpy()


def first_frame_fit(relative: np.ndarray, reference_grid: np.ndarray):
    from ppd_ros.metric import fit_log_depth

    return fit_log_depth(relative, reference_grid, seed=0)


def fittable_first(frames, reference_grid_of) -> int:
    """Index of the first frame whose random-network relative depth fits its reference with a
    positive slope (the fit rejects the others by design; the network's depth is noise, so its
    slope sign is chance), computed here independently of the node."""
    for index, (rgb, exact) in enumerate(frames):
        if first_frame_fit(relative_depth(rgb), reference_grid_of(index, exact)).ok:
            return index
    pytest.fail("no rendered frame gives a fittable reference for the random network")


def expected_first_frame(relative: np.ndarray, reference_grid: np.ndarray) -> np.ndarray:
    """The first frame after start: the filter takes this frame's robust fit as it is."""
    fit = first_frame_fit(relative, reference_grid)
    assert fit.ok, fit
    return np.expm1(fit.scale * relative + fit.shift)


def exact_on_grid(depth: np.ndarray) -> np.ndarray:
    from ppd_ros.metric import resample_nearest

    return resample_nearest(depth, H_INF, W_INF).astype(np.float64)


def abs_rel(depth: np.ndarray, exact: np.ndarray) -> float:
    valid = np.isfinite(depth) & (exact > 0)
    return float(np.mean(np.abs(depth[valid] - exact[valid]) / exact[valid]))


def fixed_mapping_abs_rel(relative: np.ndarray, exact: np.ndarray) -> float:
    from ppd_ros.parameters import DEFAULT_DEPTH_SCALE, DEFAULT_DEPTH_SHIFT

    return abs_rel(np.expm1(DEFAULT_DEPTH_SCALE * relative + DEFAULT_DEPTH_SHIFT), exact)


def send(publishers, rgb, camera, index: int, reference=None):
    stamp = make_stamp(index)
    publishers["camera_info"].publish(camera_info_msg(camera, stamp, FRAME_ID))
    if reference is not None:
        reference.header.stamp = stamp
        reference.header.frame_id = FRAME_ID
        publishers["reference"].publish(reference)
    time.sleep(0.05)
    image = numpy_to_image(rgb, "rgb8")
    image.header.stamp = stamp
    image.header.frame_id = FRAME_ID
    publishers["image"].publish(image)
    return stamp


def received_depth(client, namespace: str, stamp) -> np.ndarray:
    msg = client.wait_for(f"/{namespace}/depth", same_stamp(stamp), timeout=30)
    assert msg.encoding == "32FC1" and (msg.width, msg.height) == (W_INF, H_INF)
    return np.frombuffer(msg.data, np.float32).reshape(H_INF, W_INF).astype(np.float64)


def node_diagnostics(client, namespace: str, predicate) -> dict[str, str]:
    msg = client.wait_for("/diagnostics", lambda m: (values := diagnostic_values(m, f"depth_{namespace}")) is not None
                          and predicate(values), timeout=20)
    return diagnostic_values(msg, f"depth_{namespace}")


def assert_metric(depth: np.ndarray, exact: np.ndarray, relative: np.ndarray) -> None:
    """In metres: median near the exact one, AbsRel near that of the best fit of this relative depth
    to the dense exact depth (the random network adds no geometry, so that is the floor)."""
    from ppd_ros.metric import fit_log_depth

    best = fit_log_depth(relative, exact, seed=0)
    floor = abs_rel(np.expm1(best.scale * relative + best.shift), exact)
    ratio = np.nanmedian(depth) / np.median(exact)
    error = abs_rel(depth, exact)
    fixed = fixed_mapping_abs_rel(relative, exact)
    print(f"median ratio {ratio:.3f}, AbsRel {error:.3f} (dense-fit floor {floor:.3f}, fixed relative "
          f"mapping {fixed:.1f})")
    assert 0.85 < ratio < 1.18
    assert error < floor + 0.05
    assert fixed > 1.0  # without the reference it is far off


def test_depth_image_reference_gives_metres(ros, scene_frames):
    from ppd_ros.metric import resample_nearest

    client, publishers, _ = ros
    frames, camera = scene_frames
    pubs = publishers["dimg"]
    references = [thinned_depth(exact, keep=0.2, noise=0.02, seed=i) for i, (_, exact) in enumerate(frames)]
    first = fittable_first(frames, lambda i, exact: resample_nearest(references[i], H_INF, W_INF))
    order = [first] + [i for i in range(len(frames)) if i != first]

    # first frame: 32FC1 metres, 20 % of the pixels, 2 % noise
    rgb, exact = frames[order[0]]
    stamp = send(pubs, rgb, camera, 0, numpy_to_image(references[order[0]], "32FC1"))
    depth = received_depth(client, "dimg", stamp)
    relative = relative_depth(rgb)
    expected = expected_first_frame(relative, resample_nearest(references[order[0]], H_INF, W_INF))
    np.testing.assert_allclose(depth, expected, rtol=1e-2)
    assert_metric(depth, exact_on_grid(exact), relative)

    # second: 16UC1 millimetres (0 = no depth)
    rgb, exact = frames[order[1]]
    millimetres = np.nan_to_num(references[order[1]] * 1000.0, nan=0.0).round().astype(np.uint16)
    stamp = send(pubs, rgb, camera, 1, numpy_to_image(millimetres, "16UC1"))
    assert_metric(received_depth(client, "dimg", stamp), exact_on_grid(exact), relative_depth(rgb))

    # third: no reference paired: the filtered scale/shift is kept
    rgb, exact = frames[order[2]]
    stamp = send(pubs, rgb, camera, 2)
    assert_metric(received_depth(client, "dimg", stamp), exact_on_grid(exact), relative_depth(rgb))

    values = node_diagnostics(client, "dimg", lambda v: int(v["published_frames"]) >= 3)
    print("diagnostics:", values)
    assert values["depth_kind"] == "metric" and values["metric_source"] == "sparse"
    assert values["fit_status"] == "no_reference" and values["references_missing"] == "1"
    assert values["references_paired"] == "2" and values["reference_topic"] == "/dimg/reference"
    assert float(values["scale"]) > 0 and np.isfinite(float(values["shift"]))


def test_pointcloud_reference_projected_with_extrinsic(ros, scene_frames):
    client, publishers, _ = ros
    frames, camera = scene_frames
    clouds = [lidar_points(exact, camera, 1500, seed=i) for i, (_, exact) in enumerate(frames)]
    first = fittable_first(frames, lambda i, exact: projected_grid(clouds[i][1], camera))
    rgb, exact = frames[first]
    lidar, camera_points = clouds[first]
    cloud = np.zeros((1, len(lidar)), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("intensity", "f4")])
    cloud["x"][0], cloud["y"][0], cloud["z"][0] = lidar.T
    stamp = send(publishers["dcloud"], rgb, camera, 0, structured_to_pointcloud2(cloud))
    depth = received_depth(client, "dcloud", stamp)
    relative = relative_depth(rgb)
    # float32 points on the wire can move a return across a pixel border: a slightly different fit
    np.testing.assert_allclose(depth, expected_first_frame(relative, projected_grid(camera_points, camera)),
                               rtol=2e-2)
    assert_metric(depth, exact_on_grid(exact), relative)

    values = node_diagnostics(client, "dcloud", lambda v: int(v["published_frames"]) >= 1)
    print("diagnostics:", values)
    assert values["depth_kind"] == "metric" and values["fit_status"] == "ok"
    assert values["reference_type"] == "pointcloud" and int(values["fit_points"]) > 1000
    assert float(values["fit_residual"]) < 0.3
