"""The frame pipeline without ROS: stamp pairing, nearest resize, colour maps, the metric step and
FrameProcessor / process_frames on tiny models (outputs, cameras, batching, video resets)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ppd_ros.backends import BackendOptions, create_backend
from ppd_ros.colormap import inverse_depth_rgb, relative_depth_rgb
from ppd_ros.geometry.camera import CameraModel
from ppd_ros.geometry.resize import resize_nearest
from ppd_ros.metric.alignment import relative_to_metres
from ppd_ros.model_specs import model_spec
from ppd_ros.parameters import config_with
from ppd_ros.pipeline import (CLOUD, COLORED, FrameInput, FrameProcessor, FrameRejected, StampedBuffer,
                              fit_camera_to_image, process_frames)

AREA = 64 * 48


def _rgb(height=120, width=160, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _camera(width=160, height=120):
    return CameraModel.pinhole(100.0, 100.0, (width - 1) / 2, (height - 1) / 2, width, height)


@pytest.fixture(scope="module")
def image_backend():
    return create_backend(model_spec("tiny-random"), BackendOptions(device="cpu", steps=1, target_area=AREA))


# ------------------------------------------------------------------ small parts
def test_stamp_pairing_exact_within_tolerance_and_taken_once():
    buffer = StampedBuffer()
    for nanosec in (0, 100_000_000, 200_000_000):
        buffer.add(5_000_000_000 + nanosec, nanosec)
    assert buffer.nearest(5_100_000_000, 0.0) == 100_000_000
    assert buffer.nearest(5_190_000_000, 0.0) is None
    assert buffer.nearest(5_190_000_000, 0.02) == 200_000_000
    assert buffer.nearest(6_000_000_000, 0.5) is None
    assert buffer.nearest(5_200_000_000, 0.0, take=True) == 200_000_000
    assert buffer.nearest(5_200_000_000, 0.0, take=True) is None  # a reference pairs with one frame only
    assert buffer.nearest(5_200_000_000, 0.15, take=True) == 100_000_000


def test_nearest_resize_is_pixel_centre_aligned_for_numpy_and_torch():
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    up = resize_nearest(image, 6, 8)
    assert np.array_equal(up[::2, ::2], image) and np.array_equal(up[1::2, 1::2], image)
    down = resize_nearest(np.arange(16, dtype=np.float32).reshape(4, 4), 2, 2)
    assert np.array_equal(down, [[5, 7], [13, 15]])  # centres of 2x2 blocks: the lower-right pixel of each
    assert torch.equal(resize_nearest(torch.from_numpy(image), 6, 8), torch.from_numpy(up))
    expected = torch.nn.functional.interpolate(torch.from_numpy(image)[None, None], size=(5, 7),
                                               mode="nearest-exact")[0, 0]
    assert torch.equal(resize_nearest(torch.from_numpy(image), 5, 7), expected)


def test_relative_to_metres_formula_and_invalid_values():
    relative = torch.tensor([[-0.5, 0.0, 0.5, -10.0]])
    depth = relative_to_metres(relative, 2.0, 1.5).numpy()
    np.testing.assert_allclose(depth[0, :3], [math.exp(0.5) - 1, math.exp(1.5) - 1, math.exp(2.5) - 1], rtol=1e-6)
    assert np.isnan(depth[0, 3])  # exp(-18.5) - 1 < 0: no depth


def test_colour_maps_black_where_no_depth_and_ordered_by_distance():
    depth = np.tile(np.linspace(1.0, 10.0, 64, dtype=np.float32), (8, 1))
    depth[:, 0] = np.nan
    rgb = inverse_depth_rgb(depth)
    assert rgb.shape == (8, 64, 3) and rgb.dtype == np.uint8
    assert (rgb[:, 0] == 0).all() and (rgb[:, 1:].sum(-1) > 0).all()
    assert rgb[0, 1, 0] > rgb[0, 1, 2] and rgb[0, -1, 2] > rgb[0, -1, 0]  # turbo: near red, far blue
    relative = relative_depth_rgb(np.log1p(depth))
    assert relative[0, 1].sum() > relative[0, -1].sum()  # inferno: near bright


def test_camera_fitting_rules():
    camera = _camera(640, 480)
    assert fit_camera_to_image(camera, 640, 480, "reject") is camera
    with pytest.raises(FrameRejected, match="camera_info_size_mismatch=reject"):
        fit_camera_to_image(camera, 320, 240, "reject")
    assert fit_camera_to_image(camera, 320, 240, "scale").fx == pytest.approx(50.0)
    with pytest.raises(FrameRejected, match="aspect ratios differ"):
        fit_camera_to_image(camera, 320, 120, "scale")
    with pytest.raises(FrameRejected, match="unusable"):
        fit_camera_to_image(CameraModel.pinhole(0.0, 100.0, 5, 5, 10, 10), 10, 10, "scale")


# ------------------------------------------------------------------ metric step
def _log_affine_scene(seed: int = 0):
    """Exact depth and a relative depth that is its log(d + 1) through a monotone affine map + noise."""
    rng = np.random.default_rng(seed)
    exact = rng.uniform(0.5, 8.0, (24, 32))
    relative = (np.log1p(exact) - 1.1) / 0.8 + 0.01 * rng.standard_normal(exact.shape)
    return exact, torch.from_numpy(relative.astype(np.float32))


def test_metric_depth_fixed_and_none_use_the_configured_mapping():
    from ppd_ros.pipeline.metric_depth import MetricDepth

    relative = torch.tensor([[0.0, 0.5]])
    for source, metric in (("none", False), ("fixed", True)):
        result = MetricDepth(source, 2.0, 1.5).map(relative)
        assert result.is_metric is metric and result.status == ("fixed" if metric else "relative")
        np.testing.assert_allclose(result.depth.numpy(), [[math.exp(1.5) - 1, math.exp(2.5) - 1]], rtol=1e-6)
        assert math.isnan(result.fit_residual)


def test_metric_depth_dense_reference_recovers_metres_and_holds_without_reference():
    from ppd_ros.pipeline.metric_depth import NO_REFERENCE, MetricDepth

    exact, relative = _log_affine_scene()
    mapper = MetricDepth("moge2", 2.0, 1.5)
    before = mapper.map(relative, stamp=1.0, reference=None)  # nothing fitted yet: relative, flagged
    assert not before.is_metric and before.status == NO_REFERENCE and before.scale == 2.0
    first = mapper.map(relative, stamp=1.1, camera_key="cam", reference=exact)
    assert first.is_metric and first.status == "ok" and first.filter_reset == "first"
    assert first.scale == pytest.approx(0.8, rel=0.02) and first.shift == pytest.approx(1.1, abs=0.02)
    assert np.mean(np.abs(first.depth.numpy() - exact) / exact) < 0.02
    assert first.fit_residual < 0.02 and first.reference_points == exact.size
    held = mapper.map(relative, stamp=1.2, camera_key="cam", reference=None)
    assert held.is_metric and held.status == NO_REFERENCE and held.scale == first.scale
    changed = mapper.map(relative, stamp=1.3, camera_key="other camera", reference=exact)
    assert changed.filter_reset == "camera_changed"
    gap = mapper.map(relative, stamp=9.0, camera_key="other camera", reference=exact)
    assert gap.filter_reset == "time_gap"
    mapper.reset()
    assert not mapper.map(relative, reference=None).is_metric


def test_metric_depth_rejects_a_reference_it_cannot_fit():
    from ppd_ros.pipeline.metric_depth import MetricDepth

    exact, relative = _log_affine_scene()
    result = MetricDepth("sparse", 2.0, 1.5).map(relative, reference=np.full_like(exact, np.nan))
    assert not result.is_metric and result.status == "too_few_points"


def test_moge_intrinsics_and_reference_conventions():
    from ppd_ros.pipeline.metric_depth import moge_camera, moge_reference

    # MoGe: the principal point at normalised 0.5 is the image centre, pixel centres at (j + 0.5) / w
    camera = moge_camera(torch.tensor([[0.8, 0.0, 0.5], [0.0, 1.2, 0.5], [0.0, 0.0, 1.0]]), 64, 48)
    assert (camera.fx, camera.fy) == pytest.approx((0.8 * 64, 1.2 * 48))
    assert (camera.cx, camera.cy) == pytest.approx(((64 - 1) / 2, (48 - 1) / 2))
    depth = torch.tensor([[1.0, float("inf")], [2.0, 3.0]])
    mask = torch.tensor([[True, False], [True, False]])
    reference, valid = moge_reference(depth, mask)
    np.testing.assert_array_equal(valid, [[True, False], [True, False]])
    assert reference[0, 0] == 1.0 and reference[1, 0] == 2.0 and np.isnan(reference[[0, 1], [1, 1]]).all()


# ------------------------------------------------------------------ FrameProcessor
def test_result_at_inference_and_input_resolution(image_backend):
    rgb, camera = _rgb(), _camera()
    small = FrameProcessor(image_backend, config_with({"model": "tiny-random"})).submit(
        FrameInput(rgb, 1, camera), (CLOUD, COLORED))[0]
    assert small.depth.shape == (48, 64) and small.relative.shape == (48, 64)
    assert (small.camera.width, small.camera.height) == (64, 48) and small.camera.fx == pytest.approx(40.0)
    assert small.cloud.shape == (48, 64) and small.colored.shape == (48, 64, 3)
    assert small.removal.total == 48 * 64 and small.depth_kind == "relative"
    assert small.record.camera_origin == "camera_info" and small.record.model == "tiny-random"
    assert set(small.timings) >= {"decode", "model", "metric", "geometry", "colored"}
    np.testing.assert_allclose(small.depth, relative_to_metres(small.relative, small.record.scale,
                                                               small.record.shift), rtol=1e-6)
    big = FrameProcessor(image_backend, config_with({"model": "tiny-random", "output_resolution": "input"})).submit(
        FrameInput(rgb, 1, camera), ())[0]
    assert big.depth.shape == (120, 160) and big.camera is not None and big.cloud is None  # not asked for
    np.testing.assert_array_equal(big.depth, resize_nearest(small.depth, 120, 160))


def test_without_camera_depth_only_and_a_bad_camera_rejects_the_frame(image_backend):
    processor = FrameProcessor(image_backend, config_with({"model": "tiny-random"}))
    result = processor.submit(FrameInput(_rgb(), 1, None), (CLOUD,))[0]
    assert result.camera is None and result.cloud is None and result.record.camera_origin == ""
    with pytest.raises(FrameRejected, match="CameraInfo is 320x240"):
        processor.submit(FrameInput(_rgb(), 2, _camera(320, 240)))
    with pytest.raises(FrameRejected, match="uint8 RGB"):
        processor.submit(FrameInput(np.zeros((8, 8), np.uint8), 3))
    assert processor._waiting == {}


def test_cameras_batched_together_equal_each_alone(image_backend):
    config = config_with({"model": "tiny-random"})
    front, rear = FrameProcessor(image_backend, config, "front"), FrameProcessor(image_backend, config, "rear")
    frames = [FrameInput(_rgb(seed=1), 10, _camera()), FrameInput(_rgb(seed=2), 11, _camera()),
              FrameInput(np.zeros((4, 4), np.uint8), 12)]
    bad = FrameProcessor(image_backend, config, "bad")
    outcomes = process_frames([(front, frames[0], (CLOUD,)), (rear, frames[1], (CLOUD,)), (bad, frames[2], ())])
    assert isinstance(outcomes[2][2], FrameRejected)  # a bad frame of one camera does not stop the others
    for (_, frame, results), seed in zip(outcomes[:2], (1, 2)):
        alone = FrameProcessor(image_backend, config).submit(FrameInput(_rgb(seed=seed), 0, _camera()), (CLOUD,))[0]
        assert results[0].input is frame
        np.testing.assert_allclose(results[0].depth, alone.depth, rtol=1e-5, atol=1e-6)
        assert results[0].cloud.shape == alone.cloud.shape


def test_video_stream_restarts_on_gap_backwards_and_camera_change():
    backend = create_backend(model_spec("tiny-random-video"), BackendOptions(device="cpu", steps=1, video_stride=2))
    processor = FrameProcessor(backend, config_with({"mode": "video", "video_model": "tiny-random-video",
                                                     "video_max_gap": 0.5}))
    out = []
    for i in range(3):
        out += processor.submit(FrameInput(_rgb(seed=i), i * 100_000_000, _camera(), tag=i))
    assert out == [] and processor.pending == 3
    out += processor.submit(FrameInput(_rgb(), 2_000_000_000, _camera(), tag="gap"))
    assert [r.input.tag for r in out] == [0, 1, 2] and processor.last_reset_reason == "time_gap"
    out = processor.submit(FrameInput(_rgb(), 1_900_000_000, _camera(), tag="back"))
    assert [r.input.tag for r in out] == ["gap"] and processor.last_reset_reason == "time_backwards"
    out = processor.submit(FrameInput(_rgb(), 1_950_000_000, _camera(160, 120).scaled_to(160, 120), tag="same"))
    assert out == []  # an equal camera is no change
    other = CameraModel.pinhole(90.0, 90.0, 79.5, 59.5, 160, 120)
    out = processor.submit(FrameInput(_rgb(), 2_000_000_000, other, tag="changed"))
    assert [r.input.tag for r in out] == ["back", "same"] and processor.last_reset_reason == "camera_changed"
    rest = processor.flush()
    assert [r.input.tag for r in rest] == ["changed"] and rest[0].depth.shape == (64, 64)
    assert rest[0].camera.width == 64 and rest[0].record.latency_frames == 0


def test_pairing_waits_briefly_for_a_camera_info_still_in_flight():
    import threading
    import time

    buffer = StampedBuffer()
    buffer.add(1_000_000_000, "old")
    threading.Timer(0.02, lambda: buffer.add(2_000_000_000, "new")).start()
    assert buffer.nearest(2_000_000_000, 0.0, wait_s=1.0) == "new"  # arrived while waiting
    start = time.monotonic()
    assert buffer.nearest(1_500_000_000, 0.0, wait_s=1.0) is None  # a newer stamp is there: no wait
    assert time.monotonic() - start < 0.5
