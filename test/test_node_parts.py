"""In-process checks of the depth node's parts: parameter validation, newest-frame slot, CameraInfo
pairing by stamp, frame statistics, depth mapping and colour map (no DDS needed)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from sensor_msgs.msg import CameraInfo  # noqa: E402

from ppd_ros.ros.depth_node import (FrameQueue, PendingFrame, StampedBuffer, StreamReset,  # noqa: E402
                                    colorize_depth, relative_to_depth)
from ppd_ros.ros.diagnostics import NodeStats  # noqa: E402
from ppd_ros.ros.params import PARAMETERS, ParameterError, config_from_values  # noqa: E402

DEFAULTS = {spec.name: spec.default for spec in PARAMETERS}


def test_defaults_are_valid_and_each_problem_is_reported_once():
    config = config_from_values(dict(DEFAULTS))
    assert config.steps == 4 and not config.is_metric and config.metric_source == "none"
    bad = dict(DEFAULTS, model="nope", steps=-2, input_transport="udp", sync_tolerance=math.nan, output_depth=0)
    with pytest.raises(ParameterError) as caught:
        config_from_values(bad)
    problems = caught.value.problems
    assert len(problems) == 5
    for name in ("model", "steps", "input_transport", "sync_tolerance", "output_depth"):
        assert sum(f"parameter {name}=" in problem for problem in problems) == 1, problems


def test_filter_thresholds_disable_with_non_positive_values():
    config = config_from_values(dict(DEFAULTS, max_relative_jump=0.0, max_grazing_angle_deg=-1.0))
    assert config.filter_thresholds == {"max_relative_jump": None, "max_grazing_angle_deg": None}


def test_newest_frame_slot_counts_replacements():
    slot = FrameQueue(1)
    assert slot.put(PendingFrame("a", 0.0)) is False
    assert slot.put(PendingFrame("b", 1.0)) is True  # "a" dropped
    assert slot.take(timeout=0.0).msg == "b"
    assert slot.take(timeout=0.01) is None


def test_video_queue_keeps_order_drops_oldest_and_never_drops_a_reset():
    queue = FrameQueue(3)
    assert [queue.put(PendingFrame(name, 0.0)) for name in "abc"] == [False, False, False]
    queue.put_control(StreamReset("service"))
    assert queue.put(PendingFrame("d", 0.0)) is True  # full: "a" dropped, the reset stays
    taken = [queue.take(timeout=0.0) for _ in range(4)]
    assert [getattr(item, "msg", None) or item.reason for item in taken] == ["b", "c", "service", "d"]
    assert queue.take(timeout=0.01) is None


def _info(sec: int, nanosec: int) -> CameraInfo:
    info = CameraInfo()
    info.header.stamp = Time(sec=sec, nanosec=nanosec)
    return info


def test_camera_info_pairing_exact_and_within_tolerance():
    buffer = StampedBuffer()
    for nanosec in (0, 100_000_000, 200_000_000):
        buffer.add(_info(5, nanosec))
    assert buffer.nearest(Time(sec=5, nanosec=100_000_000), 0.0).header.stamp.nanosec == 100_000_000
    assert buffer.nearest(Time(sec=5, nanosec=190_000_000), 0.0) is None
    assert buffer.nearest(Time(sec=5, nanosec=190_000_000), 0.02).header.stamp.nanosec == 200_000_000
    assert buffer.nearest(Time(sec=6, nanosec=0), 0.5) is None


def test_stats_totals_and_means():
    now = [0.0]
    stats = NodeStats(window=2.0, clock=lambda: now[0])
    for _ in range(4):
        now[0] += 0.25
        stats.frame_received()
    stats.frame_dropped()
    stats.frame_skipped()
    stats.frame_published(0.010, {"decode": 0.001, "model": 0.005})
    stats.frame_published(0.030, {"decode": 0.003, "model": 0.007})
    report = stats.report()
    assert report["received_frames"] == 4 and report["dropped_frames"] == 1 and report["skipped_frames"] == 1
    assert report["input_rate_hz"] == pytest.approx(4 / 1.0)
    assert report["latency_ms"] == pytest.approx(20.0)
    assert report["decode_ms"] == pytest.approx(2.0) and report["model_ms"] == pytest.approx(6.0)
    assert report["geometry_ms"] == 0.0


def test_relative_to_depth_formula_and_invalid_values():
    relative = torch.tensor([[-0.5, 0.0, 0.5, -10.0]])
    depth = relative_to_depth(relative, 2.0, 1.5).numpy()
    np.testing.assert_allclose(depth[0, :3], [math.exp(0.5) - 1, math.exp(1.5) - 1, math.exp(2.5) - 1], rtol=1e-6)
    assert np.isnan(depth[0, 3])  # exp(-18.5) - 1 < 0: no depth


def test_colour_map_black_where_no_depth_and_ordered_by_distance():
    depth = np.tile(np.linspace(1.0, 10.0, 64, dtype=np.float32), (8, 1))
    depth[:, 0] = np.nan
    rgb = colorize_depth(depth)
    assert rgb.shape == (8, 64, 3) and rgb.dtype == np.uint8
    assert (rgb[:, 0] == 0).all() and (rgb[:, 1:].sum(-1) > 0).all()
    # turbo: near (high inverse depth) is red, far is blue
    assert rgb[0, 1, 0] > rgb[0, 1, 2] and rgb[0, -1, 2] > rgb[0, -1, 0]


# ------------------------------------------------------------------ metric plumbing (no DDS)
def _log_affine_scene(seed: int = 0):
    """Exact depth and a relative depth that is its log(d + 1) through a monotone affine map + noise."""
    rng = np.random.default_rng(seed)
    exact = rng.uniform(0.5, 8.0, (24, 32))
    relative = (np.log1p(exact) - 1.1) / 0.8 + 0.01 * rng.standard_normal(exact.shape)
    return exact, torch.from_numpy(relative.astype(np.float32))


def test_metric_depth_fixed_and_none_use_the_configured_mapping():
    from ppd_ros.ros.metric_depth import MetricDepth

    relative = torch.tensor([[0.0, 0.5]])
    for source, metric in (("none", False), ("fixed", True)):
        result = MetricDepth(source, 2.0, 1.5).map(relative)
        assert result.is_metric is metric and result.status == ("fixed" if metric else "relative")
        np.testing.assert_allclose(result.depth.numpy(), [[math.exp(1.5) - 1, math.exp(2.5) - 1]], rtol=1e-6)
        assert math.isnan(result.fit_residual)


def test_metric_depth_dense_reference_recovers_metres_and_holds_without_reference():
    from ppd_ros.ros.metric_depth import NO_REFERENCE, MetricDepth

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
    from ppd_ros.ros.metric_depth import MetricDepth

    exact, relative = _log_affine_scene()
    result = MetricDepth("sparse", 2.0, 1.5).map(relative, reference=np.full_like(exact, np.nan))
    assert not result.is_metric and result.status == "too_few_points"


def test_moge_intrinsics_and_reference_conventions():
    from ppd_ros.nets.moge_geometry import MetricGeometry
    from ppd_ros.ros.metric_depth import moge_camera, moge_reference

    # MoGe: the principal point at normalised 0.5 is the image centre, pixel centres at (j + 0.5) / w
    camera = moge_camera(torch.tensor([[0.8, 0.0, 0.5], [0.0, 1.2, 0.5], [0.0, 0.0, 1.0]]), 64, 48)
    assert (camera.fx, camera.fy) == pytest.approx((0.8 * 64, 1.2 * 48))
    assert (camera.cx, camera.cy) == pytest.approx(((64 - 1) / 2, (48 - 1) / 2))
    depth = torch.tensor([[1.0, float("inf")], [2.0, 3.0]])
    mask = torch.tensor([[True, False], [True, False]])
    geometry = MetricGeometry(depth, mask, torch.eye(3), torch.zeros(2, 2, 3), None, None)
    reference, valid = moge_reference(geometry)
    np.testing.assert_array_equal(valid, [[True, False], [True, False]])
    assert reference[0, 0] == 1.0 and reference[1, 0] == 2.0 and np.isnan(reference[[0, 1], [1, 1]]).all()


def test_metric_and_video_parameter_validation():
    cases = {
        "metric_source='moge2' needs model='ppd-moge2'": dict(metric_source="moge2", model="tiny-random"),
        "works in mode 'image' only": dict(metric_source="moge2", model="ppd-moge2", mode="video"),
        "metric_lidar_rotation_xyzw=[0.0, 0.0, 0.0, 0.0] is not a rotation": dict(
            metric_lidar_rotation_xyzw=[0.0, 0.0, 0.0, 0.0]),
        "metric_lidar_translation=[1.0, 2.0] must be 3 finite numbers": dict(metric_lidar_translation=[1.0, 2.0]),
        "video_stride=14 must be in 1..13": dict(video_stride=14),
        "metric_reference_tolerance=-1.0": dict(metric_reference_tolerance=-1.0),
        "video_model='ppvd2' is not one of": dict(video_model="ppvd2"),
    }
    for phrase, changes in cases.items():
        with pytest.raises(ParameterError) as caught:
            config_from_values(dict(DEFAULTS, **changes))
        assert len(caught.value.problems) == 1 and phrase in caught.value.problems[0], caught.value.problems
    config = config_from_values(dict(DEFAULTS, metric_source="moge2", model="ppd-moge2"))
    assert config.is_metric and config.fits_scale and "MoGe-2" in config.depth_kind_note
