"""Synthetic RGB-D renderer and flying-pixel metrics (ppd_ros.synthetic)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ppd_ros.geometry.camera import CameraModel
from ppd_ros.synthetic import Box, Plane, Scene, Sphere, camera_trajectory, default_camera, look_at, render
from ppd_ros.synthetic.metrics import GroundTruthSurface, depth_points, evaluate_removal


def _rotation_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_plane_depth_matches_analytic_value_including_tilt_and_distortion():
    camera = CameraModel.from_camera_info_fields(
        80, 60, [70.0, 0, 39.0, 0, 72.0, 30.5, 0, 0, 1], [-0.2, 0.03, 0.001, 0, 0], np.eye(3), None, "plumb_bob"
    )
    scene = Scene(objects=(Plane(point=(3.0, 0.0, 0.0), normal=(1.0, 0.0, 0.0)),))
    # facing the wall: every pixel sees it at depth 3 along the optical axis
    straight = look_at((0.0, 0.0, 1.0), (1.0, 0.0, 1.0))
    _, depth = render(scene, camera, straight)
    np.testing.assert_allclose(depth, 3.0, rtol=1e-6)
    # turned by 0.4 rad about the vertical: depth along each pixel ray r is d / (n_cam . r)
    turned = straight.copy()
    turned[:3, :3] = _rotation_z(0.4) @ straight[:3, :3]
    _, depth = render(scene, camera, turned)
    normal_in_camera = turned[:3, :3].T @ np.array([1.0, 0.0, 0.0])
    rays = camera.ray_grid().double().numpy()
    np.testing.assert_allclose(depth, 3.0 / (rays @ normal_in_camera), rtol=1e-5)


def test_sphere_and_box_front_depths():
    camera = default_camera(65, 49)  # odd size: the principal point is a pixel centre
    pose = look_at((0.0, 0.0, 1.0), (1.0, 0.0, 1.0))
    _, depth = render(Scene(objects=(Sphere((5.0, 0.0, 1.0), 1.0),)), camera, pose)
    assert depth[24, 32] == pytest.approx(4.0, rel=1e-6)
    assert np.isnan(depth[0, 0])  # nothing there (no room)
    _, depth = render(Scene(objects=(Box((4.0, 0.0, 1.0), (0.5, 0.5, 0.5)),)), camera, pose)
    assert depth[24, 32] == pytest.approx(3.5, rel=1e-6)
    assert np.nanmax(depth) == pytest.approx(3.5, rel=1e-6)  # the front face is perpendicular to the axis


def test_random_scene_render_is_deterministic_and_dense():
    scene = Scene.random(3)
    assert scene == Scene.random(3) and scene != Scene.random(4)
    camera = default_camera(128, 96)
    poses = camera_trajectory(4, 3, scene)
    assert poses.shape == (4, 4, 4)
    rgb, depth = render(scene, camera, poses[0])
    assert rgb.shape == (96, 128, 3) and rgb.dtype == np.uint8
    assert depth.shape == (96, 128) and depth.dtype == np.float32
    assert np.all(np.isfinite(depth)) and depth.min() > 0  # inside a closed room
    assert rgb.std() > 10  # textured, not flat
    again_rgb, again_depth = render(scene, camera, poses[0])
    np.testing.assert_array_equal(again_rgb, rgb)
    np.testing.assert_array_equal(again_depth, depth)


def test_trajectory_poses_are_rigid_smooth_and_inside_the_camera_region():
    scene = Scene.random(5)
    poses = camera_trajectory(10, 1, scene)
    for pose in poses:
        np.testing.assert_allclose(pose[:3, :3].T @ pose[:3, :3], np.eye(3), atol=1e-12)
        assert np.linalg.det(pose[:3, :3]) == pytest.approx(1.0)
        np.testing.assert_array_equal(pose[3], [0, 0, 0, 1])
        x, y, radius, z_min, z_max = scene.camera_region
        assert math.hypot(pose[0, 3] - x, pose[1, 3] - y) <= radius
        assert z_min - 0.11 <= pose[2, 3] <= z_max + 0.11
    steps = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=-1)
    assert steps.max() < 0.3 and steps.max() > 0


def test_points_rendered_in_two_frames_reproject():
    """A pixel's 3-D point from frame A, moved with the poses into frame B, lands on B's depth."""
    scene = Scene.random(7)
    camera = default_camera(160, 120)
    poses = camera_trajectory(8, 2, scene)
    pose_a, pose_b = poses[0], poses[3]
    _, depth_a = render(scene, camera, pose_a)
    _, depth_b = render(scene, camera, pose_b)
    v, u = np.mgrid[4:120:6, 4:160:6]
    rays = camera.ray_grid().double().numpy()[v, u]
    points_a = rays * depth_a[v, u][..., None]
    world = points_a @ pose_a[:3, :3].T + pose_a[:3, 3]
    points_b = (world - pose_b[:3, 3]) @ pose_b[:3, :3]
    pixels = camera.project(points_b)
    column, row = np.rint(pixels[..., 0]).astype(int), np.rint(pixels[..., 1]).astype(int)
    inside = (column >= 0) & (column < 160) & (row >= 0) & (row < 120) & (points_b[..., 2] > 0)
    assert inside.mean() > 0.5
    relative = np.abs(depth_b[row[inside], column[inside]] - points_b[..., 2][inside]) / points_b[..., 2][inside]
    # nearest-pixel lookup: exact up to sub-pixel slope except at occlusions and edges
    assert np.median(relative) < 0.005
    assert np.mean(relative < 0.03) > 0.9


def test_ground_truth_surface_metrics():
    camera = default_camera(64, 48)
    scene = Scene.random(1)
    _, depth = render(scene, camera, camera_trajectory(1, 1, scene)[0])
    surface = GroundTruthSurface(depth, camera)
    points = depth_points(depth, camera)
    assert not surface.is_flying(points).any()
    # points pushed 10% of their depth along their ray hang in the air
    assert surface.is_flying(points[::7] * 1.1).all()
    removed = np.zeros(len(points), bool)
    removed[:10] = True
    mixed = np.concatenate([points, points[:5] * 1.1])
    report = evaluate_removal(mixed, np.concatenate([removed, [True, True, False, False, False]]), surface)
    assert (report.points, report.flying, report.flying_removed, report.true_removed) == (len(mixed), 5, 2, 10)
    assert report.flying_removed_share == pytest.approx(0.4)
    assert report.true_removed_share == pytest.approx(10 / len(points))


def test_lidar_scan_points_lie_on_the_room_in_beams():
    from ppd_ros.synthetic import Room
    from ppd_ros.synthetic.lidar import BEAM_ELEVATIONS_DEG, lidar_scan

    size = np.array([4.0, 6.0, 3.0])
    pose = look_at((1.0, 2.0, 1.2), (2.0, 3.0, 1.2))  # any orientation: here the optical frame's
    points = lidar_scan(Scene(room=Room(size=tuple(size))), pose, azimuth_step_deg=2.0)
    assert points.shape == (16 * 180, 3)  # a closed room: every ray returns
    world = points.astype(np.float64) @ pose[:3, :3].T + pose[:3, 3]
    to_nearest_face = np.minimum(np.abs(world), np.abs(world - size)).min(axis=1)
    assert to_nearest_face.max() < 1e-4
    elevation = np.degrees(np.arctan2(points[:, 2], np.hypot(points[:, 0], points[:, 1])))
    np.testing.assert_allclose(np.sort(np.unique(np.round(elevation, 3))), np.round(BEAM_ELEVATIONS_DEG, 3),
                               atol=1e-3)


def test_synth_bag_command_writes_what_it_renders(tmp_path, capsys):
    from rosbags.highlevel import AnyReader

    from ppd_ros.cli import main
    from ppd_ros.evaluation.bag import typestore
    from ppd_ros.msg_decode import depth_image_msg_to_metres, image_to_rgb8
    from ppd_ros.synthetic import bag as synth

    out = tmp_path / "bag"
    args = ["synth-bag", str(out), "--frames", "3", "--scene", "room", "--seed", "4", "--width", "48",
            "--height", "32"]
    assert main(args) == 0
    scene, poses = synth.scene_views("room", 3, 4)
    rgb, depth = render(scene, default_camera(48, 32), poses[2])
    found = {}
    with AnyReader([out], default_typestore=typestore()) as reader:
        assert {c.topic for c in reader.connections} == {synth.IMAGE_TOPIC, synth.CAMERA_INFO_TOPIC, synth.DEPTH_TOPIC}
        for connection, _, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            found.setdefault(connection.topic, []).append(msg)
    assert all(len(messages) == 3 for messages in found.values())
    np.testing.assert_array_equal(image_to_rgb8(found[synth.IMAGE_TOPIC][2]), rgb)
    np.testing.assert_array_equal(depth_image_msg_to_metres(found[synth.DEPTH_TOPIC][2]), depth)
    info = found[synth.CAMERA_INFO_TOPIC][2]
    assert info.header.stamp == found[synth.IMAGE_TOPIC][2].header.stamp and (info.width, info.height) == (48, 32)
    assert main(args) == 2 and "exists already" in capsys.readouterr().err
