"""Frame counters and stage timings of the depth node, reported as diagnostic_msgs."""
from __future__ import annotations

import threading
import time
from collections import deque

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

STAGES = ("decode", "model", "geometry", "publish")


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


def diagnostic_array(stamp, name: str, hardware_id: str, level: bytes, message: str,
                     values: dict) -> DiagnosticArray:
    """A DiagnosticArray with one status (``level``: DiagnosticStatus.OK/WARN/ERROR) whose key/values
    are ``values`` formatted as text."""
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                              values=[KeyValue(key=key, value=_format(value)) for key, value in values.items()])
    array = DiagnosticArray()
    array.header.stamp = stamp
    array.status = [status]
    return array


def diagnostic_values(status: DiagnosticStatus) -> dict[str, str]:
    """The key/values of a received status as a dict (for tests and tools)."""
    return {pair.key: pair.value for pair in status.values}
