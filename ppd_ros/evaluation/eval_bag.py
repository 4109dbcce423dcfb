"""`ppd eval-bag`: replay a recorded bag through the depth engine as fast as the hardware allows
and measure the result against ground truth recorded in the same bag.

Per frame: decode -> inference -> alignment (log-space affine fit to the GT for relative models,
or the MoGe-2 metric depth for ppd-moge2) -> organised cloud with flying pixels removed ->
metrics (AbsRel, delta1, boundary F1, flying-pixel share near GT edges, temporal change error)
-> outputs (MCAP bag, CSV, markdown report with plots). Comparisons happen on the inference grid:
the GT depth is resampled nearest (LiDAR GT is projected) onto it.
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ppd_ros.evaluation import metrics as M
from ppd_ros.evaluation.bag import ReadLog, StampPairer, list_topics, read_messages
from ppd_ros.evaluation.report import (
    OutputBag, WorstFrames, error_map_image, histogram_plot, line_plot, table, write_csv, write_markdown,
)
from ppd_ros.msg_decode import (
    camera_info_to_model, compressed_depth_to_metres, compressed_to_rgb8, depth_image_msg_to_metres, image_to_rgb8,
    pointcloud2_xyz, stamp_ns,
)

STAGES = ("decode_s", "inference_s", "align_s", "cloud_s", "metrics_s", "write_s")
SEQUENCE_SAMPLES_PER_FRAME = 2000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ppd_ros.cli import add_model_arguments
    from ppd_ros.engine import MODEL_NAMES

    parser.add_argument("bag", help="rosbag2 folder (mcap or sqlite3), .mcap/.db3 file or ROS 1 .bag")
    parser.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage")
    parser.add_argument("--camera-info-topic", default=None, help="CameraInfo of the images (needed for points)")
    gt = parser.add_mutually_exclusive_group()
    gt.add_argument("--gt-depth-topic", default=None, help="GT depth Image (32FC1 m / 16UC1 mm) or compressedDepth")
    gt.add_argument("--gt-points-topic", default=None, help="GT PointCloud2 (LiDAR), projected with the camera")
    parser.add_argument("--lidar-extrinsic", type=float, nargs=7, default=[0, 0, 0, 0, 0, 0, 1],
                        metavar=("X", "Y", "Z", "QX", "QY", "QZ", "QW"),
                        help="pose of the GT cloud's frame in the camera optical frame (default identity)")
    parser.add_argument("--mode", choices=("image", "video"), default="image",
                        help="image: per-frame model; video: the streaming video model (PPVD)")
    parser.add_argument("--video-stride", type=int, default=13, help="video mode: new frames per window (1..13)")
    parser.add_argument("--alignment", choices=("auto", "gt", "none"), default="auto",
                        help="gt: per-frame log-space affine fit to the GT; none: the model's metric depth "
                             "(ppd-moge2); auto: none for metric models, gt otherwise")
    parser.add_argument("--stamp-tolerance", type=float, default=0.02, help="max |image - GT| stamp gap (s)")
    parser.add_argument("--min-depth", type=float, default=0.0, help="GT below this is invalid (m)")
    parser.add_argument("--max-depth", type=float, default=math.inf, help="GT at/above this is invalid (m)")
    parser.add_argument("--rectified", action="store_true", help="images are rectified (use CameraInfo.P)")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--no-points", action="store_true", help="do not write point clouds to the output bag")
    parser.add_argument("--worst-frames", type=int, default=3, help="error maps of this many worst frames")
    parser.add_argument("--output", default=None, help="output folder (default: <bag>_eval beside the bag)")
    add_model_arguments(parser, default=None, choices=MODEL_NAMES + video_model_names(),
                        model_help="default: ppd-da2 (image mode), ppvd (video mode)")


def video_model_names() -> tuple[str, ...]:
    """Names of the video engine's models (none when it is not installed)."""
    try:
        from ppd_ros.video_engine import VIDEO_MODEL_NAMES
    except ImportError:
        return ()
    return tuple(VIDEO_MODEL_NAMES)


# ------------------------------------------------------------------------------- predictors
class ImagePredictor:
    """Per-frame model: every pushed frame comes straight back with its depth."""

    def __init__(self, estimator):
        self.estimator = estimator
        self.is_metric = estimator.is_metric

    def push(self, rgb: np.ndarray, tag) -> list[tuple[object, np.ndarray, float, object]]:
        """-> [(tag, relative depth (h, w), inference seconds, MoGe-2 metric geometry or None)]"""
        prediction = self.estimator.predict(rgb)
        return [(tag, prediction.depth_numpy(), prediction.seconds, prediction.metric)]

    def flush(self) -> list:
        return []


class VideoPredictor:
    """The causal video model (:class:`ppd_ros.video_engine.VideoDepthEstimator`): frames come
    back once their window ran; the inference time of a window is shared equally by the frames
    it emits."""

    is_metric = False

    def __init__(self, estimator):
        self.estimator = estimator

    @classmethod
    def create(cls, args) -> "VideoPredictor":
        try:
            from ppd_ros.video_engine import VideoDepthEstimator
        except ImportError as error:
            raise ValueError(f"--mode video needs the video engine (ppd_ros.video_engine): {error}") from error
        return cls(VideoDepthEstimator.create(args.model, args.weights_dir, args.device, args.video_stride,
                                              args.steps, args.seed))

    def _timed(self, call) -> list:
        start = time.perf_counter()
        outputs = call()
        share = (time.perf_counter() - start) / max(len(outputs), 1)
        return [(out.tag, np.asarray(out.depth, dtype=np.float32), share, None) for out in outputs]

    def push(self, rgb: np.ndarray, tag) -> list:
        return self._timed(lambda: self.estimator.push(rgb, tag))

    def flush(self) -> list:
        return self._timed(self.estimator.flush)


# ------------------------------------------------------------------------------- frame state
@dataclass
class PendingFrame:
    index: int
    stamp: int
    frame_id: str
    rgb: np.ndarray
    camera: object  # CameraModel or None
    decode_s: float
    gt: object = None  # (kind, array): ("depth", metres) or ("points", xyz)
    gt_decode_s: float = 0.0


class Evaluation:
    """Per-frame processing and accumulated results of one run."""

    def __init__(self, args, predictor, out_dir: Path):
        self.args = args
        self.predictor = predictor
        self.alignment = args.alignment if args.alignment != "auto" else ("none" if predictor.is_metric else "gt")
        self.out_bag = OutputBag(out_dir / "depth", with_points=not args.no_points)
        self.rows: list[dict] = []
        self.worst = WorstFrames(args.worst_frames)
        self.previous = None  # (metric depth, gt, valid) of the last frame
        self.sequence_samples: list[tuple[np.ndarray, np.ndarray]] = []
        self.rng = np.random.default_rng(0)
        self.notes: set[str] = set()
        self.pending: dict[int, PendingFrame] = {}
        if args.gt_points_topic:
            from ppd_ros.metric.sparse import LidarProjector

            extrinsic = args.lidar_extrinsic
            self.projector = LidarProjector(extrinsic[:3], extrinsic[3:])

    def submit(self, frame: PendingFrame) -> None:
        """Run the model on a frame (with its GT attached) and finish whatever came back."""
        self.pending[frame.index] = frame
        for tag, relative, seconds, metric in self.predictor.push(frame.rgb, frame.index):
            self.finish(self.pending.pop(tag), relative, seconds, metric)

    def flush(self) -> None:
        for tag, relative, seconds, metric in self.predictor.flush():
            self.finish(self.pending.pop(tag), relative, seconds, metric)

    def _gt_on_grid(self, frame: PendingFrame, camera, h: int, w: int) -> np.ndarray | None:
        from ppd_ros.metric.sparse import resample_nearest

        if frame.gt is None:
            return None
        kind, data = frame.gt
        if kind == "depth":
            return resample_nearest(data, h, w).astype(np.float32)
        if camera is None:
            self.notes.add("GT points need --camera-info-topic to be projected; frames without it have no GT")
            return None
        return self.projector.project(data, camera.K, h, w)

    def _align(self, relative, gt, valid, metric) -> tuple[np.ndarray | None, float, float, float, str]:
        """(metric depth or None, scale, shift, fit residual, source)."""
        from ppd_ros.metric.alignment import apply_alignment, fit_log_depth

        if self.alignment == "gt":
            if gt is None or valid.sum() < 2:
                return None, math.nan, math.nan, math.nan, "none"
            depth, scale, shift = M.align_log_depth(relative, gt, valid)
            residual = float(np.sqrt(np.mean((scale * relative[valid] + shift - np.log1p(gt[valid])) ** 2)))
            return depth, scale, shift, residual, "gt"
        if metric is None:
            self.notes.add("alignment none needs a metric model (ppd-moge2); depth stays relative")
            return None, math.nan, math.nan, math.nan, "none"
        fit = fit_log_depth(relative, metric.depth.float().cpu().numpy(), metric.mask.cpu().numpy())
        if not fit.ok:
            return None, math.nan, math.nan, math.nan, "none"
        return apply_alignment(relative, fit.scale, fit.shift), fit.scale, fit.shift, fit.residual, "moge2"

    def finish(self, frame: PendingFrame, relative: np.ndarray, inference_s: float, metric) -> None:
        from ppd_ros.geometry.cloud import depth_to_cloud

        h, w = relative.shape
        camera = frame.camera.scaled_to(w, h) if frame.camera is not None else None
        start = time.perf_counter()
        gt = self._gt_on_grid(frame, camera, h, w)
        valid = (M.gt_valid_mask(gt, min_depth=self.args.min_depth, max_depth=self.args.max_depth)
                 if gt is not None else np.zeros((h, w), bool))
        depth, scale, shift, residual, source = self._align(relative, gt, valid, metric)
        align_s = time.perf_counter() - start

        start = time.perf_counter()
        cloud = cloud_depth = None
        if camera is not None and depth is not None:
            cloud, _counts = depth_to_cloud(depth, camera, frame.rgb)
            cloud_depth = cloud["z"].astype(np.float32)
        elif camera is None:
            self.notes.add("no CameraInfo: no point clouds and no flying-pixel share")
        cloud_s = time.perf_counter() - start

        start = time.perf_counter()
        result = M.FrameMetrics()
        if depth is not None and gt is not None and valid.any():
            result = M.depth_metrics(depth, gt, valid)
            if cloud_depth is not None:
                result.flying_share, result.edge_points = M.flying_pixel_share(cloud_depth, gt, valid)
            if self.previous is not None and self.previous[0].shape == depth.shape:
                result.temporal_error = M.temporal_change_error(depth, gt, valid, *self.previous)
            self.previous = (depth, gt, valid)
            self._sample_sequence(relative, gt, valid)
            self.worst.offer(result.abs_rel, frame.index, frame.rgb, depth, np.where(valid, gt, np.nan))
        metrics_s = time.perf_counter() - start

        start = time.perf_counter()
        published = depth if depth is not None else relative
        record = dict(is_metric=depth is not None, metric_source=source,
                      scale=_f32(scale), shift=_f32(shift), fit_residual=_f32(residual),
                      model=self.args.model, steps=self.args.steps, inference_time=float(inference_s),
                      latency=0.0, dropped_frames=0, skipped_frames=0)
        self.out_bag.write(frame.stamp, frame.frame_id, published, camera, cloud, record)
        write_s = time.perf_counter() - start

        timings = dict(decode_s=frame.decode_s + frame.gt_decode_s, inference_s=inference_s, align_s=align_s,
                       cloud_s=cloud_s, metrics_s=metrics_s, write_s=write_s)
        self.rows.append(dict(
            frame=frame.index, stamp_ns=frame.stamp, has_gt=gt is not None, metric_source=source,
            abs_rel=result.abs_rel, delta1=result.delta1, boundary_f1=result.boundary_f1,
            flying_share=result.flying_share, edge_points=result.edge_points,
            temporal_error=result.temporal_error, valid_pixels=result.valid_pixels,
            scale=scale, shift=shift, **timings, total_s=sum(timings.values()),
        ))

    def _sample_sequence(self, relative, gt, valid) -> None:
        index = np.flatnonzero(valid)
        if index.size > SEQUENCE_SAMPLES_PER_FRAME:
            index = self.rng.choice(index, SEQUENCE_SAMPLES_PER_FRAME, replace=False)
        self.sequence_samples.append((relative.reshape(-1)[index], gt.reshape(-1)[index]))

    def sequence_metrics(self) -> tuple[float, float]:
        """AbsRel and delta1 with ONE log-space alignment for the whole run (on sampled pixels):
        how consistent the relative depth is across frames."""
        if self.alignment != "gt" or not self.sequence_samples:
            return math.nan, math.nan
        relative = np.concatenate([r for r, _ in self.sequence_samples])[None]
        gt = np.concatenate([g for _, g in self.sequence_samples])[None]
        valid = np.ones_like(gt, dtype=bool)
        depth, _, _ = M.align_log_depth(relative, gt, valid)
        return M.abs_rel(depth, gt, valid), M.delta1(depth, gt, valid)

    def close(self) -> None:
        self.out_bag.close()


def _f32(value: float) -> float:
    return float(np.float32(value))


def _mean(rows: list[dict], key: str) -> float:
    values = np.array([row[key] for row in rows], dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else math.nan


# ------------------------------------------------------------------------------- run
def decode_gt(message, kind: str):
    if kind == "points":
        return ("points", pointcloud2_xyz(message.msg))
    if message.msgtype.endswith("CompressedImage"):
        return ("depth", compressed_depth_to_metres(message.msg))
    return ("depth", depth_image_msg_to_metres(message.msg))


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    bag = Path(args.bag)
    out_dir = Path(args.output) if args.output else bag.parent / f"{bag.stem}_eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    topics = list_topics(bag)
    if topics and args.image_topic not in topics:
        raise ValueError(f"image topic {args.image_topic!r} not in the bag; topics: {', '.join(sorted(topics))}")

    if args.model is None:
        args.model = "ppvd" if args.mode == "video" else "ppd-da2"
    if args.mode == "video":
        predictor = VideoPredictor.create(args)
        model_note = f"video model, stride {args.video_stride}"
    else:
        from ppd_ros.engine import DepthEstimator

        predictor = ImagePredictor(DepthEstimator.create(args.model, args.weights_dir, args.device, args.steps,
                                                         args.target_area, args.seed))
        model_note = f"image model on {predictor.estimator.device}"
    gt_topic = args.gt_depth_topic or args.gt_points_topic
    gt_kind = "points" if args.gt_points_topic else "depth"
    wanted = {args.image_topic} | {t for t in (args.camera_info_topic, gt_topic) if t}

    evaluation = Evaluation(args, predictor, out_dir)
    log = ReadLog(str(bag))
    pairer = StampPairer(int(args.stamp_tolerance * 1e9), expect_references=gt_topic is not None)
    camera = None
    images_seen = 0
    started = time.perf_counter()
    progress = tqdm(desc="ppd eval-bag", unit="frame")

    def process(pairs) -> None:
        for frame, gt in pairs:
            if gt is not None:
                frame.gt, frame.gt_decode_s = gt
            evaluation.submit(frame)
            progress.update(1)

    try:
        for message in read_messages(bag, wanted, log):
            if (args.max_frames is not None and images_seen >= args.max_frames
                    and message.topic == args.image_topic):
                break  # stop at the first image past the limit: GT of earlier images may still come
            try:
                if message.topic == args.camera_info_topic:
                    camera = camera_info_to_model(message.msg, rectified=args.rectified)
                elif message.topic == args.image_topic:
                    start = time.perf_counter()
                    compressed = message.msgtype.endswith("CompressedImage")
                    rgb = compressed_to_rgb8(message.msg) if compressed else image_to_rgb8(message.msg)
                    frame = PendingFrame(images_seen, stamp_ns(message.msg), message.msg.header.frame_id, rgb,
                                         camera, time.perf_counter() - start)
                    images_seen += 1
                    process(pairer.add_image(frame.stamp, frame))
                elif message.topic == gt_topic:
                    start = time.perf_counter()
                    gt = decode_gt(message, gt_kind)
                    process(pairer.add_reference(stamp_ns(message.msg), (gt, time.perf_counter() - start)))
            except ValueError as error:
                log.skip(f"{message.topic} @ {message.log_time_ns}: {error}")
        process(pairer.finish())
        evaluation.flush()
    finally:
        progress.close()
        evaluation.close()
    wall = time.perf_counter() - started

    write_csv(evaluation.rows, out_dir / "frames.csv")
    write_report(out_dir, args, evaluation, log, wall, model_note)
    print(f"evaluated {len(evaluation.rows)} frames in {wall:.1f} s -> {out_dir}")
    print(f"  AbsRel {_mean(evaluation.rows, 'abs_rel'):.4f}  delta1 {_mean(evaluation.rows, 'delta1'):.4f}  "
          f"boundary F1 {_mean(evaluation.rows, 'boundary_f1'):.4f}")
    if log.damage or log.skipped:
        print(f"  bag: {log.summary()}")
    return 0 if evaluation.rows else 1


def write_report(out_dir: Path, args, evaluation: Evaluation, log: ReadLog, wall: float, model_note: str) -> None:
    rows = evaluation.rows
    sequence_abs_rel, sequence_delta1 = evaluation.sequence_metrics()
    with_gt = sum(1 for row in rows if row["has_gt"])
    summary = [
        ("frames evaluated", len(rows)), ("frames with GT", with_gt),
        ("AbsRel (mean of frames)", _mean(rows, "abs_rel")), ("delta1 (mean of frames)", _mean(rows, "delta1")),
        ("depth-boundary F1", _mean(rows, "boundary_f1")),
        ("flying-pixel share near GT edges", _mean(rows, "flying_share")),
        ("temporal change error |Δlog pred - Δlog GT|", _mean(rows, "temporal_error")),
        ("AbsRel, one alignment for the whole run", sequence_abs_rel),
        ("delta1, one alignment for the whole run", sequence_delta1),
    ]
    latency = []
    for stage in (*STAGES, "total_s"):
        values = np.array([row[stage] for row in rows]) * 1000 if rows else np.zeros(0)
        if values.size:
            latency.append((f"{stage[:-2]} median / p95 (ms)",
                            f"{np.median(values):.1f} / {np.percentile(values, 95):.1f}"))
    fps = len(rows) / wall if wall > 0 else math.nan
    latency.append(("throughput (frames/s)", fps))

    line_plot({name: [row[name] for row in rows] for name in ("abs_rel", "delta1", "boundary_f1")},
              "metrics per frame", "frame", out_dir / "metrics_over_time.png")
    histogram_plot([row["total_s"] * 1000 for row in rows], "latency per frame (all stages)", "ms",
                   out_dir / "latency_histogram.png")
    worst_lines = []
    for snapshot in evaluation.worst.worst_first():
        name = f"worst_frame_{snapshot.index:06d}.png"
        import cv2

        cv2.imwrite(str(out_dir / name), error_map_image(snapshot))
        worst_lines.append(f"Frame {snapshot.index}: AbsRel {snapshot.score:.4f}\n\n![frame {snapshot.index}]({name})\n")

    reading = [f"- {log.messages_read} messages read ({log.storage}, reader: {log.reader})"
               + (f", {log.expected_messages} expected" if log.expected_messages is not None else "")]
    if log.damage:
        reading.append(f"- **The bag is damaged: evaluated up to the damage.** {log.damage}")
    for reason in log.skipped[:50]:
        reading.append(f"- skipped: {reason}")
    if len(log.skipped) > 50:
        reading.append(f"- ... and {len(log.skipped) - 50} more skipped")
    run_lines = [f"- bag: `{args.bag}`", f"- image topic: `{args.image_topic}`",
                 f"- GT: `{args.gt_depth_topic or args.gt_points_topic or 'none'}`",
                 f"- model: {args.model} ({model_note}), {args.steps} steps, mode {args.mode}",
                 f"- alignment: {evaluation.alignment}", f"- wall time: {wall:.1f} s"]
    if args.model.startswith("tiny-random"):
        run_lines.append("- **tiny-random is an untrained smoke-test network: its numbers are not depth quality.**")
    run_lines += [f"- note: {note}" for note in sorted(evaluation.notes)]
    write_markdown(out_dir / "report.md", "ppd eval-bag report", [
        ("Run", run_lines), ("Reading the bag", reading), ("Metrics", table(summary)),
        ("Latency", table(latency)),
        ("Plots", ["![metrics over time](metrics_over_time.png)", "", "![latency](latency_histogram.png)"]),
        ("Worst frames", worst_lines or ["no frame had GT"]),
        ("Outputs", ["- `depth/` (rosbag2 bag, `depth/depth_0.mcap`): /ppd/depth, /ppd/depth/camera_info, "
                     "/ppd/points, /ppd/depth_frame",
                     "- `frames.csv`: per-frame metrics and stage latencies"]),
    ])
