"""Streaming video engine (ordering, tags, latency, resets, size changes, weights) and the
temporal consistency metrics (exact depth, scale jitter, hand-made examples)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ppd_ros.geometry.camera import CameraModel
from ppd_ros.synthetic import Scene, camera_trajectory, default_camera, render
from ppd_ros.temporal_metrics import (
    align_log_depth,
    gt_correspondence,
    temporal_metrics,
    temporal_metrics_of_relative,
)
from ppd_ros.video import VideoDepthStream
from ppd_ros.video_engine import VideoDepthEstimator
from ppd_ros.weights import WeightsMissingError


def _frames(count: int, height: int = 40, width: int = 56, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


@pytest.fixture(scope="module")
def engines():
    """One tiny estimator per stride (steps=1: only the plumbing is under test)."""
    return {s: VideoDepthEstimator.create("tiny-random-video", device="cpu", stride=s, steps=1)
            for s in (1, 4, 13)}


def _expected_emission_push(index: int, stride: int, pushed: int) -> int:
    """Push (0-based) after which frame ``index`` comes out by the window rule: the first window
    runs once stride + 3 frames are in, later ones every ``stride`` frames; frames left at the
    end come out at the flush (counted as the last push)."""
    first = stride + 2
    for push in range(index, pushed):
        if push == first or (push > first and (push - first) % stride == 0):
            return push
    return pushed - 1


# --- video engine ----------------------------------------------------------------------------

@pytest.mark.parametrize("stride,count", [(1, 9), (4, 16), (13, 10)])
def test_every_frame_once_in_order_with_tag_and_window_latency(engines, stride, count):
    estimator = engines[stride]
    estimator.reset("test")
    emitted_at = {}
    results = []
    for push, frame in enumerate(_frames(count, seed=stride)):
        for result in estimator.push(frame, tag=("header", push)):
            emitted_at[result.index] = push
            results.append(result)
    flushed = estimator.flush()
    results += flushed
    for result in flushed:
        emitted_at[result.index] = count - 1
    assert [r.index for r in results] == list(range(count))
    assert [r.tag for r in results] == [("header", i) for i in range(count)]
    assert estimator.pending == 0 and estimator.flush() == []
    for result in results:
        expected_push = _expected_emission_push(result.index, stride, count)
        assert emitted_at[result.index] == expected_push, result.index
        assert result.latency_frames == expected_push - result.index
        assert result.latency_seconds >= 0
        assert result.size == (40, 56) and result.depth.dtype == np.float32
        assert np.isfinite(result.depth).all()
    steady = [r.latency_frames for r in results if r.index >= stride + 3]
    assert max(steady, default=0) <= estimator.max_latency_frames
    assert max(r.latency_frames for r in results) <= estimator.startup_latency_frames


def test_engine_output_equals_the_stream(engines):
    estimator = engines[4]
    estimator.reset("test")
    stream = VideoDepthStream(estimator.semantics, estimator.dit, stride=4, steps=1, noise=estimator.seed)
    frames = _frames(9, seed=5)
    ours = [r for f in frames for r in estimator.push(f)] + estimator.flush()
    theirs = [o for f in frames for o in stream.push(f)] + stream.flush()
    assert len(ours) == len(theirs) == 9
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a.depth, b.depth)
    assert estimator.throughput.windows >= 3 and estimator.throughput.seconds_per_window > 0


def test_size_change_flushes_then_restarts(engines):
    estimator = engines[4]
    estimator.reset("test")
    small = _frames(5, 40, 56, seed=1)
    large = _frames(2, 48, 64, seed=2)
    out = [r for i, f in enumerate(small) for r in estimator.push(f, tag=f"s{i}")]
    assert [r.tag for r in out] == []  # 5 < 4 + 3 frames: nothing yet
    changed = estimator.push(large[0], tag="l0")
    assert [r.tag for r in changed] == [f"s{i}" for i in range(5)]
    assert all(r.size == (40, 56) for r in changed)
    assert estimator.resets.get("size change") == 1 and estimator.last_reset_reason == "size change"
    rest = estimator.push(large[1], tag="l1") + estimator.flush()
    assert [(r.tag, r.index, r.size) for r in rest] == [("l0", 0, (48, 64)), ("l1", 1, (48, 64))]


def test_reset_flushes_or_drops_and_restarts_the_sequence(engines):
    estimator = engines[4]
    frames = _frames(8, seed=3)
    estimator.reset("test")
    reference = [r for f in frames for r in estimator.push(f)] + estimator.flush()

    estimator.reset("test")
    for i, frame in enumerate(_frames(3, seed=9)):
        estimator.push(frame, tag=i)
    flushed = estimator.reset("time gap")
    assert [r.tag for r in flushed] == [0, 1, 2]
    estimator.push(frames[0], tag="dropped")
    assert estimator.reset("camera change", flush=False) == [] and estimator.pending == 0

    again = [r for f in frames for r in estimator.push(f)] + estimator.flush()
    assert [r.index for r in again] == list(range(8))
    for a, b in zip(again, reference):
        np.testing.assert_array_equal(a.depth, b.depth)  # a new sequence, same seed: same depth


def test_rejects_bad_input_and_arguments(engines):
    estimator = engines[13]
    with pytest.raises(ValueError, match="uint8 RGB"):
        estimator.push(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        estimator.push(np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="stride"):
        VideoDepthEstimator.create("tiny-random-video", device="cpu", stride=14)
    with pytest.raises(ValueError, match="unknown video model"):
        VideoDepthEstimator.create("ppd-da2", device="cpu")


def test_missing_weights_name_the_fetch_commands(tmp_path):
    with pytest.raises(WeightsMissingError) as error:
        VideoDepthEstimator.create("ppvd", weights_dir=tmp_path, device="cpu")
    assert "ppd fetch-weights ppvd" in str(error.value) and "ppd fetch-weights pi3" in str(error.value)
    (tmp_path / "ppvd.pth").write_bytes(b"")  # present (registry has no checksum yet), Pi3 absent
    with pytest.raises(WeightsMissingError) as error:
        VideoDepthEstimator.create("ppvd", weights_dir=tmp_path, device="cpu")
    assert "ppd fetch-weights pi3" in str(error.value) and "fetch-weights ppvd" not in str(error.value)


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
    np.testing.assert_allclose(align_log_depth(relative, gt), gt, rtol=1e-4)
    relative[1] *= 2  # one frame off-scale: a single fit cannot absorb it, a per-frame fit can
    assert not np.allclose(align_log_depth(relative, gt), gt, rtol=1e-2)
    np.testing.assert_allclose(align_log_depth(relative, gt, per_frame=True), gt, rtol=1e-3)


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
