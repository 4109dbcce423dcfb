"""Camera model, unprojection, flying-pixel filter and PointCloud2 packing (ppd_ros.geometry)."""
from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import pytest
import torch

from ppd_ros.geometry.camera import CameraModel
from ppd_ros.geometry.cloud import CLOUD_DTYPE, depth_to_cloud, flying_pixel_mask, unproject

K_FULL = np.array([[520.0, 0.0, 318.5], [0.0, 515.0, 241.0], [0.0, 0.0, 1.0]])
P_FULL = np.array([[500.0, 0.0, 320.0, 0.0], [0.0, 500.0, 240.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
R_IDENTITY = np.eye(3).reshape(-1)


def _points_in_view(n: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.5, 8.0, n)
    x = rng.uniform(-0.5, 0.5, n) * z
    y = rng.uniform(-0.4, 0.4, n) * z
    return np.stack([x, y, z], axis=-1)


def _opencv_pixels(points: np.ndarray, K: np.ndarray, D: np.ndarray, model: str) -> np.ndarray:
    """Independent forward projection with OpenCV."""
    zero = np.zeros(3)
    if model == "equidistant":
        pixels, _ = cv2.fisheye.projectPoints(points.reshape(-1, 1, 3), zero, zero, K, D)
    else:
        pixels, _ = cv2.projectPoints(points, zero, zero, K, D)
    return pixels.reshape(-1, 2)


@pytest.mark.parametrize(
    "model, D",
    [
        ("plumb_bob", [-0.28, 0.09, 0.0012, -0.0008, -0.015]),
        ("rational_polynomial", [0.6, -0.1, 0.001, 0.0005, 0.02, 0.95, 0.05, 0.01]),
        ("equidistant", [0.05, -0.02, 0.004, -0.001]),
    ],
)
def test_undistortion_inverts_opencv_projection(model, D):
    D = np.array(D)
    camera = CameraModel.from_camera_info_fields(640, 480, K_FULL.reshape(-1), D, R_IDENTITY, P_FULL.reshape(-1), model)
    points = _points_in_view()
    pixels = _opencv_pixels(points, K_FULL, D, model)
    rays = camera.pixel_rays(pixels[:, 0], pixels[:, 1])
    np.testing.assert_allclose(rays[:, :2], points[:, :2] / points[:, 2:], atol=1e-7)
    np.testing.assert_allclose(rays[:, 2], 1.0)
    # the cached ray grid at integer pixels projects back onto those pixels
    grid = camera.ray_grid(dtype=torch.float64).numpy()
    v, u = np.mgrid[0:480:37, 0:640:41]
    back = _opencv_pixels(grid[v, u].reshape(-1, 3), K_FULL, D, model)
    np.testing.assert_allclose(back, np.stack([u.ravel(), v.ravel()], axis=-1), atol=1e-5)


def test_rectified_uses_projection_matrix():
    camera = CameraModel.from_camera_info_fields(
        640, 480, K_FULL, [-0.3, 0.1, 0, 0, 0], R_IDENTITY, P_FULL, "plumb_bob", rectified=True
    )
    np.testing.assert_array_equal(camera.K, P_FULL[:, :3])
    assert camera.distortion_model == "none" and not camera.is_distorted
    points = _points_in_view()
    pixels = P_FULL[:, :3] @ points.T
    pixels = (pixels[:2] / pixels[2]).T
    np.testing.assert_allclose(camera.project(points), pixels, atol=1e-9)


def test_binning_and_roi_follow_image_geometry():
    x_offset, y_offset, roi_width, roi_height = 100, 60, 400, 300
    camera = CameraModel.from_camera_info_fields(
        640, 480, K_FULL, [], R_IDENTITY, P_FULL, "plumb_bob",
        binning_x=2, binning_y=2, roi=(x_offset, y_offset, roi_width, roi_height),
    )
    assert (camera.width, camera.height) == (200, 150)
    points = _points_in_view()
    full = CameraModel.from_camera_info_fields(640, 480, K_FULL, [], R_IDENTITY, P_FULL, "plumb_bob").project(points)
    expected = np.stack([(full[:, 0] - x_offset) / 2, (full[:, 1] - y_offset) / 2], axis=-1)
    np.testing.assert_allclose(camera.project(points), expected, atol=1e-9)
    assert camera.P[0, 2] == pytest.approx((320.0 - x_offset) / 2)
    # binning 0 and 1 both mean "none"; a zero-size ROI means the full image
    for binning in (0, 1):
        same = CameraModel.from_camera_info_fields(640, 480, K_FULL, [], R_IDENTITY, P_FULL, "plumb_bob", binning,
                                                   binning)
        assert (same.width, same.height) == (640, 480)
        np.testing.assert_array_equal(same.K, K_FULL)


def test_scaled_to_keeps_image_corners_on_the_same_rays():
    camera = CameraModel.from_camera_info_fields(640, 480, K_FULL, [-0.2, 0.05, 0, 0, 0], R_IDENTITY, P_FULL,
                                                 "plumb_bob")
    small = camera.scaled_to(160, 96)
    assert (small.width, small.height) == (160, 96)
    # outer corners of the image (pixel edges) are at -0.5 and size - 0.5 in both images
    corners = np.array([[-0.5, -0.5], [639.5, 479.5], [-0.5, 479.5], [319.5, 239.5]])
    corners_small = np.array([[-0.5, -0.5], [159.5, 95.5], [-0.5, 95.5], [79.5, 47.5]])
    np.testing.assert_allclose(
        camera.pixel_rays(corners[:, 0], corners[:, 1]), small.pixel_rays(corners_small[:, 0], corners_small[:, 1]),
        atol=1e-9
    )
    assert small.fx == pytest.approx(520.0 * 160 / 640) and small.fy == pytest.approx(515.0 * 96 / 480)
    assert small.P[0, 2] == pytest.approx((320.0 + 0.5) * 0.25 - 0.5)
    np.testing.assert_array_equal(small.D, camera.D)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(K=np.diag([0.0, 500.0, 1.0])), "focal length"),
        (dict(K=np.diag([-500.0, 500.0, 1.0])), "focal length"),
        (dict(K=np.diag([np.nan, 500.0, 1.0])), "non-finite"),
        (dict(width=0), "size"),
        (dict(height=-3), "size"),
        (dict(distortion_model="kannala_fancy"), "unknown distortion model"),
        (dict(D=np.array([np.nan, 0, 0, 0, 0]), distortion_model="plumb_bob"), "non-finite"),
    ],
)
def test_validate_gives_one_clear_error(change, message):
    fields = dict(width=64, height=48, K=np.diag([50.0, 50.0, 1.0]), D=np.zeros(5), distortion_model="none")
    fields.update(change)
    camera = CameraModel(**fields)
    with pytest.raises(ValueError, match=message):
        camera.validate()
    with pytest.raises(ValueError, match=message):
        camera.ray_grid()


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(K=np.diag([5e-324, 50.0, 1.0])), r"focal length fx=5e-324 px is absurd"),  # denormal
        (dict(K=np.diag([50.0, 1e300, 1.0])), r"focal length fy=1e\+300 px is absurd"),
        (dict(K=np.array([[50.0, 0, 1e200], [0, 50.0, 23.5], [0, 0, 1]])), "more than 90 degrees off the optical axis"),
        (dict(D=np.array([1e30, 0, 0, 0, 0]), distortion_model="plumb_bob"), "cannot be inverted"),
        (dict(D=np.array([1e308, 0, 0, 0, 0]), distortion_model="plumb_bob"), "cannot be inverted"),
        (dict(D=np.full(8, 1e30), distortion_model="rational_polynomial"), "cannot be inverted"),
        (dict(D=np.array([0, 0, 1e30, 0, 0]), distortion_model="plumb_bob"), "cannot be inverted"),
        (dict(D=np.array([-1000.0, 0, 0, 0, 0]), distortion_model="plumb_bob"), "cannot be inverted"),
        (dict(D=np.array([1e308, 0, 0, 0]), distortion_model="equidistant"), "cannot be inverted"),
    ],
)
def test_validate_rejects_absurd_focal_lengths_and_distortion_without_numpy_warnings(change, message):
    fields = dict(width=64, height=48, K=np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]]), D=np.zeros(5),
                  distortion_model="none")
    fields.update(change)
    camera = CameraModel(**fields)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy RuntimeWarning fails the test
        with pytest.raises(ValueError, match=message):
            camera.validate()
        with pytest.raises(ValueError, match=message):
            camera.ray_grid()


def test_validate_accepts_real_lenses_and_fisheye_beyond_180_degrees():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CameraModel(640, 480, K_FULL, np.array([-0.28, 0.07, 0.001, 0.001, 0.0]), "plumb_bob").validate()
        CameraModel(640, 480, K_FULL, np.array([-0.3, 0.1, 0.0, 0.0, 0.0, -0.1, 0.05, 0.0]),
                    "rational_polynomial").validate()
        # 200-degree equidistant fisheye: corner rays past 90 degrees are clipped, not an error
        fisheye = CameraModel(640, 480, np.array([[640 / 3.5, 0, 319.5], [0, 640 / 3.5, 239.5], [0, 0, 1]]),
                              np.array([0.01, 0.0, 0.0, 0.0]), "equidistant")
        fisheye.validate()
        assert np.isfinite(fisheye.ray_grid().numpy()).all()


def test_uncalibrated_camera_info_is_rejected_clearly():
    camera = CameraModel.from_camera_info_fields(0, 0, np.zeros(9), [], R_IDENTITY, np.zeros(12), "")
    with pytest.raises(ValueError, match="width/height"):
        camera.validate()
    with pytest.raises(ValueError, match="focal length"):
        CameraModel.from_camera_info_fields(
            0, 0, np.zeros(9), [], R_IDENTITY, np.zeros(12), "", image_size=(640, 480)
        ).validate()
    # calibrated but without size: the size of the image it came with fills in
    sized = CameraModel.from_camera_info_fields(0, 0, K_FULL, [], R_IDENTITY, P_FULL, "plumb_bob",
                                                image_size=(640, 480))
    sized.validate()
    assert (sized.width, sized.height) == (640, 480)


def test_ray_grid_is_cached_and_pinhole_matches_formula():
    camera = CameraModel.pinhole(80.0, 70.0, 31.5, 23.0, 64, 48)
    grid = camera.ray_grid()
    assert grid is camera.ray_grid()
    assert grid is CameraModel.pinhole(80.0, 70.0, 31.5, 23.0, 64, 48).ray_grid()  # equal camera, same entry
    v, u = np.mgrid[0:48, 0:64]
    np.testing.assert_allclose(grid[..., 0].numpy(), (u - 31.5) / 80.0, atol=1e-6)
    np.testing.assert_allclose(grid[..., 1].numpy(), (v - 23.0) / 70.0, atol=1e-6)
    assert grid.shape == (48, 64, 3) and torch.all(grid[..., 2] == 1)


def test_unproject_matches_independent_formula_and_marks_missing_depth():
    camera = CameraModel.pinhole(60.0, 62.0, 20.0, 14.5, 40, 30)
    depth = np.random.default_rng(1).uniform(0.5, 5.0, (30, 30 + 10)).astype(np.float32)
    depth[0, 0], depth[1, 1], depth[2, 2], depth[3, 3] = np.nan, np.inf, 0.0, -1.0
    points = unproject(depth, camera.ray_grid()).numpy()
    v, u = np.mgrid[0:30, 0:40]
    expected = np.stack([(u - 20.0) * depth / 60.0, (v - 14.5) * depth / 62.0, depth], axis=-1)
    missing = np.zeros((30, 40), bool)
    missing[[0, 1, 2, 3], [0, 1, 2, 3]] = True
    np.testing.assert_allclose(points[~missing], expected[~missing], rtol=1e-6)
    assert np.all(np.isnan(points[missing]))
    # torch input gives the same
    np.testing.assert_array_equal(unproject(torch.from_numpy(depth), camera.ray_grid()).numpy(), points)


def _step_depth(width=64, height=16, near=2.0, far=4.0, ramp=4):
    """Foreground left, background right, with a linear ramp of ``ramp - 1`` blurred pixels between."""
    row = np.full(width, far, dtype=np.float32)
    edge = width // 2
    row[:edge] = near
    row[edge - 1 : edge + ramp] = np.linspace(near, far, ramp + 1)
    return np.tile(row, (height, 1)), edge


def test_filter_removes_ramp_keeps_both_object_borders():
    depth, edge = _step_depth()
    camera = CameraModel.pinhole(60.0, 60.0, 31.5, 7.5, 64, 16)
    removed = flying_pixel_mask(depth, camera.ray_grid()).numpy()
    ramp = slice(edge, edge + 3)
    assert removed[:, ramp].all()
    assert not removed[:, : edge - 1].any() and not removed[:, edge + 4 :].any()
    # the last foreground pixel and the first background pixel are real surface: kept
    assert not removed[:, edge - 1].any() and not removed[:, edge + 3].any()
    # each test alone also catches this ramp (the angle test given a focal length that makes the
    # ramp steeper than the limit: slope 0.5 m/px at 3.5 m seen with f = 200 px is ~89 deg)
    long_focus = CameraModel.pinhole(200.0, 200.0, 31.5, 7.5, 64, 16)
    assert flying_pixel_mask(depth, long_focus.ray_grid(), None, 84.0).numpy()[:, ramp].all()
    assert not flying_pixel_mask(depth, long_focus.ray_grid(), None, 84.0).numpy()[:, [edge - 1, edge + 3]].any()
    assert flying_pixel_mask(depth, camera.ray_grid(), 0.03, None).numpy()[:, ramp].all()
    assert not flying_pixel_mask(depth, camera.ray_grid(), None, None).numpy().any()


def test_grazing_angle_test_matches_3d_angle_on_a_tilted_plane():
    """Closed-form angle test against the angle between the analytic plane normal and each ray."""
    camera = CameraModel.from_camera_info_fields(
        160, 120, [100.0, 0, 79.5, 0, 100.0, 59.5, 0, 0, 1], [-0.1, 0.01, 0, 0, 0], R_IDENTITY, None, "plumb_bob"
    )
    rays = camera.ray_grid(dtype=torch.float64)
    normal = np.array([math.sin(1.35), 0.1, -math.cos(1.35)])
    normal /= np.linalg.norm(normal)
    point_on_plane = np.array([0.0, 0.0, 3.0])
    ray_array = rays.numpy()
    depth = (point_on_plane @ normal) / (ray_array @ normal)  # plane n.X = n.X0 along each ray
    cos_angle = np.abs(ray_array @ normal) / np.linalg.norm(ray_array, axis=-1)
    angle = np.degrees(np.arccos(cos_angle))
    threshold = 80.0
    removed = flying_pixel_mask(torch.from_numpy(depth), rays, None, threshold).numpy()
    # one-sided differences see the plane's depth curve slightly gentler than its tangent (~0.5 deg)
    clear = np.abs(angle - threshold) > 1.0
    clear &= cv2.erode((depth > 0).astype(np.uint8), np.ones((3, 3), np.uint8), borderValue=0).astype(bool)
    assert clear.sum() > 5000
    assert (angle[clear] > threshold).any() and (angle[clear] < threshold).any()
    np.testing.assert_array_equal(removed[clear], angle[clear] > threshold)


def test_packing_layout_and_values():
    camera = CameraModel.pinhole(50.0, 50.0, 15.5, 11.5, 32, 24)
    depth, _ = _step_depth(32, 24, ramp=4)
    depth[5, 5] = np.nan
    rgb = np.random.default_rng(2).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    cloud, counts = depth_to_cloud(depth, camera, rgb)
    assert cloud.dtype == CLOUD_DTYPE and cloud.dtype.itemsize == 16
    assert cloud.dtype.names == ("x", "y", "z", "rgb")
    assert [cloud.dtype.fields[name][1] for name in "x y z rgb".split()] == [0, 4, 8, 12]
    assert all(cloud.dtype.fields[name][0] == np.dtype("<f4") for name in cloud.dtype.names)
    assert cloud.shape == (24, 32)
    assert len(cloud.tobytes()) == 24 * 32 * 16

    removed = flying_pixel_mask(depth, camera.ray_grid()).numpy()
    gone = removed | np.isnan(depth)
    expected = unproject(depth, camera.ray_grid()).numpy()
    for axis, name in enumerate("xyz"):
        assert np.all(np.isnan(cloud[name][gone]))
        np.testing.assert_array_equal(cloud[name][~gone], expected[..., axis][~gone])
    colour = cloud["rgb"].view(np.uint32)
    assert np.all(colour >> 24 == 0)
    np.testing.assert_array_equal((colour >> 16) & 255, rgb[..., 0])
    np.testing.assert_array_equal((colour >> 8) & 255, rgb[..., 1])
    np.testing.assert_array_equal(colour & 255, rgb[..., 2])
    assert counts.total == 24 * 32 and counts.invalid == 1
    assert counts.flying == int(removed.sum()) > 0
    assert counts.kept == counts.total - counts.invalid - counts.flying == int(np.isfinite(cloud["z"]).sum())

    dense, dense_counts = depth_to_cloud(depth, camera, rgb, keep_organized=False)
    assert dense.shape == (counts.kept,) and dense_counts == counts
    np.testing.assert_array_equal(dense.view(np.uint32).reshape(-1, 4), cloud[~gone].view(np.uint32).reshape(-1, 4))

    unfiltered, plain_counts = depth_to_cloud(depth, camera, filter=False)
    assert plain_counts.flying == 0 and plain_counts.kept == 24 * 32 - 1
    assert np.all(unfiltered["rgb"].view(np.uint32) == 0)


def test_depth_to_cloud_checks_inputs():
    camera = CameraModel.pinhole(50.0, 50.0, 15.5, 11.5, 32, 24)
    with pytest.raises(ValueError, match="scaled_to"):
        depth_to_cloud(np.ones((12, 16), np.float32), camera)
    with pytest.raises(ValueError, match="uint8"):
        depth_to_cloud(np.ones((24, 32), np.float32), camera, rgb=np.zeros((24, 32, 3), np.float32))
    with pytest.raises(TypeError, match="threshold"):
        depth_to_cloud(np.ones((24, 32), np.float32), camera, max_jump=0.1)
    # a colour image at another size is resized nearest
    cloud, _ = depth_to_cloud(np.ones((24, 32), np.float32), camera, rgb=np.full((48, 64, 3), 7, np.uint8))
    assert np.all(cloud["rgb"].view(np.uint32) == 0x070707)


def test_acceptance_regression_blur_is_filtered():
    """Depth blurred like a regression network (GT at 1/4 size, bilinear up): >= 90% of flying points
    removed, < 5% of true-surface points removed, pooled over a few synthetic rooms."""
    from ppd_ros.synthetic import Scene, camera_trajectory, default_camera
    from ppd_ros.synthetic.metrics import blur_like_regression, evaluate_depth_filter

    camera = default_camera(256, 192)
    flying = flying_removed = true_surface = true_removed = 0
    for seed in range(3):
        scene = Scene.random(seed)
        blurred, gt_depth, _ = blur_like_regression(scene, camera, camera_trajectory(3, seed, scene)[1])
        removed = flying_pixel_mask(blurred, camera.ray_grid())
        report = evaluate_depth_filter(blurred, removed, gt_depth, camera)
        assert report.flying > 100  # the blur really made flying pixels
        flying += report.flying
        flying_removed += report.flying_removed
        true_surface += report.true_surface
        true_removed += report.true_removed
    assert flying_removed / flying >= 0.90
    assert true_removed / true_surface < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    from ppd_ros.synthetic import Scene, camera_trajectory, default_camera
    from ppd_ros.synthetic.metrics import blur_like_regression

    camera = default_camera(128, 96)
    scene = Scene.random(0)
    blurred, _, rgb = blur_like_regression(scene, camera, camera_trajectory(2, 0, scene)[0])
    cpu, cpu_counts = depth_to_cloud(blurred, camera, rgb)
    gpu, gpu_counts = depth_to_cloud(torch.from_numpy(blurred).cuda(), camera, torch.from_numpy(rgb).cuda())
    assert gpu_counts.total == cpu_counts.total
    assert abs(gpu_counts.flying - cpu_counts.flying) <= 0.002 * cpu_counts.total
    agree = np.isnan(cpu["z"]) == np.isnan(gpu["z"])
    assert agree.mean() > 0.998
    both = agree & ~np.isnan(cpu["z"])
    np.testing.assert_allclose(gpu["z"][both], cpu["z"][both], rtol=1e-6)
    np.testing.assert_array_equal(gpu["rgb"].view(np.uint32), cpu["rgb"].view(np.uint32))
