"""`ppd eval-bag`: replay a recorded bag through the depth node's own pipeline and measure what the
node would publish against ground truth recorded in the same bag.

The configuration is the node's (the parameter table: defaults, ``--params-file`` of the node,
``-p name:=value``, and the model flags), and every frame goes through the same
:class:`~ppd_ros.pipeline.FrameProcessor`: images pair with CameraInfo and metric references by
the node's stamp rule, in bag order. The output bag therefore holds what the node publishes
(byte for byte), and the metrics are computed on it: relative frames are aligned to the GT in
log space first (the evaluation protocol for relative depth), metric frames are compared as they
are. GT is compared on the output grid (depth resampled nearest, LiDAR projected).
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ppd_ros.evaluation import metrics as M
from ppd_ros.evaluation.bag import ReadLog, StampPairer, check_topic_type, list_topics, read_messages
from ppd_ros.evaluation.report import (
    OutputBag, WorstFrames, error_map_image, histogram_plot, line_plot, table, write_csv, write_markdown,
)
from ppd_ros.msg_decode import (
    camera_info_to_model, compressed_depth_to_metres, compressed_to_rgb8, depth_image_msg_to_metres, image_to_rgb8,
    pointcloud2_xyz, stamp_ns,
)
from ppd_ros.parameters import ParameterError, default_values, read_params_file, validate

STAGES = ("decode_s", "model_s", "metric_s", "geometry_s", "metrics_s", "write_s")
SEQUENCE_SAMPLES_PER_FRAME = 2000
CLOUD_TYPE = "sensor_msgs/msg/PointCloud2"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ppd_ros.arguments import add_model_arguments
    from ppd_ros.model_specs import IMAGE_MODEL_NAMES, VIDEO_MODEL_NAMES

    parser.add_argument("bag", help="rosbag2 folder (mcap or sqlite3), .mcap/.db3 file or ROS 1 .bag")
    parser.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage")
    parser.add_argument("--camera-info-topic", default=None, help="CameraInfo of the images (needed for points)")
    gt = parser.add_mutually_exclusive_group()
    gt.add_argument("--gt-depth-topic", default=None, help="GT depth Image (32FC1 m / 16UC1 mm) or compressedDepth")
    gt.add_argument("--gt-points-topic", default=None, help="GT PointCloud2 (LiDAR), projected with the camera")
    parser.add_argument("--lidar-extrinsic", type=float, nargs=7, default=[0, 0, 0, 0, 0, 0, 1],
                        metavar=("X", "Y", "Z", "QX", "QY", "QZ", "QW"),
                        help="pose of the GT cloud's frame in the camera optical frame (default identity)")
    parser.add_argument("--metric-reference-topic", default=None,
                        help="metric_source sparse: the reference topic in the bag (the node's "
                             "metric_reference_type says whether it is a depth image or a cloud)")
    parser.add_argument("--params-file", default=None, help="the depth node's ROS params YAML (node ppd_depth "
                                                            "or /**): evaluate exactly that configuration")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="a node parameter, as `--ros-args -p` takes it (YAML value); repeatable")
    parser.add_argument("--mode", choices=("image", "video"), default=None,
                        help="image: per-frame model; video: the streaming video model (PPVD)")
    parser.add_argument("--video-stride", type=int, default=None, help="video mode: new frames per window (1..13)")
    parser.add_argument("--alignment", choices=("auto", "gt", "none"), default="auto",
                        help="gt: per-frame log-space affine fit to the GT before the metrics; none: the published "
                             "depth as it is; auto: none for frames the node publishes as metric, gt otherwise")
    parser.add_argument("--stamp-tolerance", type=float, default=0.02, help="max |image - GT| stamp gap (s)")
    parser.add_argument("--min-depth", type=float, default=0.0, help="GT below this is invalid (m)")
    parser.add_argument("--max-depth", type=float, default=math.inf, help="GT at/above this is invalid (m)")
    parser.add_argument("--rectified", action="store_true", help="images are rectified (image_is_rectified)")
    parser.add_argument("--skip-frames", type=int, default=0,
                        help="leave out the first N images (e.g. the part of a log a model was fine-tuned on)")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--no-points", action="store_true", help="do not write point clouds to the output bag")
    parser.add_argument("--worst-frames", type=int, default=3, help="error maps of this many worst frames")
    parser.add_argument("--output", default=None, help="output folder (default: <bag>_eval beside the bag)")
    parser.add_argument("--overwrite", action="store_true", help="replace the output bag of an earlier run")
    add_model_arguments(parser, default=None, choices=IMAGE_MODEL_NAMES + VIDEO_MODEL_NAMES,
                        model_help="default: the node's model (ppd-da2; video mode: ppvd)")
    parser.set_defaults(steps=None, device=None, seed=None)


def node_config(args: argparse.Namespace):
    """The node configuration this run evaluates: defaults < --params-file < flags < -p."""
    import yaml

    from ppd_ros.arguments import backend_flags

    values = default_values()
    if args.params_file:
        values.update(read_params_file(args.params_file))
    flags = {"mode": args.mode, "video_stride": args.video_stride, "steps": args.steps, "device": args.device,
             "seed": args.seed, "target_area": args.target_area, "weights_dir": args.weights_dir}
    values.update({name: value for name, value in flags.items() if value is not None})
    values.update(backend_flags(args))
    if args.model is not None:
        values["video_model" if args.model in _video_models() else "model"] = args.model
        if args.model in _video_models() and args.mode is None:
            values["mode"] = "video"
    if args.rectified:
        values["image_is_rectified"] = True
    for item in args.param:
        name, sep, text = item.partition(":=")
        if not sep:
            raise ValueError(f"-p {item!r}: expected NAME:=VALUE")
        values[name.strip()] = yaml.safe_load(text)
    unknown = sorted(set(values) - set(default_values()))
    if unknown:
        raise ValueError(f"unknown node parameter(s): {', '.join(unknown)}")
    if values["metric_source"] == "sparse" and not args.metric_reference_topic:
        raise ValueError("metric_source sparse needs --metric-reference-topic (the reference recorded in the bag)")
    try:
        return validate(values)
    except ParameterError as error:
        raise ValueError("; ".join(error.problems)) from error


def _video_models() -> tuple[str, ...]:
    from ppd_ros.model_specs import VIDEO_MODEL_NAMES

    return VIDEO_MODEL_NAMES


# ------------------------------------------------------------------------------- per-frame evaluation
@dataclass
class GroundTruth:
    kind: str  # "depth" (metres, any resolution) | "points" (N, 3)
    data: np.ndarray
    decode_s: float


class Evaluation:
    """Metrics and outputs of one run, frame by frame, from the pipeline's results."""

    def __init__(self, args, config, out_dir: Path):
        self.args = args
        self.config = config
        self.out_bag = OutputBag(out_dir / "depth", with_points=not args.no_points, overwrite=args.overwrite)
        self.rows: list[dict] = []
        self.worst = WorstFrames(args.worst_frames)
        self.previous = None  # (evaluated depth, gt, valid) of the last frame
        self.sequence_samples: list[tuple[np.ndarray, np.ndarray]] = []
        self.rng = np.random.default_rng(0)
        self.notes: set[str] = set()
        self.frames_seen = 0
        if args.gt_points_topic:
            from ppd_ros.metric.sparse import LidarProjector

            extrinsic = args.lidar_extrinsic
            self.projector = LidarProjector(extrinsic[:3], extrinsic[3:])

    def _gt_on_grid(self, gt: GroundTruth | None, camera, h: int, w: int) -> np.ndarray | None:
        from ppd_ros.geometry.resize import resize_nearest

        if gt is None:
            return None
        if gt.kind == "depth":
            return resize_nearest(gt.data.astype(np.float32), h, w)
        if camera is None:
            self.notes.add("GT points need --camera-info-topic to be projected; frames without it have no GT")
            return None
        return self.projector.project(gt.data, camera.K, h, w)

    def _evaluated_depth(self, result, gt, valid) -> tuple[np.ndarray | None, str]:
        """(depth the metrics see, how it was obtained)."""
        use_published = (self.args.alignment == "none" or
                         (self.args.alignment == "auto" and result.record.is_metric))
        if use_published:
            if not result.record.is_metric:
                self.notes.add("alignment none on a relative frame: its depth is the fixed relative mapping")
            return result.depth, "published"
        if gt is None or valid.sum() < 2:
            return None, "none"
        return M.align_log_depth(result.relative, gt, valid)[0], "gt-aligned"

    def finish(self, result, gt: GroundTruth | None) -> None:
        """Metrics of one pipeline result (with its paired GT, if any) and the output bag."""
        index = self.frames_seen
        self.frames_seen += 1
        h, w = result.depth.shape
        start = time.perf_counter()
        grid = self._gt_on_grid(gt, result.camera, h, w)
        valid = (M.gt_valid_mask(grid, min_depth=self.args.min_depth, max_depth=self.args.max_depth)
                 if grid is not None else np.zeros((h, w), bool))
        depth, evaluated = self._evaluated_depth(result, grid, valid)
        frame = M.FrameMetrics()
        if depth is not None and grid is not None and valid.any():
            frame = M.depth_metrics(depth, grid, valid)
            if result.cloud is not None and result.cloud.shape == depth.shape:
                kept = np.isfinite(result.cloud["z"])
                frame.flying_share, frame.edge_points = M.flying_pixel_share(np.where(kept, depth, np.nan), grid, valid)
            if self.previous is not None and self.previous[0].shape == depth.shape:
                frame.temporal_error = M.temporal_change_error(depth, grid, valid, *self.previous)
            self.previous = (depth, grid, valid)
            self._sample_sequence(result.relative, grid, valid)
            self.worst.offer(frame.abs_rel, index, result.input.rgb, depth, np.where(valid, grid, np.nan))
        elif result.camera is None:
            self.notes.add("no CameraInfo: no point clouds and no flying-pixel share")
        metrics_s = time.perf_counter() - start

        start = time.perf_counter()
        record = result.record
        fields = {name: _f32(value) if isinstance(value, float) else value
                  for name, value in record.depth_frame_fields().items()}
        self.out_bag.write(result.input.stamp_ns, result.input.tag, result.depth, result.camera, result.cloud, fields)
        write_s = time.perf_counter() - start
        timings = {f"{stage}_s": result.timings.get(stage, 0.0) for stage in ("decode", "model", "metric", "geometry")}
        timings["decode_s"] += gt.decode_s if gt is not None else 0.0
        timings.update(metrics_s=metrics_s, write_s=write_s)
        self.rows.append(dict(
            frame=index, stamp_ns=result.input.stamp_ns, has_gt=grid is not None, depth_kind=result.depth_kind,
            evaluated=evaluated, fit_status=record.fit_status, abs_rel=frame.abs_rel, delta1=frame.delta1,
            boundary_f1=frame.boundary_f1, flying_share=frame.flying_share, edge_points=frame.edge_points,
            temporal_error=frame.temporal_error, valid_pixels=frame.valid_pixels, scale=record.scale,
            shift=record.shift, scale_age=record.scale_age, metric_stale=record.metric_stale,
            latency_frames=record.latency_frames, **timings, total_s=sum(timings.values())))

    def _sample_sequence(self, relative, gt, valid) -> None:
        index = np.flatnonzero(valid)
        if index.size > SEQUENCE_SAMPLES_PER_FRAME:
            index = self.rng.choice(index, SEQUENCE_SAMPLES_PER_FRAME, replace=False)
        self.sequence_samples.append((relative.reshape(-1)[index], gt.reshape(-1)[index]))

    def sequence_metrics(self) -> tuple[float, float]:
        """AbsRel and delta1 with ONE log-space alignment for the whole run (on sampled pixels):
        how consistent the relative depth is across frames."""
        if not self.sequence_samples:
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
def decode_gt(message, kind: str) -> GroundTruth:
    start = time.perf_counter()
    if kind == "points":
        data = pointcloud2_xyz(message.msg)
    elif message.msgtype.endswith("CompressedImage"):
        data = compressed_depth_to_metres(message.msg)
    else:
        data = depth_image_msg_to_metres(message.msg)
    return GroundTruth(kind, data, time.perf_counter() - start)


def decode_reference(message, stamp: int):
    from ppd_ros.pipeline import MetricReference

    if message.msgtype == CLOUD_TYPE:
        return MetricReference(stamp, points=pointcloud2_xyz(message.msg))
    return MetricReference(stamp, depth=depth_image_msg_to_metres(message.msg))


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ppd_ros.backends import backend_for
    from ppd_ros.pipeline import CLOUD, FrameInput, FrameProcessor, FrameRejected, StampedBuffer

    bag = Path(args.bag)
    if not bag.exists():
        raise FileNotFoundError(f"no such bag: {bag}")
    config = node_config(args)
    topics = list_topics(bag)
    check_topic_type(topics, args.image_topic, "image")
    for topic, role in ((args.camera_info_topic, "camera_info"), (args.gt_depth_topic, "gt_depth"),
                        (args.gt_points_topic, "gt_points"),
                        (args.metric_reference_topic, f"metric_reference_{config.metric_reference_type}")):
        if topic:
            check_topic_type(topics, topic, role)
    gt_topic = args.gt_depth_topic or args.gt_points_topic
    out_dir = Path(args.output) if args.output else bag.parent / f"{bag.stem}_eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    evaluation = Evaluation(args, config, out_dir)  # refuses an existing output bag unless --overwrite

    backend = backend_for(config)
    processor = FrameProcessor(backend, config)
    wanted_outputs = () if args.no_points else (CLOUD,)
    log = ReadLog(str(bag))
    pairer = StampPairer(int(args.stamp_tolerance * 1e9), expect_references=gt_topic is not None)
    infos, references = StampedBuffer(), StampedBuffer(capacity=32)
    images_seen = 0
    skipped = {"decode": 0, "rejected": 0}
    started = time.perf_counter()
    progress = tqdm(desc="ppd eval-bag", unit="frame")

    def evaluate(pairs) -> None:
        for result, gt in pairs:
            evaluation.finish(result, gt)
            progress.update(1)

    def pipeline(results) -> None:
        for result in results:
            evaluate(pairer.add_image(result.input.stamp_ns, result))

    wanted_topics = {args.image_topic} | {t for t in (args.camera_info_topic, gt_topic, args.metric_reference_topic)
                                          if t}
    try:
        for message in read_messages(bag, wanted_topics, log):
            if (args.max_frames is not None and images_seen >= args.skip_frames + args.max_frames
                    and message.topic == args.image_topic):
                break  # stop at the first image past the limit: GT of earlier images may still come
            stamp = stamp_ns(message.msg)
            try:
                if message.topic == args.camera_info_topic:
                    infos.add(stamp, message.msg)
                elif message.topic == args.metric_reference_topic:
                    references.add(stamp, decode_reference(message, stamp))
                elif message.topic == args.image_topic:
                    images_seen += 1
                    if images_seen <= args.skip_frames:
                        continue
                    start = time.perf_counter()
                    compressed = message.msgtype.endswith("CompressedImage")
                    rgb = (compressed_to_rgb8(message.msg, max_pixels=config.max_image_pixels) if compressed
                           else image_to_rgb8(message.msg))
                    decode_s = time.perf_counter() - start
                    info = infos.nearest(stamp, config.sync_tolerance)
                    camera = camera_info_to_model(info, rectified=config.image_is_rectified) if info else None
                    reference = (references.nearest(stamp, config.metric_reference_tolerance,
                                                    take=not config.metric_reference_reuse)
                                 if config.metric_source == "sparse" else None)
                    frame = FrameInput(rgb, stamp, camera, reference, tag=message.msg.header.frame_id,
                                       decode_seconds=decode_s)
                    pipeline(processor.submit(frame, wanted_outputs))
                elif message.topic == gt_topic:
                    gt = decode_gt(message, "points" if args.gt_points_topic else "depth")
                    evaluate(pairer.add_reference(stamp, gt))
            except FrameRejected as error:
                skipped["rejected"] += 1
                log.skip(f"{message.topic} @ {message.log_time_ns}: frame rejected as the node would: {error}")
            except Exception as error:  # noqa: BLE001 - a bad message is skipped and counted, the run goes on
                skipped["decode"] += 1
                log.skip(f"{message.topic} @ {message.log_time_ns}: {type(error).__name__}: {error}")
        pipeline(processor.flush())
        evaluate(pairer.finish())
    finally:
        progress.close()
        evaluation.close()
    wall = time.perf_counter() - started

    write_csv(evaluation.rows, out_dir / "frames.csv")
    write_report(out_dir, args, config, evaluation, log, wall, skipped)
    print(f"evaluated {len(evaluation.rows)} frames in {wall:.1f} s -> {out_dir}")
    print(f"  AbsRel {_mean(evaluation.rows, 'abs_rel'):.4f}  delta1 {_mean(evaluation.rows, 'delta1'):.4f}  "
          f"boundary F1 {_mean(evaluation.rows, 'boundary_f1'):.4f}")
    if log.damage or log.skipped:
        print(f"  bag: {log.summary()}")
    return 0 if evaluation.rows else 1


def write_report(out_dir: Path, args, config, evaluation: Evaluation, log: ReadLog, wall: float,
                 skipped: dict) -> None:
    rows = evaluation.rows
    sequence_abs_rel, sequence_delta1 = evaluation.sequence_metrics()
    with_gt = sum(1 for row in rows if row["has_gt"])
    metric_frames = sum(1 for row in rows if row["depth_kind"] == "metric")
    summary = [
        ("frames evaluated", len(rows)), ("frames with GT", with_gt),
        ("frames published as metric", metric_frames),
        ("frames skipped (bad message / rejected like the node)", f"{skipped['decode']} / {skipped['rejected']}"),
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
        import cv2

        name = f"worst_frame_{snapshot.index:06d}.png"
        cv2.imwrite(str(out_dir / name), error_map_image(snapshot))
        worst_lines.append(f"Frame {snapshot.index}: AbsRel {snapshot.score:.4f}\n\n"
                           f"![frame {snapshot.index}]({name})\n")

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
                 f"- model: {config.model_name}, {config.steps} steps, mode {config.mode}, "
                 f"metric source {config.metric_source}, output resolution {config.output_resolution}",
                 f"- the node's configuration: {config.depth_kind_note}",
                 f"- alignment for the metrics: {args.alignment}", f"- wall time: {wall:.1f} s"]
    if config.model_name.startswith("tiny-random"):
        run_lines.append("- **tiny-random is an untrained smoke-test network: its numbers are not depth quality.**")
    run_lines += [f"- note: {note}" for note in sorted(evaluation.notes)]
    write_markdown(out_dir / "report.md", "ppd eval-bag report", [
        ("Run", run_lines), ("Reading the bag", reading), ("Metrics", table(summary)),
        ("Latency", table(latency)),
        ("Plots", ["![metrics over time](metrics_over_time.png)", "", "![latency](latency_histogram.png)"]),
        ("Worst frames", worst_lines or ["no frame had GT"]),
        ("Outputs", ["- `depth/` (a rosbag2 bag, `depth/depth_0.mcap`): what the node publishes for these frames: "
                     "/ppd/depth, /ppd/depth/camera_info, /ppd/points, /ppd/depth_frame. Open it in Foxglove "
                     "(the .mcap file), replay it with `ros2 bag play depth` (ppd_ros/msg/DepthFrame needs the "
                     "colcon-built ppd_ros sourced), or read it with `rosbags` in Python.",
                     "- `frames.csv`: per-frame metrics, the record fields and stage latencies"]),
    ])
