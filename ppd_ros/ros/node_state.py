"""The depth node's queues and per-camera state (worker and callbacks share them)."""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from sensor_msgs.msg import CompressedImage, Image

from ppd_ros.parameters import DepthConfig
from ppd_ros.pipeline import FrameProcessor, StampedBuffer
from ppd_ros.ros.diagnostics import MetricCounters, NodeStats


@dataclass
class QueuedFrame:
    msg: Image | CompressedImage
    received_at: float  # time.monotonic() at receipt
    generation: int  # activation it arrived in; frames of an earlier one are dropped


@dataclass
class StreamReset:
    """A queued request to restart a camera's video stream (after the frames queued before it)."""

    reason: str
    generation: int


class Mailbox:
    """Per-camera bounded FIFOs behind one condition. :meth:`put` drops a camera's oldest frame
    when its queue is full; :meth:`take` returns the first item of every camera that has one."""

    def __init__(self):
        self._condition = threading.Condition()
        self._queues: dict[str, deque] = {}

    def put(self, camera: str, item, capacity: int) -> bool:
        """Queue a frame; True when the camera's queue was full and its oldest frame was dropped."""
        with self._condition:
            queue = self._queues.setdefault(camera, deque())
            frames = [i for i, queued in enumerate(queue) if isinstance(queued, QueuedFrame)]
            dropped = len(frames) >= capacity
            if dropped:
                del queue[frames[0]]
            queue.append(item)
            self._condition.notify()
            return dropped

    def put_control(self, camera: str, item) -> None:
        """Queue a request that is never dropped and never drops a frame."""
        with self._condition:
            self._queues.setdefault(camera, deque()).append(item)
            self._condition.notify()

    def take(self, timeout: float) -> list[tuple[str, object]]:
        with self._condition:
            if not any(self._queues.values()):
                self._condition.wait(timeout)
            return [(camera, queue.popleft()) for camera, queue in self._queues.items() if queue]

    def clear(self) -> None:
        with self._condition:
            self._queues.clear()


@dataclass
class Camera:
    """One camera served by the node: its topics, pairing buffers, pipeline state and counters."""

    name: str  # "" = the node's own topics
    processor: FrameProcessor
    publishers: dict = field(default_factory=dict)
    subscriptions: list = field(default_factory=list)
    infos: StampedBuffer = field(default_factory=StampedBuffer)
    references: StampedBuffer = field(default_factory=lambda: StampedBuffer(capacity=32))
    stats: NodeStats = field(default_factory=NodeStats)
    metric: MetricCounters = field(default_factory=MetricCounters)
    camera_origin: str = ""
    last_push: float = 0.0  # monotonic time of the last frame pushed to a video stream
    latency_frames: deque = field(default_factory=lambda: deque(maxlen=30))
    warned: set = field(default_factory=set)
    error_log: dict = field(default_factory=dict)  # (error type, message start) -> (last logged, suppressed)

    def topic(self, name: str) -> str:
        return f"{self.name}/{name}" if self.name else name

    def subscribed(self, key: str) -> bool:
        publisher = self.publishers.get(key)
        return publisher is not None and publisher.get_subscription_count() > 0


@dataclass
class Session:
    """What configure builds and cleanup releases."""

    config: DepthConfig
    backend: object
    cameras: dict[str, Camera]
    generation: int = 0
    active: bool = False
    activated_at: float = 0.0
