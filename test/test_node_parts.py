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

from ppd_ros.ros.depth_node import (CameraInfoBuffer, NewestFrameSlot, PendingFrame, colorize_depth,  # noqa: E402
                                    relative_to_depth)
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
    slot = NewestFrameSlot()
    assert slot.put(PendingFrame("a", 0.0)) is False
    assert slot.put(PendingFrame("b", 1.0)) is True  # "a" dropped
    assert slot.take(timeout=0.0).msg == "b"
    assert slot.take(timeout=0.01) is None


def _info(sec: int, nanosec: int) -> CameraInfo:
    info = CameraInfo()
    info.header.stamp = Time(sec=sec, nanosec=nanosec)
    return info


def test_camera_info_pairing_exact_and_within_tolerance():
    buffer = CameraInfoBuffer()
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
