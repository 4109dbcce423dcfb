"""Outputs of an evaluation run: an MCAP bag (depth, depth/camera_info, points, DepthFrame), a CSV
of per-frame metrics, and a markdown report with PNG plots drawn with OpenCV (error maps of the
worst frames, metrics over time, latency histogram). Bags are written with `rosbags`; the custom
``ppd_ros/msg/DepthFrame`` type is registered from msg/DepthFrame.msg."""
from __future__ import annotations

import csv
import heapq
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ppd_ros.evaluation.bag import typestore
from ppd_ros.geometry.resize import resize_nearest
from ppd_ros.paths import share_dir

DEPTH_FRAME_TYPE = "ppd_ros/msg/DepthFrame"
POINT_FIELD_FLOAT32 = 7


def depth_frame_definition() -> str:
    """Text of msg/DepthFrame.msg (source checkout or installed share directory)."""
    return (share_dir() / "msg" / "DepthFrame.msg").read_text()


def output_typestore():
    """Jazzy typestore with ppd_ros/msg/DepthFrame registered from its .msg text."""
    from rosbags.typesys import get_types_from_msg

    store = typestore()
    store.register(get_types_from_msg(depth_frame_definition(), DEPTH_FRAME_TYPE))
    return store


class OutputExistsError(FileExistsError, ValueError):
    """The output bag folder exists already and overwriting was not asked for."""


def _looks_like_bag(path: Path) -> bool:
    """A folder holding only what a rosbag2 bag holds (metadata.yaml, .mcap / .db3 files)."""
    return path.is_dir() and all(p.is_file() and (p.name == "metadata.yaml" or p.suffix in (".mcap", ".db3"))
                                 for p in path.iterdir())


class OutputBag:
    """MCAP rosbag2 (version 9) with ``<prefix>/depth``, ``<prefix>/depth/camera_info``,
    ``<prefix>/points`` and ``<prefix>/depth_frame``, stamped like the source images.

    ``path`` is the bag folder, named as rosbag2 names it: ``NAME/`` holding ``metadata.yaml`` and
    ``NAME_0.mcap`` (a trailing ``.mcap`` in ``path`` is dropped). An existing folder raises
    :class:`OutputExistsError` unless ``overwrite``, which replaces it only if it holds nothing
    but bag files.
    """

    def __init__(self, path: str | Path, prefix: str = "/ppd", with_points: bool = True,
                 overwrite: bool = False):
        from rosbags.rosbag2 import StoragePlugin, Writer

        path = Path(path)
        self.path = path.with_suffix("") if path.suffix == ".mcap" else path
        if self.path.exists():
            if not overwrite:
                raise OutputExistsError(f"output bag {self.path} exists already; remove it, choose another "
                                        f"output folder, or overwrite it (--overwrite)")
            if not _looks_like_bag(self.path):
                raise OutputExistsError(f"output bag {self.path} exists and holds files that are not part of "
                                        f"a bag; not deleting it")
            shutil.rmtree(self.path)
        self.store = output_typestore()
        self.types = self.store.types
        self.writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        # rosbags names the storage file NAME.mcap; rosbag2 (and tools that expect its layout) NAME_0.mcap.
        # The file is open already: renaming it keeps the handle, and the metadata takes the new name.
        storage = self.writer.storage
        self.storage_file = self.path / f"{self.path.name}_0.mcap"
        if getattr(storage, "path", None) is not None and Path(storage.path) != self.storage_file:
            Path(storage.path).rename(self.storage_file)
            storage.path = self.storage_file
        add = self.writer.add_connection
        self.depth = add(f"{prefix}/depth", "sensor_msgs/msg/Image", typestore=self.store)
        self.info = add(f"{prefix}/depth/camera_info", "sensor_msgs/msg/CameraInfo", typestore=self.store)
        self.points = (add(f"{prefix}/points", "sensor_msgs/msg/PointCloud2", typestore=self.store)
                       if with_points else None)
        self.frame = add(f"{prefix}/depth_frame", DEPTH_FRAME_TYPE, typestore=self.store)

    def _header(self, stamp_ns: int, frame_id: str):
        time = self.types["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000,
                                                         nanosec=stamp_ns % 1_000_000_000)
        return self.types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)

    def depth_image(self, header, depth: np.ndarray):
        depth = np.ascontiguousarray(depth, dtype="<f4")
        return self.types["sensor_msgs/msg/Image"](
            header=header, height=depth.shape[0], width=depth.shape[1], encoding="32FC1", is_bigendian=0,
            step=depth.shape[1] * 4, data=depth.view(np.uint8).reshape(-1))

    def camera_info(self, header, camera, width: int, height: int):
        """CameraInfo of the depth grid (zero intrinsics when the camera is unknown)."""
        t = self.types
        if camera is None:
            k, p, d, model = np.zeros(9), np.zeros(12), np.zeros(0), ""
        else:
            k = np.asarray(camera.K, dtype=np.float64).reshape(-1)
            p = (np.asarray(camera.P, dtype=np.float64) if camera.P is not None
                 else np.hstack([camera.K, np.zeros((3, 1))])).reshape(-1)
            d, model = np.asarray(camera.D, dtype=np.float64), camera.distortion_model
            model = "plumb_bob" if model == "none" else model
            if d.size == 0 and model == "plumb_bob":
                d = np.zeros(5)
        roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return t["sensor_msgs/msg/CameraInfo"](
            header=header, height=height, width=width, distortion_model=model, d=d, k=k,
            r=np.eye(3).reshape(-1), p=p, binning_x=0, binning_y=0, roi=roi)

    def point_cloud(self, header, cloud: np.ndarray):
        t = self.types
        fields = [t["sensor_msgs/msg/PointField"](name=name, offset=offset, datatype=POINT_FIELD_FLOAT32, count=1)
                  for name, offset in (("x", 0), ("y", 4), ("z", 8), ("rgb", 12))]
        height, width = cloud.shape if cloud.ndim == 2 else (1, cloud.shape[0])
        data = np.frombuffer(np.ascontiguousarray(cloud).tobytes(), dtype=np.uint8)
        return t["sensor_msgs/msg/PointCloud2"](
            header=header, height=height, width=width, fields=fields, is_bigendian=False,
            point_step=16, row_step=width * 16, data=data, is_dense=False)

    def write(self, stamp_ns: int, frame_id: str, depth: np.ndarray, camera, cloud: np.ndarray | None,
              record: dict) -> None:
        """One frame: depth (32FC1), its CameraInfo, the cloud (if any) and the DepthFrame record
        (``record`` holds DepthFrame's scalar fields)."""
        header = self._header(int(stamp_ns), frame_id)
        height, width = depth.shape
        image = self.depth_image(header, depth)
        info = self.camera_info(header, camera, width, height)
        serialize = self.store.serialize_cdr
        self.writer.write(self.depth, stamp_ns, serialize(image, "sensor_msgs/msg/Image"))
        self.writer.write(self.info, stamp_ns, serialize(info, "sensor_msgs/msg/CameraInfo"))
        if self.points is not None and cloud is not None:
            self.writer.write(self.points, stamp_ns,
                              serialize(self.point_cloud(header, cloud), "sensor_msgs/msg/PointCloud2"))
        frame = self.types[DEPTH_FRAME_TYPE](header=header, depth=image, camera_info=info, **record)
        self.writer.write(self.frame, stamp_ns, serialize(frame, DEPTH_FRAME_TYPE))

    def close(self) -> None:
        self.writer.close()


def write_csv(rows: list[dict], path: str | Path) -> None:
    """Per-frame rows (same keys in every row) as CSV."""
    path = Path(path)
    if not rows:
        path.write_text("")
        return
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# ------------------------------------------------------------------------------- worst frames
@dataclass(order=True)
class FrameSnapshot:
    """Small images of one frame kept for the report's error maps."""

    score: float
    index: int
    rgb: np.ndarray = field(compare=False)
    prediction: np.ndarray = field(compare=False)  # metres
    gt: np.ndarray = field(compare=False)  # metres, NaN invalid


class WorstFrames:
    """Keeps the ``count`` frames with the highest AbsRel (bounded memory)."""

    def __init__(self, count: int = 3, max_side: int = 320):
        self.count = count
        self.max_side = max_side
        self._heap: list[FrameSnapshot] = []

    def _small(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        factor = min(1.0, self.max_side / max(h, w))
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        return resize_nearest(image, size[1], size[0])

    def offer(self, score: float, index: int, rgb, prediction, gt) -> None:
        if not math.isfinite(score) or self.count <= 0:
            return
        if len(self._heap) == self.count and score <= self._heap[0].score:
            return
        h, w = prediction.shape
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        snapshot = FrameSnapshot(score, index, self._small(rgb), self._small(prediction), self._small(gt))
        if len(self._heap) < self.count:
            heapq.heappush(self._heap, snapshot)
        else:
            heapq.heapreplace(self._heap, snapshot)

    def worst_first(self) -> list[FrameSnapshot]:
        return sorted(self._heap, reverse=True)


def error_map_image(snapshot: FrameSnapshot, max_error: float = 0.25) -> np.ndarray:
    """BGR image for cv2.imwrite: RGB | prediction | GT | relative error (|pred - gt| / gt,
    0..max_error) side by side."""
    from ppd_ros.colormap import depth_range_rgb, error_rgb

    gt = snapshot.gt
    finite = np.isfinite(gt)
    lo, hi = (np.percentile(gt[finite], [2, 98]) if finite.any() else (0.0, 1.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        error = np.where(finite, np.abs(snapshot.prediction - gt) / gt, np.nan)
    panels = [snapshot.rgb, depth_range_rgb(snapshot.prediction, lo, hi), depth_range_rgb(gt, lo, hi),
              error_rgb(error, max_error)]
    panels = [cv2.cvtColor(np.ascontiguousarray(panel), cv2.COLOR_RGB2BGR) for panel in panels]
    labels = ["rgb", "prediction", "ground truth", f"AbsRel error 0..{max_error}"]
    for panel, label in zip(panels, labels):
        cv2.putText(panel, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return np.hstack(panels)


# ------------------------------------------------------------------------------- plots (OpenCV)
PLOT_COLOURS = [(200, 80, 20), (30, 140, 30), (20, 20, 200), (150, 50, 150), (0, 150, 200)]


def _axes(width: int, height: int, title: str, x_label: str, y_range: tuple[float, float], margin: int = 50):
    canvas = np.full((height, width, 3), 255, np.uint8)
    cv2.rectangle(canvas, (margin, 20), (width - 20, height - margin + 10), (0, 0, 0), 1)
    cv2.putText(canvas, title, (margin, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, x_label, (width // 2 - 30, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                cv2.LINE_AA)
    for fraction in (0.0, 0.5, 1.0):
        value = y_range[0] + fraction * (y_range[1] - y_range[0])
        y = int(height - margin + 10 - fraction * (height - margin - 10))
        cv2.putText(canvas, f"{value:.3g}", (2, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def line_plot(series: dict[str, list[float]], title: str, x_label: str, path: str | Path,
              width: int = 720, height: int = 300) -> None:
    """Each series against its index (NaN gaps skipped), one shared y axis, legend on top."""
    margin = 50
    values = np.concatenate([np.asarray(v, dtype=np.float64) for v in series.values()] or [np.zeros(1)])
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    canvas = _axes(width, height, title, x_label, (lo, hi), margin)
    n = max((len(v) for v in series.values()), default=1)
    x0, x1, y0, y1 = margin, width - 20, height - margin + 10, 20
    for k, (name, raw) in enumerate(series.items()):
        colour = PLOT_COLOURS[k % len(PLOT_COLOURS)]
        data = np.asarray(raw, dtype=np.float64)
        finite = np.isfinite(data)
        # pixel positions only for finite values: NaN / inf are missing (gaps), never converted to int
        points = [(int(x0 + (x1 - x0) * i / max(n - 1, 1)), int(y0 - (y0 - y1) * (v - lo) / (hi - lo)))
                  if finite[i] else None for i, v in enumerate(data)]
        for a, b in zip(points, points[1:]):
            if a is not None and b is not None:
                cv2.line(canvas, a, b, colour, 1, cv2.LINE_AA)
        for point in points:
            if point is not None:
                cv2.circle(canvas, point, 2, colour, -1)
        label = name if finite.any() else f"{name} (no values)"
        cv2.putText(canvas, label, (width - 160, 36 + 14 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
    cv2.imwrite(str(path), canvas)


def histogram_plot(values: list[float], title: str, x_label: str, path: str | Path, bins: int = 30,
                   width: int = 720, height: int = 300) -> None:
    """Histogram of the finite ``values`` (bar heights = counts), x range printed below."""
    data = np.asarray(values, dtype=np.float64)
    data = data[np.isfinite(data)]
    counts, edges = np.histogram(data, bins=bins) if data.size else (np.zeros(bins), np.linspace(0, 1, bins + 1))
    margin = 50
    canvas = _axes(width, height, title, f"{x_label}  [{edges[0]:.3g} .. {edges[-1]:.3g}]",
                   (0.0, float(max(counts.max(), 1))), margin)
    x0, x1, y0, y1 = margin, width - 20, height - margin + 10, 20
    bar = (x1 - x0) / bins
    for i, count in enumerate(counts):
        top = int(y0 - (y0 - y1) * count / max(counts.max(), 1))
        cv2.rectangle(canvas, (int(x0 + i * bar) + 1, top), (int(x0 + (i + 1) * bar) - 1, y0), PLOT_COLOURS[0], -1)
    cv2.imwrite(str(path), canvas)


# ------------------------------------------------------------------------------- markdown
def _format(value) -> str:
    """A table cell: floats to 4 significant digits, NaN / inf / None as "n/a"."""
    if value is None:
        return "n/a"
    if isinstance(value, (float, np.floating)):
        return "n/a" if not math.isfinite(value) else f"{float(value):.4g}"
    return str(value)


def write_markdown(path: str | Path, title: str, sections: list[tuple[str, list[str]]]) -> None:
    """A markdown file: title, then each (heading, lines) section."""
    lines = [f"# {title}", ""]
    for heading, body in sections:
        lines += [f"## {heading}", "", *body, ""]
    Path(path).write_text("\n".join(lines))


def table(rows: list[tuple[str, object]]) -> list[str]:
    """Two-column markdown table of (name, value)."""
    return ["| quantity | value |", "|---|---|", *(f"| {name} | {_format(value)} |" for name, value in rows)]
