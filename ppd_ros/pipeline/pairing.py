"""Pairing messages by stamp: the one rule used by the node and by ``ppd eval-bag``.

An image pairs with the buffered message whose stamp is nearest its own, if that is within a
tolerance. A reference can be taken only once (unless reuse is allowed), so a missing reference is
never silently replaced by the one of the previous frame.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any


def stamp_to_ns(sec: int, nanosec: int) -> int:
    """A ROS stamp (sec, nanosec) as integer nanoseconds."""
    return int(sec) * 1_000_000_000 + int(nanosec)


def stamp_text(stamp_ns: int) -> str:
    """``sec.nanosec`` as ROS tools print a stamp."""
    return f"{stamp_ns // 1_000_000_000}.{stamp_ns % 1_000_000_000:09d}"


def nearest_within(entries, stamp_ns: int, tolerance_ns: int):
    """The entry (a sequence whose first item is a stamp in ns) nearest ``stamp_ns`` if within
    ``tolerance_ns``, else None; the earliest of equally near ones."""
    best = min(entries, key=lambda entry: abs(entry[0] - stamp_ns), default=None)
    if best is None or abs(best[0] - stamp_ns) > tolerance_ns:
        return None
    return best


class StampedBuffer:
    """The last ``capacity`` (stamp_ns, item) pairs, looked up by the stamp nearest a query.
    Thread-safe: callbacks add, the worker looks up."""

    def __init__(self, capacity: int = 64):
        self._lock = threading.Condition()
        self._entries: deque[list] = deque(maxlen=capacity)  # [stamp_ns, item, taken]
        self.received = 0

    def add(self, stamp_ns: int, item: Any) -> None:
        with self._lock:
            self._entries.append([int(stamp_ns), item, False])
            self.received += 1
            self._lock.notify_all()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def nearest(self, stamp_ns: int, tolerance_s: float, take: bool = False, wait_s: float = 0.0) -> Any | None:
        """The item of the stamp nearest ``stamp_ns`` within ``tolerance_s`` seconds, or None.
        With ``take`` an item is handed out once: later lookups skip it. With ``wait_s``, a lookup
        that finds nothing while every buffered stamp is older than ``stamp_ns`` waits up to that
        long for one to arrive (a camera publishes image and CameraInfo at the same moment, and
        the image callback may run first)."""
        deadline = time.monotonic() + wait_s
        with self._lock:
            while True:
                best = nearest_within([entry for entry in self._entries if not (take and entry[2])], stamp_ns,
                                      round(tolerance_s * 1e9))
                newest = max((entry[0] for entry in self._entries), default=None)
                left = deadline - time.monotonic()
                if best is not None or left <= 0 or (newest is not None and newest >= stamp_ns):
                    break
                self._lock.wait(left)
            if best is None:
                return None
            if take:
                best[2] = True
            return best[1]
