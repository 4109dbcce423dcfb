"""Frame counters and stage timings of the depth node, reported as diagnostic_msgs."""
from __future__ import annotations

import math
import threading
import time
from collections import deque

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

STAGES = ("decode", "model", "metric", "geometry", "publish")


class NodeStats:
    """Thread-safe counters: received / dropped / skipped / idle / published frames and stage times.

    Totals are cumulative. Rates count the events of the last ``window`` seconds; latency and stage
    times are means over the last ``recent`` published frames (both independent of how often
    :meth:`report` is called).
    """

    def __init__(self, window: float = 2.0, recent: int = 30, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self.window = window
        self.received = 0
        self.dropped = 0
        self.skipped = 0
        self.published = 0
        self.idle = 0
        self._received_times: deque[float] = deque()
        self._published_times: deque[float] = deque()
        self._recent: deque[tuple[float, dict[str, float]]] = deque(maxlen=recent)

    def _trim(self, times: deque, now: float) -> None:
        while times and times[0] < now - self.window:
            times.popleft()

    def frame_received(self) -> None:
        with self._lock:
            self.received += 1
            now = self._clock()
            self._received_times.append(now)
            self._trim(self._received_times, now)

    def frame_dropped(self) -> None:
        """A frame replaced by a newer one before it was processed."""
        with self._lock:
            self.dropped += 1

    def frame_skipped(self) -> None:
        """A frame rejected as bad input."""
        with self._lock:
            self.skipped += 1

    def frame_idle(self) -> None:
        """A frame not processed because nothing subscribes to any output."""
        with self._lock:
            self.idle += 1

    def frame_published(self, latency: float, stage_seconds: dict[str, float]) -> None:
        with self._lock:
            self.published += 1
            now = self._clock()
            self._published_times.append(now)
            self._trim(self._published_times, now)
            self._recent.append((latency, dict(stage_seconds)))

    def report(self) -> dict[str, float | int]:
        """Rates (Hz), mean latency and stage times (ms), and the totals."""
        with self._lock:
            now = self._clock()
            self._trim(self._received_times, now)
            self._trim(self._published_times, now)
            span = max(min(self.window, now - self._started), 1e-3)
            count = len(self._recent)
            result = {
                "input_rate_hz": len(self._received_times) / span,
                "output_rate_hz": len(self._published_times) / span,
                "latency_ms": 1000.0 * sum(lat for lat, _ in self._recent) / count if count else float("nan"),
            }
            for stage in STAGES:
                total = sum(stages.get(stage, 0.0) for _, stages in self._recent)
                result[f"{stage}_ms"] = 1000.0 * total / count if count else float("nan")
            result.update(received_frames=self.received, published_frames=self.published,
                          dropped_frames=self.dropped, skipped_frames=self.skipped,
                          idle_frames=self.idle)
            return result


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def diagnostic_status(name: str, hardware_id: str, level: bytes, message: str, values: dict) -> DiagnosticStatus:
    """One DiagnosticStatus (``level``: DiagnosticStatus.OK/WARN/ERROR) whose key/values are
    ``values`` formatted as text."""
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=key, value=_format(value)) for key, value in values.items()])


def diagnostic_array(stamp, statuses: list[DiagnosticStatus]) -> DiagnosticArray:
    array = DiagnosticArray()
    array.header.stamp = stamp
    array.status = statuses
    return array


class MetricCounters:
    """The metric step of one camera for diagnostics and the log (worker writes, timer reads)."""

    def __init__(self, warn_period: float = 5.0, clock=time.monotonic):
        self.last = None  # FrameRecord of the last published frame
        self._last_metric = None  # ... of the last one published in metres (the scale a reset replaces)
        self.references_paired = 0
        self.references_missing = 0
        self.filter_resets: dict[str, int] = {}
        self.fit_statuses: dict[str, int] = {}
        self._warn_period = warn_period
        self._clock = clock
        self._next_warning = -math.inf

    def record_pairing(self, paired: bool) -> None:
        if paired:
            self.references_paired += 1
        else:
            self.references_missing += 1

    def record(self, record, config=None) -> list[tuple[str, str]]:
        """Count one published frame; returns the log lines it calls for, as (level "info" |
        "warning", text) (``config`` given and the source fits scale/shift): a reset with the old
        and new scale; at most one warning per ``warn_period`` while the output is relative or
        stale, with why; one line when it is metric again."""
        previous, self.last = self.last, record
        held = self._last_metric  # whose scale a reset replaces
        if record.is_metric:
            self._last_metric = record
        if record.filter_reset:
            self.filter_resets[record.filter_reset] = self.filter_resets.get(record.filter_reset, 0) + 1
        self.fit_statuses[record.fit_status] = self.fit_statuses.get(record.fit_status, 0) + 1
        if config is None or not config.fits_scale:
            return []
        lines = []
        if record.fit_status == "reset" and held is not None:
            lines.append(("info", f"metric scale reset ({record.filter_reset}): scale {held.scale:.4g} -> "
                                  f"{record.scale:.4g}, shift {held.shift:.4g} -> {record.shift:.4g}"))
        trusted = record.is_metric and not record.metric_stale
        if not trusted:
            now = self._clock()
            if now >= self._next_warning:
                self._next_warning = now + self._warn_period
                lines.append(("warning", not_metric_text(config, record)))
        elif previous is not None and not (previous.is_metric and not previous.metric_stale):
            self._next_warning = -math.inf
            lines.append(("info", f"metric depth again: {config.metric_source} fit accepted "
                                  f"(scale {record.scale:.4g}, shift {record.shift:.4g})"))
        return lines


def _frame_status_text(record) -> str:
    if record.fit_status == "no_reference":
        return "no_reference (no reference paired with the frame)"
    if record.fit_status == "rejected_jump":
        return "rejected_jump (a fit far from the held scale, gated out)"
    residual = f", residual {record.fit_residual:.3g}" if math.isfinite(record.fit_residual) else ""
    return f"{record.fit_status} ({record.fit_points} reference points{residual})"


def not_metric_text(config, record) -> str:
    """Why a frame of a fitting source (moge2, sparse) is not (freshly) metric, in words."""
    no_depth = config.metric_stale_output == "no_depth"
    if record.metric_stale:
        what = "publishing NO depth (metric_stale_output no_depth)" if no_depth else "still applied"
        return (f"metric scale is STALE, {what}: held for {record.scale_age:.1f} s / {record.scale_age_frames} "
                f"frames since the last accepted fit (metric_max_age {config.metric_max_age:g} s); this frame: "
                f"{_frame_status_text(record)}")
    what = "publishing NO depth (metric_stale_output no_depth)" if no_depth else "depth is RELATIVE (not metric)"
    return (f"{what}: no {config.metric_source} fit accepted yet ({record.scale_age_frames} frames); this frame: "
            f"{_frame_status_text(record)}")


def metric_warning(config, counters: MetricCounters) -> str:
    """The diagnostics warning of the metric step ("" when the output is metric and fresh)."""
    if not config.fits_scale:
        return ""
    last = counters.last
    if last is None:
        return f"{config.metric_source} fit not (yet) successful"
    if last.metric_stale:
        return f"metric scale stale: held {last.scale_age:.1f} s since the last accepted fit ({last.fit_status})"
    if not last.is_metric:
        return f"{config.metric_source} fit not (yet) successful ({last.fit_status})"
    return ""


def metric_values(config, counters: MetricCounters, reference_topic: str) -> dict:
    """Diagnostic values of the metric step."""
    last = counters.last
    values = {"metric_source": config.metric_source}
    if last is not None:
        # scale/shift/residual with 6 significant digits (the default 2 decimals lose them)
        values.update(depth_kind="metric" if last.is_metric else "relative", scale=f"{last.scale:.6g}",
                      shift=f"{last.shift:.6g}", fit_residual=f"{last.fit_residual:.6g}", fit_status=last.fit_status)
        if config.fits_scale:
            values.update(fit_inlier_ratio=last.fit_inlier_ratio, fit_points=last.fit_points,
                          scale_age_s=last.scale_age, scale_age_frames=last.scale_age_frames,
                          metric_stale=last.metric_stale, metric_max_age_s=config.metric_max_age,
                          fit_statuses=_counts(counters.fit_statuses), filter_resets=_counts(counters.filter_resets))
    else:
        values["depth_kind"] = "metric" if config.metric_source == "fixed" else "relative"
    if config.metric_source == "sparse":
        values.update(reference_topic=reference_topic, reference_type=config.metric_reference_type,
                      references_paired=counters.references_paired, references_missing=counters.references_missing)
    return values


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(dict(counts).items()))


def video_values(backend, stream, latency_frames) -> dict:
    """Diagnostic values of one camera's video stream."""
    throughput = backend.throughput
    latency = list(latency_frames)
    return {"video_stride": backend.stride,
            "latency_frames": sum(latency) / len(latency) if latency else float("nan"),
            "max_latency_frames": backend.max_latency_frames,
            "stream_pending_frames": backend.pending(stream),
            "windows_run": throughput.windows,
            "window_ms": 1000.0 * throughput.seconds_per_window,
            "window_throughput_fps": throughput.frames_per_second,
            "stream_resets": ", ".join(f"{k}: {v}" for k, v in sorted(backend.resets(stream).items()))}


def diagnostic_values(status: DiagnosticStatus) -> dict[str, str]:
    """The key/values of a received status as a dict (for tests and tools)."""
    return {pair.key: pair.value for pair in status.values}
