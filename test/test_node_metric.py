"""Sparse metric depth in the node across processes over real DDS.

Two depth nodes (tiny-random, metric_source sparse) start at once in their own namespaces: one
takes a registered depth image as metric reference (640x480 with a few hundred valid pixels, as a
stereo or ToF camera gives; 32FC1 metres, one frame in 16UC1 millimetres), the other a LiDAR-like
PointCloud2 in its own frame, projected with the extrinsic parameters. The references are the
renderer's exact depth, thinned out and noisy. The tiny random network's relative depth carries no
geometry, so the node's output is checked against (a) an independent computation of the documented
fit (robust log(d + 1) fit of that relative depth to every reference sample) and (b) the exact
depth: it must be in metres (median ratio near 1, AbsRel bounded) where the fixed relative mapping
is far off. Then what the node says when it is not metric: fits rejected (all outliers, too few
points), a jump gated and reset, a stale held scale (no depth published), no reference reused.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402

from ppd_ros.ros.conversions import numpy_to_image, structured_to_pointcloud2  # noqa: E402
from ros_helpers.harness import (NodeProcess, RosClient, camera_info_msg, diagnostic_values,  # noqa: E402
                                 make_stamp, same_stamp)

DOMAIN_ID = 93
WIDTH, HEIGHT = 160, 120
TARGET_AREA = 128 * 96
W_INF, H_INF = 128, 96
REF_WIDTH, REF_HEIGHT = 640, 480  # the registered depth-image reference
REF_POINTS = 400  # its valid pixels
MAX_AGE = 2.5  # metric_max_age of the depth-image node (its metric_stale_output is no_depth)
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
                     "-p", f"metric_lidar_rotation_xyzw:={quaternion.tolist()}", "-p", "metric_reference_reuse:=true"]
        else:  # a reliable subscription: the 640x480 reference is ~1 MB, which best effort over UDP may lose
            args += ["-p", f"metric_max_age:={MAX_AGE}", "-p", "metric_stale_output:=no_depth",
                     "-p", "input_reliability:=reliable"]
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
        for node in nodes.values():
            node.wait_for_line("Output:", timeout=90)
        client.wait_until_connected([pub for group in publishers.values() for pub in group.values()])
        yield client, publishers, nodes
    finally:
        client.close()
        for node in nodes.values():
            assert node.stop() == 0, "\n".join(node.output()[-30:])


def sparse_reference(depth: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """The exact depth as a registered REF_WIDTH x REF_HEIGHT depth image with REF_POINTS valid
    pixels (multiplicative noise), NaN elsewhere."""
    from ppd_ros.geometry.resize import resize_nearest

    rng = np.random.default_rng(seed)
    large = resize_nearest(depth.astype(np.float32), REF_HEIGHT, REF_WIDTH)
    reference = np.full(large.shape, np.nan, np.float32)
    pixels = rng.choice(large.size, REF_POINTS, replace=False)
    reference.reshape(-1)[pixels] = large.reshape(-1)[pixels] * (1.0 + noise * rng.standard_normal(REF_POINTS))
    return reference


def reference_samples(reference: np.ndarray):
    """Every valid reference pixel on the inference grid, by the documented pixel-centre rule
    (reference pixel u lands in grid column floor((u + 0.5) * W_INF / REF_WIDTH), rows alike)."""
    from ppd_ros.metric import ReferencePoints

    v, u = np.nonzero(np.isfinite(reference))
    return ReferencePoints(((v + 0.5) * H_INF / reference.shape[0]).astype(np.int64),
                           ((u + 0.5) * W_INF / reference.shape[1]).astype(np.int64), reference[v, u],
                           (H_INF, W_INF))


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
    from ppd_ros.geometry.resize import resize_nearest

    return resize_nearest(depth, H_INF, W_INF).astype(np.float64)


def abs_rel(depth: np.ndarray, exact: np.ndarray) -> float:
    valid = np.isfinite(depth) & (exact > 0)
    return float(np.mean(np.abs(depth[valid] - exact[valid]) / exact[valid]))


def fixed_mapping_abs_rel(relative: np.ndarray, exact: np.ndarray) -> float:
    from ppd_ros.parameters import DEFAULT_DEPTH_SCALE, DEFAULT_DEPTH_SHIFT

    return abs_rel(np.expm1(DEFAULT_DEPTH_SCALE * relative + DEFAULT_DEPTH_SHIFT), exact)


def stamp_at(seconds: float) -> Time:
    return Time(sec=int(seconds), nanosec=int(round((seconds % 1) * 1e9)))


def send(publishers, rgb, camera, stamp: Time, reference=None):
    publishers["camera_info"].publish(camera_info_msg(camera, stamp, FRAME_ID))
    if reference is not None:
        reference.header.stamp = stamp
        reference.header.frame_id = FRAME_ID
        publishers["reference"].publish(reference)
    time.sleep(0.2 if reference is not None else 0.05)
    image = numpy_to_image(rgb, "rgb8")
    image.header.stamp = stamp
    image.header.frame_id = FRAME_ID
    publishers["image"].publish(image)
    return stamp


def received_depth(client, namespace: str, stamp) -> np.ndarray:
    msg = client.wait_for(f"/{namespace}/depth", same_stamp(stamp), timeout=30)
    assert msg.encoding == "32FC1" and (msg.width, msg.height) == (W_INF, H_INF)
    return np.frombuffer(msg.data, np.float32).reshape(H_INF, W_INF).astype(np.float64)


def node_status(client, namespace: str, predicate) -> DiagnosticStatus:
    """The first DiagnosticStatus of the node (received already or arriving) whose values match."""
    def status(msg):
        return next((s for s in msg.status if f"depth_{namespace}" in s.name), None)

    msg = client.wait_for("/diagnostics", lambda m: (found := status(m)) is not None
                          and predicate({pair.key: pair.value for pair in found.values}), timeout=20)
    return status(msg)


def node_diagnostics(client, namespace: str, predicate) -> dict[str, str]:
    return {pair.key: pair.value for pair in node_status(client, namespace, predicate).values}


def published_so_far(client, namespace: str) -> int:
    """Frames the node had published by the latest diagnostics received (after two more periods)."""
    time.sleep(0.6)
    counts = [int(values["published_frames"]) for msg in client.received.get("/diagnostics", [])
              if (values := diagnostic_values(msg, f"depth_{namespace}")) is not None]
    return max(counts, default=0)


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


def fittable_depth_image_frame(frames, references) -> int:
    return fittable_first(frames, lambda i, exact: reference_samples(references[i]))


def test_depth_image_reference_gives_metres(ros, scene_frames):
    client, publishers, _ = ros
    frames, camera = scene_frames
    pubs = publishers["dimg"]
    references = [sparse_reference(exact, noise=0.02, seed=i) for i, (_, exact) in enumerate(frames)]
    first = fittable_depth_image_frame(frames, references)
    order = [first] + [i for i in range(len(frames)) if i != first]

    # first frame: 32FC1 metres, 400 valid pixels in 640x480 (~2 % of them would survive a resample
    # to the 128x96 grid), 2 % noise: every one counts
    rgb, exact = frames[order[0]]
    stamp = send(pubs, rgb, camera, make_stamp(0), numpy_to_image(references[order[0]], "32FC1"))
    depth = received_depth(client, "dimg", stamp)
    relative = relative_depth(rgb)
    expected = expected_first_frame(relative, reference_samples(references[order[0]]))
    np.testing.assert_allclose(depth, expected, rtol=1e-2)
    assert_metric(depth, exact_on_grid(exact), relative)
    values = node_diagnostics(client, "dimg", lambda v: int(v["published_frames"]) >= 1)
    assert values["fit_status"] == "ok" and values["fit_points"] == str(REF_POINTS)
    assert values["scale_age_s"] == "0.00" and values["scale_age_frames"] == "0" and values["metric_stale"] == "False"

    # second: 16UC1 millimetres (0 = no depth)
    rgb, exact = frames[order[1]]
    millimetres = np.nan_to_num(references[order[1]] * 1000.0, nan=0.0).round().astype(np.uint16)
    stamp = send(pubs, rgb, camera, make_stamp(1), numpy_to_image(millimetres, "16UC1"))
    assert_metric(received_depth(client, "dimg", stamp), exact_on_grid(exact), relative_depth(rgb))

    # third: no reference paired: the filtered scale/shift is kept
    rgb, exact = frames[order[2]]
    stamp = send(pubs, rgb, camera, make_stamp(2))
    assert_metric(received_depth(client, "dimg", stamp), exact_on_grid(exact), relative_depth(rgb))

    values = node_diagnostics(client, "dimg", lambda v: int(v["published_frames"]) >= 3)
    print("diagnostics:", values)
    assert values["depth_kind"] == "metric" and values["metric_source"] == "sparse"
    assert values["fit_status"] == "no_reference" and values["references_missing"] == "1"
    assert values["references_paired"] == "2" and values["reference_topic"] == "/dimg/reference"
    assert float(values["scale"]) > 0 and np.isfinite(float(values["shift"]))
    # held since the first frame's fit, or the second's (the random network's slope sign is chance)
    assert values["scale_age_s"] in ("1.00", "2.00") and values["scale_age_frames"] == values["scale_age_s"][0]


def test_depth_image_node_says_when_and_why_it_is_not_metric(ros, scene_frames):
    """Fits rejected (all outliers), a true 3x change gated twice then reset, the held scale going
    stale (no depth published: metric_stale_output no_depth), metric again, and a reference that is
    not reused for the next frame: per frame in diagnostics, in one log line where it matters."""
    client, publishers, nodes = ros
    frames, camera = scene_frames
    pubs, node = publishers["dimg"], nodes["dimg"]
    references = [sparse_reference(exact, noise=0.02, seed=i) for i, (_, exact) in enumerate(frames)]
    index = fittable_depth_image_frame(frames, references)
    rgb, reference = frames[index][0], references[index]
    garbage = reference * np.random.default_rng(1).uniform(0.3, 3.0, reference.shape).astype(np.float32)
    published = published_so_far(client, "dimg")

    def frame(seconds, reference_image=None):
        nonlocal published
        stamp = send(pubs, rgb, camera, stamp_at(seconds),
                     numpy_to_image(reference_image, "32FC1") if reference_image is not None else None)
        depth = received_depth(client, "dimg", stamp)
        published += 1
        status = node_status(client, "dimg", lambda v: int(v["published_frames"]) >= published)
        return depth, status, {pair.key: pair.value for pair in status.values}

    held, _, values = frame(2000.0, reference)  # after a time gap: a reset (or the first fit)
    assert values["fit_status"] in ("ok", "reset") and values["depth_kind"] == "metric"

    depth, _, values = frame(2000.5, garbage)  # every point an outlier: rejected, scale held
    assert values["fit_status"] == "too_spread" and values["fit_inlier_ratio"] == "0.00"
    np.testing.assert_array_equal(depth, held)
    assert values["scale_age_s"] == "0.50" and values["scale_age_frames"] == "1"

    for seconds, expected in ((2001.0, "rejected_jump"), (2001.5, "rejected_jump"), (2002.0, "reset")):
        # the reference's scale changes for real, about 3x: log(d' + 1) = log(d + 1) + log 3 (the fit of
        # this random network's depth stays as good, only its shift moves)
        depth, _, values = frame(seconds, 3.0 * reference + 2.0)
        assert values["fit_status"] == expected
        if expected == "rejected_jump":
            np.testing.assert_array_equal(depth, held)
    assert np.nanmedian(depth / held) > 1.5 and values["scale_age_s"] == "0.00"
    assert "rejected_jump: 2" in values["fit_statuses"] and "jump: 1" in values["filter_resets"]
    reset_line = node.wait_for_line("/dimg/image: metric scale reset (jump): scale")
    assert "->" in reset_line and "shift" in reset_line

    depth, status, values = frame(2002.0 + MAX_AGE + 0.1)  # no reference, held scale too old
    assert np.isnan(depth).all()  # metric_stale_output no_depth: nothing in assumed metres
    assert values["metric_stale"] == "True" and values["depth_kind"] == "relative"
    assert float(values["scale_age_s"]) == pytest.approx(MAX_AGE + 0.1) and values["fit_status"] == "no_reference"
    assert status.level == DiagnosticStatus.WARN and "metric scale stale" in status.message
    line = node.wait_for_line("/dimg/image: metric scale is STALE, publishing NO depth")
    assert "since the last accepted fit (metric_max_age 2.5 s); this frame: no_reference" in line
    assert node.matching("no metric reference on /dimg/reference within")  # the resolved topic

    again, status, values = frame(2004.70, reference)  # a fit again (after a time gap: reset)
    assert values["fit_status"] == "reset" and values["metric_stale"] == "False" and np.isfinite(again).all()
    assert "stale" not in status.message and "not (yet)" not in status.message
    node.wait_for_line("/dimg/image: metric depth again: sparse fit accepted")
    missing = int(values["references_missing"])

    depth, _, values = frame(2004.72)  # 20 ms later: the previous frame's reference is not reused
    assert values["fit_status"] == "no_reference" and int(values["references_missing"]) == missing + 1
    np.testing.assert_array_equal(depth, again)


def test_pointcloud_reference_projected_with_extrinsic(ros, scene_frames):
    client, publishers, nodes = ros
    frames, camera = scene_frames
    clouds = [lidar_points(exact, camera, 1500, seed=i) for i, (_, exact) in enumerate(frames)]
    first = fittable_first(frames, lambda i, exact: projected_grid(clouds[i][1], camera))
    rgb, exact = frames[first]
    lidar, camera_points = clouds[first]

    def cloud_msg(points):
        cloud = np.zeros((1, len(points)), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("intensity", "f4")])
        cloud["x"][0], cloud["y"][0], cloud["z"][0] = points.T
        return structured_to_pointcloud2(cloud)

    # too few points for a fit: relative, and the node says why
    stamp = send(publishers["dcloud"], rgb, camera, make_stamp(-1), cloud_msg(lidar[:5]))
    received_depth(client, "dcloud", stamp)
    values = node_diagnostics(client, "dcloud", lambda v: int(v["published_frames"]) >= 1)
    assert values["depth_kind"] == "relative" and values["fit_status"] == "too_few_points"
    assert values["scale_age_s"] == "nan" and values["scale_age_frames"] == "1"
    line = nodes["dcloud"].wait_for_line("/dcloud/image: depth is RELATIVE (not metric): no sparse fit accepted yet")
    assert "this frame: too_few_points (5 reference points" in line

    stamp = send(publishers["dcloud"], rgb, camera, make_stamp(0), cloud_msg(lidar))
    depth = received_depth(client, "dcloud", stamp)
    relative = relative_depth(rgb)
    # float32 points on the wire can move a return across a pixel border: a slightly different fit
    np.testing.assert_allclose(depth, expected_first_frame(relative, projected_grid(camera_points, camera)),
                               rtol=2e-2)
    assert_metric(depth, exact_on_grid(exact), relative)

    values = node_diagnostics(client, "dcloud", lambda v: int(v["published_frames"]) >= 2)
    print("diagnostics:", values)
    assert values["depth_kind"] == "metric" and values["fit_status"] == "ok"
    assert values["reference_type"] == "pointcloud" and int(values["fit_points"]) > 1000
    assert float(values["fit_residual"]) < 0.3

    # metric_reference_reuse true: a frame 20 ms later without its own cloud refits to this one
    later = Time(sec=stamp.sec, nanosec=stamp.nanosec + 20_000_000)
    np.testing.assert_allclose(received_depth(client, "dcloud", send(publishers["dcloud"], rgb, camera, later)),
                               depth, rtol=1e-5)
    values = node_diagnostics(client, "dcloud", lambda v: int(v["published_frames"]) >= 3)
    assert values["fit_status"] == "ok" and values["references_missing"] == "0"
    assert values["references_paired"] == "3"
