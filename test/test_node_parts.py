"""In-process checks of the depth node's parts that need rclpy: the per-camera mailbox and the
frame statistics (no DDS needed)."""
from __future__ import annotations

import pytest

pytest.importorskip("rclpy")

from ppd_ros.ros.node_state import Mailbox, QueuedFrame, StreamReset  # noqa: E402
from ppd_ros.ros.diagnostics import NodeStats  # noqa: E402


def _frame(name: str) -> QueuedFrame:
    return QueuedFrame(name, 0.0, 1)


def test_newest_frame_slot_per_camera_counts_replacements():
    mailbox = Mailbox()
    assert mailbox.put("front", _frame("a"), 1) is False
    assert mailbox.put("front", _frame("b"), 1) is True  # "a" dropped
    assert mailbox.put("rear", _frame("r"), 1) is False  # another camera never drops front's frame
    assert [(camera, item.msg) for camera, item in mailbox.take(timeout=0.0)] == [("front", "b"), ("rear", "r")]
    assert mailbox.take(timeout=0.01) == []


def test_video_queue_keeps_order_drops_oldest_and_never_drops_a_reset():
    mailbox = Mailbox()
    assert [mailbox.put("", _frame(name), 3) for name in "abc"] == [False, False, False]
    mailbox.put_control("", StreamReset("service", 1))
    assert mailbox.put("", _frame("d"), 3) is True  # full: "a" dropped, the reset stays
    taken = [mailbox.take(timeout=0.0)[0][1] for _ in range(4)]
    assert [getattr(item, "msg", None) or item.reason for item in taken] == ["b", "c", "service", "d"]
    assert mailbox.take(timeout=0.01) == []


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
