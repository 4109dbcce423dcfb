"""The one path from a camera frame to what ppd_ros publishes: model, metres, output camera,
flying-pixel-free organised cloud, colour map, the per-frame record and stage timings.

The depth node, ``ppd eval-bag``, ``ppd bench node`` and the demo all go through
:class:`FrameProcessor` (one per camera: it holds that camera's metric filter and stream state);
:func:`process_frames` serves several cameras from one backend, batching frames whose sizes match.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable

import numpy as np

from ppd_ros.backends.base import DepthBackend, DepthOutput
from ppd_ros.colormap import inverse_depth_rgb
from ppd_ros.geometry.camera import CameraModel
from ppd_ros.geometry.cloud import RemovalCounts
from ppd_ros.geometry.resize import resize_nearest
from ppd_ros.metric import LidarProjector
from ppd_ros.parameters import DepthConfig
from ppd_ros.pipeline.cloud import colour_cloud
from ppd_ros.pipeline.metric_depth import (FrameDepth, MetricDepth, depth_image_reference, moge_camera,
                                           moge_reference, pointcloud_reference)
from ppd_ros.pipeline.pairing import stamp_text

MOGE_CAMERA_KEY = "moge2-intrinsics"  # camera key of frames whose intrinsics MoGe-2 estimated
CLOUD, COLORED = "cloud", "colored"  # optional outputs a caller may ask for


class FrameRejected(ValueError):
    """This frame cannot be processed; the message says why (the frame is skipped and counted)."""


@dataclass
class MetricReference:
    """A metric reference paired with a frame: a registered depth image in metres (any resolution,
    NaN = none) or points (N, 3) in the reference sensor's frame (LiDAR)."""

    stamp_ns: int
    depth: np.ndarray | None = None
    points: np.ndarray | None = None


@dataclass
class FrameInput:
    """One decoded camera frame and what was paired with it."""

    rgb: np.ndarray  # (H, W, 3) uint8
    stamp_ns: int
    camera: CameraModel | None = None  # the paired CameraInfo as it came (fitted to the image here)
    reference: MetricReference | None = None
    tag: Any = None  # carried through to the result (the node passes the message header)
    decode_seconds: float = 0.0


@dataclass(frozen=True)
class FrameRecord:
    """The per-frame record (DepthFrame message, eval-bag CSV, diagnostics)."""

    is_metric: bool
    metric_source: str
    scale: float
    shift: float
    fit_residual: float
    fit_status: str  # ok | rejected_jump | reset | too_few_points | ... | no_reference | relative | fixed
    fit_inlier_ratio: float
    fit_points: int  # valid reference samples of this frame's fit
    filter_reset: str
    scale_age: float  # stamp seconds since the last accepted fit (moge2/sparse); NaN: none accepted yet
    scale_age_frames: int  # frames since the last accepted fit
    metric_stale: bool  # the held scale is older than metric_max_age
    camera_origin: str  # "camera_info" | "moge2" | "" (no camera: depth only)
    model: str
    steps: int
    inference_time: float
    latency_frames: int

    def depth_frame_fields(self, latency: float = 0.0, dropped: int = 0, skipped: int = 0) -> dict:
        """The scalar fields of a ``ppd_ros/DepthFrame`` message (msg/DepthFrame.msg) for this frame."""
        return dict(is_metric=self.is_metric, metric_source=self.metric_source, scale=self.scale, shift=self.shift,
                    fit_residual=self.fit_residual, fit_status=self.fit_status, scale_age=self.scale_age,
                    scale_age_frames=self.scale_age_frames, metric_stale=self.metric_stale, model=self.model,
                    steps=self.steps, inference_time=self.inference_time, latency=float(latency),
                    dropped_frames=int(dropped), skipped_frames=int(skipped))


@dataclass
class FrameResult:
    """What one frame gives. ``depth`` (metres, NaN = none) and ``relative`` are at the output
    resolution, with ``camera`` scaled to it; ``cloud`` is the organised (or flat) x y z rgb cloud
    of that depth (None without a camera or when not asked for)."""

    input: FrameInput
    relative: np.ndarray
    depth: np.ndarray
    camera: CameraModel | None
    cloud: np.ndarray | None
    removal: RemovalCounts | None
    colored: np.ndarray | None
    record: FrameRecord
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def depth_kind(self) -> str:
        return "metric" if self.record.is_metric else "relative"


def fit_camera_to_image(camera: CameraModel, width: int, height: int, mismatch: str) -> CameraModel:
    """The paired camera for a (width, height) image: validated, and scaled when its size differs
    and ``mismatch`` is ``scale`` (aspect ratios within 1%). Raises :class:`FrameRejected`."""
    try:
        camera.validate()
    except ValueError as error:
        raise FrameRejected(f"paired CameraInfo is unusable: {error}") from error
    if (camera.width, camera.height) == (width, height):
        return camera
    size_text = f"CameraInfo is {camera.width}x{camera.height} but the image is {width}x{height}"
    if mismatch == "reject":
        raise FrameRejected(f"{size_text} (camera_info_size_mismatch=reject; set it to scale if the image was "
                            "resized on purpose)")
    if abs(camera.width * height - camera.height * width) > 0.01 * camera.width * height:
        raise FrameRejected(f"{size_text}: aspect ratios differ, so the intrinsics cannot be scaled")
    return camera.scaled_to(width, height)


@dataclass
class _Waiting:
    frame: FrameInput
    camera: CameraModel | None
    wanted: frozenset


class FrameProcessor:
    """One camera's frames through ``backend`` and the post-model path, configured by ``config``
    (:class:`~ppd_ros.parameters.DepthConfig`, the node's parameters).

    :meth:`submit` returns the results that became ready (image models: this frame's; video
    models: the frames whose window ran, in order). In video mode a stamp gap, stamps going back or
    a changed camera restart the stream first (its pending frames are returned, then the metric
    filter restarts too).
    """

    def __init__(self, backend: DepthBackend, config: DepthConfig, stream: Hashable = 0):
        self.backend = backend
        self.stream = stream
        self.config = config
        self.metric = MetricDepth(config.metric_source, config.depth_scale, config.depth_shift,
                                  temporal_filter=config.metric_temporal_filter, max_gap_s=config.metric_max_gap,
                                  max_residual=config.metric_max_residual, seed=config.seed,
                                  max_age=config.metric_max_age, stale_output=config.metric_stale_output)
        self.projector = None
        if config.metric_source == "sparse" and config.metric_reference_type == "pointcloud":
            self.projector = LidarProjector(config.metric_lidar_translation, config.metric_lidar_rotation_xyzw)
        self._waiting: dict[int, _Waiting] = {}
        self._next_token = 0
        self._last_stamp: int | None = None
        self._stream_camera: CameraModel | None = None
        self.last_reset_reason = ""

    def update_config(self, config: DepthConfig) -> None:
        """Apply parameters that may change while running (see ``change`` in the parameter table)."""
        self.config = config
        self.metric.depth_scale, self.metric.depth_shift = config.depth_scale, config.depth_shift
        self.metric.max_age, self.metric.stale_output = config.metric_max_age, config.metric_stale_output

    # ------------------------------------------------------------------------------------ input
    def prepare(self, frame: FrameInput, wanted: Iterable[str] = (CLOUD,)) -> int:
        """Check a frame and hold it for :meth:`finish`; returns its token. Raises
        :class:`FrameRejected` for a bad frame (nothing is held then)."""
        rgb = frame.rgb
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or 0 in rgb.shape:
            raise FrameRejected(f"expected an (H, W, 3) uint8 RGB frame, got {rgb.shape} {rgb.dtype}")
        camera = None
        if frame.camera is not None:
            camera = fit_camera_to_image(frame.camera, rgb.shape[1], rgb.shape[0],
                                         self.config.camera_info_size_mismatch)
        token = self._next_token
        self._next_token += 1
        self._waiting[token] = _Waiting(frame, camera, frozenset(wanted))
        return token

    def discard(self, token: int) -> None:
        """Forget a prepared frame whose model run failed."""
        self._waiting.pop(token, None)

    def submit(self, frame: FrameInput, wanted: Iterable[str] = (CLOUD,)) -> list[FrameResult]:
        """Run one frame; returns the results that are ready now (see the class doc)."""
        token = self.prepare(frame, wanted)
        camera = self._waiting[token].camera
        results = []
        if self.backend.streaming:
            reason = self._stream_break(frame.stamp_ns, camera)
            if reason:
                results += self.reset(reason)
            self._last_stamp = frame.stamp_ns
            if camera is not None:
                self._stream_camera = camera
        try:
            outputs = self.backend.push(frame.rgb, token, self.stream)
        except Exception:
            self.discard(token)
            raise
        return results + [self.finish(output) for output in outputs]

    def flush(self) -> list[FrameResult]:
        """Results of the frames a stream still holds (nothing for image models)."""
        return [self.finish(output) for output in self.backend.flush(self.stream)]

    def reset(self, reason: str) -> list[FrameResult]:
        """Restart the stream (its pending frames are returned first) and the metric filter."""
        results = [self.finish(output) for output in self.backend.reset(self.stream, reason)]
        self.metric.reset()
        self._last_stamp, self._stream_camera = None, None
        self.last_reset_reason = reason
        return results

    @property
    def pending(self) -> int:
        return self.backend.pending(self.stream)

    def _stream_break(self, stamp_ns: int, camera: CameraModel | None) -> str:
        if self._last_stamp is not None:
            if stamp_ns < self._last_stamp:
                return "time_backwards"
            if stamp_ns - self._last_stamp > self.config.video_max_gap * 1e9:
                return "time_gap"
        if camera is not None and self._stream_camera is not None and camera != self._stream_camera:
            return "camera_changed"
        return ""

    # ------------------------------------------------------------------------------------ output
    def finish(self, output: DepthOutput) -> FrameResult:
        """The result of a model output whose tag is a token from :meth:`prepare`."""
        waiting = self._waiting.pop(output.tag)
        frame, camera, config = waiting.frame, waiting.camera, self.config
        timings = {"decode": frame.decode_seconds, "model": output.model_seconds}
        start = time.perf_counter()
        h, w = output.size
        origin = "camera_info" if camera is not None else ""
        if camera is None and output.intrinsics is not None and config.use_moge_intrinsics:
            camera, origin = moge_camera(output.intrinsics, w, h), "moge2"
        grid_camera = camera.scaled_to(w, h) if camera is not None else None
        metric = self._metric_depth(output, frame, grid_camera, origin)
        timings["metric"] = time.perf_counter() - start

        start = time.perf_counter()
        height, width = (h, w) if config.output_resolution == "inference" else frame.rgb.shape[:2]
        depth = resize_nearest(metric.depth, height, width)
        out_camera = camera.scaled_to(width, height) if camera is not None else None
        cloud = removal = None
        if out_camera is not None and CLOUD in waiting.wanted:
            cloud, removal = colour_cloud(depth, out_camera, frame.rgb, config.filter_flying_pixels,
                                          config.keep_organized, config.filter_thresholds)
        depth_np = depth.detach().cpu().numpy().astype(np.float32, copy=False)
        relative = resize_nearest(output.relative, height, width).detach().float().cpu().numpy()
        timings["geometry"] = time.perf_counter() - start

        colored = None
        if COLORED in waiting.wanted:
            start = time.perf_counter()
            colored = inverse_depth_rgb(depth_np)
            timings["colored"] = time.perf_counter() - start
        record = FrameRecord(
            is_metric=bool(metric.is_metric), metric_source=metric.source, scale=float(metric.scale),
            shift=float(metric.shift), fit_residual=float(metric.fit_residual), fit_status=metric.status,
            fit_inlier_ratio=float(metric.inlier_ratio), fit_points=int(metric.reference_points),
            filter_reset=metric.filter_reset, scale_age=float(metric.scale_age),
            scale_age_frames=int(metric.scale_age_frames), metric_stale=bool(metric.stale),
            camera_origin=origin if out_camera is not None else "",
            model=self.backend.spec.name, steps=int(self.backend.steps), inference_time=float(output.model_seconds),
            latency_frames=int(output.latency_frames))
        return FrameResult(frame, relative, depth_np, out_camera, cloud, removal, colored, record, timings)

    def _metric_depth(self, output: DepthOutput, frame: FrameInput, grid_camera, origin: str) -> FrameDepth:
        """This frame's depth through the metric source, on the inference grid."""
        h, w = output.size
        reference, mask = None, None
        if self.config.metric_source == "moge2" and output.metric_depth is not None:
            reference, mask = moge_reference(output.metric_depth, output.metric_mask)
        elif self.config.metric_source == "sparse" and frame.reference is not None:
            reference = self._reference_on_grid(frame.reference, grid_camera, h, w)
        camera_key = MOGE_CAMERA_KEY if origin == "moge2" else grid_camera
        return self.metric.map(output.relative, frame.stamp_ns * 1e-9, camera_key, reference, mask)

    def _reference_on_grid(self, reference: MetricReference, grid_camera, h: int, w: int):
        """The reference as the fit takes it: every valid depth-image pixel as a sample on the
        (h, w) grid, or the LiDAR cloud projected to a depth image on it."""
        if reference.depth is not None:
            return depth_image_reference(reference.depth, h, w)
        if grid_camera is None:  # a LiDAR cloud cannot be projected without intrinsics: no reference
            return None
        return pointcloud_reference(reference.points, self.projector, grid_camera, h, w)


def process_frames(items: list[tuple[FrameProcessor, FrameInput, Iterable[str]]]
                   ) -> list[tuple[FrameProcessor, FrameInput, list[FrameResult] | FrameRejected]]:
    """Frames of several cameras that share one backend, at once.

    Image models: frames of the same input size run as one batch. Video models: each frame goes to
    its camera's stream. Returns, per item, the results it produced (video: possibly none, or
    several) or the :class:`FrameRejected` that rejected it; other frames are not affected.
    """
    outcomes: list = [None] * len(items)
    if not items:
        return []
    backend = items[0][0].backend
    if backend.streaming:
        for i, (processor, frame, wanted) in enumerate(items):
            try:
                outcomes[i] = processor.submit(frame, wanted)
            except FrameRejected as error:
                outcomes[i] = error
        return [(p, f, o) for (p, f, _), o in zip(items, outcomes)]
    groups: dict[tuple, list[tuple[int, int]]] = {}  # input shape -> [(item index, token)]
    for i, (processor, frame, wanted) in enumerate(items):
        try:
            token = processor.prepare(frame, wanted)
        except FrameRejected as error:
            outcomes[i] = error
            continue
        groups.setdefault(tuple(frame.rgb.shape), []).append((i, token))
    for members in groups.values():
        try:
            outputs = backend.predict_batch([items[i][1].rgb for i, _ in members], [token for _, token in members])
        except Exception:
            for i, token in members:  # nothing of this batch will finish
                items[i][0].discard(token)
            raise
        for (i, _), output in zip(members, outputs):
            outcomes[i] = [items[i][0].finish(output)]
    return [(p, f, o) for (p, f, _), o in zip(items, outcomes)]


__all__ = ["CLOUD", "COLORED", "FrameInput", "FrameProcessor", "FrameRecord", "FrameRejected", "FrameResult",
           "MOGE_CAMERA_KEY", "MetricReference", "fit_camera_to_image", "process_frames", "stamp_text"]
