"""Temporal consistency metrics (exact depth, scale jitter, hand-made examples) and the video bench."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ppd_ros.geometry.camera import CameraModel
from ppd_ros.synthetic import Scene, camera_trajectory, default_camera, render
from ppd_ros.evaluation.temporal import (
    align_sequence,
    gt_correspondence,
    temporal_metrics,
    temporal_metrics_of_relative,
)


# --- temporal metrics ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rendered_sequence():
    scene = Scene.random(3)
    camera = default_camera(48, 32)
    motion = camera_trajectory(5, 3, scene)
    poses = np.concatenate([motion[:1], motion[:1], motion])  # two still frames, then motion
    gt = np.stack([render(scene, camera, pose)[1] for pose in poses])
    return gt, poses, camera


def test_metrics_vanish_on_exact_depth(rendered_sequence):
    gt, poses, camera = rendered_sequence
    metrics = temporal_metrics(gt, gt, poses, camera)
    assert metrics.tae < 1e-3 and metrics.flicker < 1e-6
    assert min(metrics.pair_pixels) > 0.5 * gt[0].size  # the motion keeps most pixels in view
    assert metrics.pair_static_pixels[0] == metrics.pair_pixels[0] == gt[0].size  # still camera
    relative = np.log1p(gt)  # PPD-like relative log-depth: the fit is exact
    from_relative = temporal_metrics_of_relative(relative, gt, poses, camera)
    assert from_relative.tae < 1e-3 and from_relative.flicker < 1e-4


def test_metrics_grow_with_per_frame_scale_jitter(rendered_sequence):
    gt, poses, camera = rendered_sequence
    scales = np.random.default_rng(0).uniform(0.8, 1.25, len(gt))
    jittered = np.log1p(gt * scales[:, None, None])
    metrics = temporal_metrics_of_relative(jittered, gt, poses, camera)
    assert metrics.tae > 0.02 and metrics.flicker > 0.02
    # a per-frame gain on the log-depth: both metrics grow with its amplitude
    gains = np.random.default_rng(1).standard_normal(len(gt))
    by_amplitude = [temporal_metrics_of_relative(np.log1p(gt) * (1 + a * gains)[:, None, None], gt, poses, camera)
                    for a in (0.02, 0.05, 0.15)]
    assert by_amplitude[0].tae < by_amplitude[1].tae < by_amplitude[2].tae
    assert by_amplitude[0].flicker < by_amplitude[1].flicker < by_amplitude[2].flicker
    # fitting each frame on its own removes most of a per-frame scale change
    per_frame = temporal_metrics_of_relative(jittered, gt, poses, camera, per_frame_alignment=True)
    assert per_frame.tae < 0.25 * metrics.tae


def _translation_pose(x: float = 0.0, z: float = 0.0) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, 3] = (x, 0.0, z)
    return pose


def test_sideways_motion_matches_hand_computation():
    # plane at z = 2, f = 2: a 1 m step to the right shifts the image by exactly 1 px to the left
    camera = CameraModel.pinhole(2.0, 2.0, 2.5, 1.5, 6, 4)
    gt = np.full((2, 4, 6), 2.0, dtype=np.float32)
    poses = np.stack([_translation_pose(0.0), _translation_pose(1.0)])
    rng = np.random.default_rng(1)
    pred = rng.uniform(1.0, 3.0, (2, 4, 6))
    metrics = temporal_metrics(pred, gt, poses, camera)

    before, after = pred[0][:, 1:], pred[1][:, :-1]  # pixel (r, c) of frame 0 is (r, c-1) in frame 1
    assert metrics.pair_pixels == [4 * 5]
    assert metrics.tae == pytest.approx(np.mean(np.abs(before - after) / after), rel=1e-9)
    assert metrics.pair_static_pixels == [20]  # depth of each point unchanged
    assert metrics.flicker == pytest.approx(np.mean(np.abs(np.log(after / before))), rel=1e-9)


def test_forward_motion_with_scaled_prediction_matches_formula():
    # plane at z = 3, the camera moves 1 m towards it: a prediction k * GT moves to 3k - 1 but
    # frame 1 predicts 2k, so TAE = |k - 1| / (2k); the 33 % true depth change leaves no static pixel
    camera = CameraModel.pinhole(4.0, 4.0, 4.0, 4.0, 9, 9)
    gt = np.stack([np.full((9, 9), 3.0), np.full((9, 9), 2.0)]).astype(np.float32)
    poses = np.stack([_translation_pose(z=0.0), _translation_pose(z=1.0)])
    k = 1.3
    metrics = temporal_metrics(k * gt, gt, poses, camera)
    assert metrics.tae == pytest.approx(abs(k - 1) / (2 * k), rel=1e-6)  # float32 depth
    # pixel u maps to 4 + 1.5 (u - 4): inside the 9 px image for |u - 4| <= 8/3, i.e. 5 x 5 pixels
    assert metrics.pair_pixels == [25]
    assert metrics.pair_static_pixels == [0] and math.isnan(metrics.flicker)


def test_occluded_pixels_are_left_out():
    camera = CameraModel.pinhole(4.0, 4.0, 3.5, 2.5, 8, 6)
    gt0 = np.full((6, 8), 2.0, dtype=np.float32)
    gt1 = gt0.copy()
    gt1[1:3, 2:5] = 1.0  # something appeared in front in frame 1 (still camera)
    gt1[5, 7] = np.nan  # and one pixel has no depth
    corr = gt_correspondence(gt0, gt1, np.eye(4), np.eye(4), camera)
    seen = np.zeros((6, 8), dtype=bool)
    seen[corr.rows, corr.cols] = True
    expected = np.isclose(gt1, gt0)  # NaN compares unequal
    np.testing.assert_array_equal(seen, expected)


def test_sequence_alignment_is_one_log_space_fit():
    gt = np.random.default_rng(2).uniform(1.0, 5.0, (3, 4, 5))
    relative = 0.5 * np.log1p(gt) - 0.2  # an exact affine map of log(1 + GT)
    np.testing.assert_allclose(align_sequence(relative, gt), gt, rtol=1e-4)
    relative[1] *= 2  # one frame off-scale: a single fit cannot absorb it, a per-frame fit can
    assert not np.allclose(align_sequence(relative, gt), gt, rtol=1e-2)
    np.testing.assert_allclose(align_sequence(relative, gt, per_frame=True), gt, rtol=1e-3)


# --- bench plumbing --------------------------------------------------------------------------

def test_bench_video_prints_all_modes_and_the_random_weights_note(capsys):
    import argparse

    from ppd_ros.bench import video as bench_video

    parser = argparse.ArgumentParser()
    bench_video.add_arguments(parser)
    args = parser.parse_args(["--frames", "3", "--hold", "2", "--width", "32", "--height", "32",
                              "--steps", "1", "--device", "cpu", "--strides", "13,4"])
    assert bench_video.run(args) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split()[:2] for line in lines if line.startswith(("image ", "video "))]
    assert rows == [["image", "(tiny-random)"], ["video", "S=13"], ["video", "S=4"]]
    assert sum("only the plumbing is meaningful" in line for line in lines) == 2
    exact = next(line for line in lines if line.startswith("reference: exact depth"))
    assert float(exact.split()[3]) < 1e-3  # TAE of exact depth
