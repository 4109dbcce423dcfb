"""End-to-end demo: the depth node answers a synthetic camera over real DDS.

One process (``ppd-demo``) that

1. starts the depth node (``python -m ppd_ros.ros.depth_node``) as a subprocess with the chosen model,
   in the namespace ``/ppd_demo``, with the shared-memory Fast DDS profile of config/;
2. renders a synthetic room seen by a moving camera (exact depth known) and publishes it as
   sensor_msgs/Image rgb8 + CameraInfo, one frame at a time: the next frame goes out when the node
   answered the previous one, so every frame is processed (the node keeps only the newest frame);
3. records what the node publishes: depth, depth/camera_info, points, depth/colored, depth/frame
   (colcon route only) and /diagnostics;
4. writes, under the output directory: rgb/ (inputs), depth/ (colour-mapped PNG + float32 .npy of
   the node's published depth, relative unless a metric source is set), gt/ (the renderer's exact
   depth, .npy), clouds/ (binary PLY, removed points dropped), bag/ (rosbag2 MCAP of inputs and
   node outputs, opens in Foxglove / ``ros2 bag``),
   metrics_summary.json and metrics_summary.md (AbsRel / delta1 after log-space alignment against
   the exact depth, a constant-depth baseline, frame counts, latency), node.log;
5. stops the node with SIGINT (as Ctrl-C would).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

NAMESPACE = "/ppd_demo"
FRAME_ID = "demo_camera_optical_frame"
DEMO_MODEL = "ppd-demo"
FALLBACK_MODEL = "tiny-random"

# Output topics of the node (relative to NAMESPACE) -> message type name, and the bag's topic list.
NODE_OUTPUTS = {
    "depth": "sensor_msgs/msg/Image",
    "depth/camera_info": "sensor_msgs/msg/CameraInfo",
    "points": "sensor_msgs/msg/PointCloud2",
    "depth/colored": "sensor_msgs/msg/Image",
    "depth/frame": "ppd_ros/msg/DepthFrame",
}
INPUTS = {"image": "sensor_msgs/msg/Image", "camera_info": "sensor_msgs/msg/CameraInfo"}
DIAGNOSTICS_TOPIC = "/diagnostics"


def default_model() -> str:
    """``ppd-demo`` (the small model trained on synthetic scenes) when the engine has it and its
    checkpoint is installed, else the randomly initialised ``tiny-random``."""
    from ppd_ros.model_specs import model_spec
    from ppd_ros.paths import share_dir

    if (share_dir() / model_spec(DEMO_MODEL).export_file).is_file():
        return DEMO_MODEL
    return FALLBACK_MODEL


def model_note(model: str) -> str:
    """One line on what the model's output means, printed and written to the summary."""
    if model == DEMO_MODEL:
        return ("ppd-demo: a small PPD-architecture model trained on synthetic rooms only (see its model "
                "card); it is not meant for real cameras")
    if model.startswith("tiny-random"):
        return "tiny-random: randomly initialised weights, the output is NOT depth (smoke runs only)"
    return f"{model}: official Pixel-Perfect Depth weights (relative depth, aligned for the metrics)"


def default_target_area(model: str, width: int, height: int) -> int:
    """Inference area for ``model``: the demo model runs at the small size it was trained at, any
    other at the camera's own area (no resize)."""
    from ppd_ros.model_specs import model_spec

    return model_spec(model).native_area if model == DEMO_MODEL else width * height


@dataclass
class DemoConfig:
    """What the demo runs. ``target_area`` 0 = :func:`default_target_area`."""

    output: Path = Path("out/demo")
    model: str = field(default_factory=default_model)
    frames: int = 24
    # 3:2 like the demo model's training frames (96x64, 60 deg field of view): the node's resize to
    # its native area then keeps square pixels
    width: int = 384
    height: int = 256
    steps: int = 4
    target_area: int = 0
    seed: int = 2_000_001  # scene and trajectory; far from the demo model's training seeds (model card)
    device: str = "auto"
    domain_id: int | None = None  # None: $ROS_DOMAIN_ID or 0
    startup_timeout: float = 120.0  # seconds for the node to load the model and answer a first frame
    frame_timeout: float = 60.0  # seconds to wait for the answer to one frame


@dataclass
class SyntheticSequence:
    """Rendered camera frames with their exact depth."""

    scene: object
    camera: object  # ppd_ros.geometry.camera.CameraModel
    poses: np.ndarray  # (n, 4, 4) camera-to-world
    rgb: list[np.ndarray]  # uint8 (H, W, 3)
    depth: list[np.ndarray]  # float32 (H, W) metres, NaN = no surface


def render_sequence(frames: int, width: int, height: int, seed: int) -> SyntheticSequence:
    """A random synthetic room (seeded) seen along a smooth camera trajectory."""
    import torch

    from ppd_ros.synthetic import Scene, camera_trajectory, default_camera, render

    scene = Scene.random(seed)
    camera = default_camera(width, height)
    poses = camera_trajectory(frames, seed, scene)
    # many small tensor ops per frame: one thread is ~10x faster than two on a busy 2-core machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rendered = [render(scene, camera, pose) for pose in poses]
    finally:
        torch.set_num_threads(threads)
    return SyntheticSequence(scene, camera, poses, [r[0] for r in rendered], [r[1] for r in rendered])


def exact_depth_at(sequence: SyntheticSequence, index: int, width: int, height: int) -> np.ndarray:
    """The renderer's exact depth of frame ``index`` on a ``width`` x ``height`` grid (the node's
    output grid, which differs from the camera's when the model resizes)."""
    from ppd_ros.synthetic import render

    if (width, height) == (sequence.camera.width, sequence.camera.height):
        return sequence.depth[index]
    return render(sequence.scene, sequence.camera.scaled_to(width, height), sequence.poses[index])[1]


# ------------------------------------------------------------------------------------------ metrics
def frame_metrics(depth: np.ndarray, gt: np.ndarray) -> dict:
    """AbsRel / delta1 of ``depth`` (the node's output) after the least-squares affine alignment in
    log(d + 1) space to ``gt`` (the node's depth is exp(a * relative + b) - 1, so log1p of it is
    affine in the model's relative output and the alignment is the standard protocol), and of the
    best constant depth under the same log-space criterion."""
    from ppd_ros.evaluation.metrics import abs_rel, align_log_depth, delta1, gt_valid_mask

    valid = gt_valid_mask(gt) & np.isfinite(depth) & (depth > 0)
    aligned, scale, shift = align_log_depth(np.log1p(np.where(valid, depth, 0.0)), gt, valid)
    constant = np.full_like(gt, np.expm1(np.mean(np.log1p(gt[valid]))) if valid.any() else np.nan)
    return {"abs_rel": abs_rel(aligned, gt, valid), "delta1": delta1(aligned, gt, valid),
            "baseline_abs_rel": abs_rel(constant, gt, valid), "baseline_delta1": delta1(constant, gt, valid),
            "valid_pixels": int(valid.sum()), "align_scale": scale, "align_shift": shift}


def _mean(values) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _percentile(values, q: float) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.percentile(finite, q)) if finite else math.nan


# ------------------------------------------------------------------------------------------ files
def write_ply(path: Path, cloud: np.ndarray) -> int:
    """Binary little-endian PLY of the finite points of a structured cloud with x, y, z (float32)
    and rgb (float32 bits 0x00RRGGBB). Returns the vertex count."""
    flat = cloud.reshape(-1)
    finite = np.isfinite(flat["x"]) & np.isfinite(flat["y"]) & np.isfinite(flat["z"])
    points = flat[finite]
    vertex = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    out = np.empty(points.shape[0], vertex)
    for axis in ("x", "y", "z"):
        out[axis] = points[axis]
    if "rgb" in (cloud.dtype.names or ()):
        packed = np.ascontiguousarray(points["rgb"], dtype=np.float32).view(np.uint32)
        out["red"], out["green"], out["blue"] = (packed >> 16) & 255, (packed >> 8) & 255, packed & 255
    else:
        out["red"] = out["green"] = out["blue"] = 200
    header = ("ply\nformat binary_little_endian 1.0\ncomment ppd_ros demo: points of one frame, camera "
              f"optical frame (z forward, x right, y down), metres\nelement vertex {out.shape[0]}\n"
              "property float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    with open(path, "wb") as handle:
        handle.write(header.encode("ascii"))
        handle.write(out.tobytes())
    return int(out.shape[0])


def write_bag(path: Path, records: list[tuple[str, str, int, bytes]]) -> dict[str, int]:
    """rosbag2 (MCAP, version 9) with ``records`` = (topic, msgtype, log time ns, CDR bytes).
    Returns the message count per topic."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from ppd_ros.evaluation.report import output_typestore

    store = output_typestore()  # Jazzy types + ppd_ros/msg/DepthFrame from msg/DepthFrame.msg
    counts: dict[str, int] = {}
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    try:
        connections = {}
        for topic, msgtype, log_time, raw in sorted(records, key=lambda record: record[2]):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(connections[topic], log_time, raw)
            counts[topic] = counts.get(topic, 0) + 1
    finally:
        writer.close()
    return counts


# ------------------------------------------------------------------------------------------ ROS side
def _node_env(domain_id: int) -> dict[str, str]:
    """Environment of the node subprocess: our domain, loopback discovery unless the user chose
    otherwise, the shared-memory Fast DDS profile (large clouds), the package importable."""
    from ppd_ros.paths import share_dir

    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    profile = share_dir() / "config" / "fastdds_shm.xml"
    if profile.is_file():
        env.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(profile))
    env.setdefault("PYTHONUNBUFFERED", "1")
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    return env


def start_node(config: DemoConfig, domain_id: int, log_path: Path) -> subprocess.Popen:
    """The depth node as a subprocess in NAMESPACE, its output going to ``log_path``."""
    area = config.target_area or default_target_area(config.model, config.width, config.height)
    command = [sys.executable, "-m", "ppd_ros.ros.depth_node", "--ros-args",
               "-r", f"__ns:={NAMESPACE}",
               "-p", f"model:={config.model}", "-p", f"steps:={config.steps}",
               "-p", f"target_area:={area}", "-p", f"device:={config.device}",
               "-p", "diagnostics_period:=0.5"]
    log = open(log_path, "w")
    try:
        return subprocess.Popen(command, env=_node_env(domain_id), stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()  # the child holds its own descriptor


def stop_node(process: subprocess.Popen, timeout: float = 15.0) -> int:
    """SIGINT (a clean rclpy shutdown), then SIGKILL if it does not exit within ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


class NodeClient:
    """rclpy node in its own context and spinning thread: publishes the camera, records every
    message of the node's outputs (with its receive time) for files, metrics and the bag."""

    def __init__(self, domain_id: int, with_depth_frame: bool):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        from ppd_ros.ros.qos import make_qos

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("ppd_demo_camera", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._condition = threading.Condition()
        # topic -> list of (receive time ns, message)
        self.received: dict[str, list[tuple[int, object]]] = {}
        types = {"depth": Image, "depth/camera_info": CameraInfo, "points": PointCloud2, "depth/colored": Image}
        if with_depth_frame:
            from ppd_ros.msg import DepthFrame

            types["depth/frame"] = DepthFrame
        self.outputs = tuple(types)
        reliable = make_qos("reliable", 50)
        self._subscriptions = [
            self.node.create_subscription(msg_type, f"{NAMESPACE}/{topic}", self._recorder(topic), reliable)
            for topic, msg_type in types.items()]
        self._subscriptions.append(self.node.create_subscription(
            DiagnosticArray, DIAGNOSTICS_TOPIC, self._recorder(DIAGNOSTICS_TOPIC), make_qos("reliable", 10)))
        self.image_publisher = self.node.create_publisher(Image, f"{NAMESPACE}/image", make_qos("reliable", 1))
        self.info_publisher = self.node.create_publisher(CameraInfo, f"{NAMESPACE}/camera_info",
                                                         make_qos("reliable", 5))
        self._spinner = threading.Thread(target=self._spin, name="ppd_demo_spin", daemon=True)
        self._spinner.start()

    def _recorder(self, topic: str):
        def record(msg):
            with self._condition:
                self.received.setdefault(topic, []).append((time.time_ns(), msg))
                self._condition.notify_all()
        return record

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # the context was shut down while spinning
                if self.context.ok():
                    raise
                return

    def publish_frame(self, rgb: np.ndarray, camera, stamp_ns: int) -> tuple:
        """CameraInfo then Image (rgb8) with one stamp; returns both messages."""
        from builtin_interfaces.msg import Time
        from std_msgs.msg import Header

        from ppd_ros.ros.conversions import camera_model_to_info, numpy_to_image

        header = Header(stamp=Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000),
                        frame_id=FRAME_ID)
        info = camera_model_to_info(camera, header)
        image = numpy_to_image(rgb, "rgb8", header=header)
        self.info_publisher.publish(info)
        self.image_publisher.publish(image)
        return image, info

    def stamped(self, topic: str, stamp_ns: int):
        """(receive time ns, message) on ``topic`` with header stamp ``stamp_ns``, or None."""
        with self._condition:
            for received_at, msg in self.received.get(topic, []):
                if msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec == stamp_ns:
                    return received_at, msg
        return None

    def wait_for_outputs(self, stamp_ns: int, topics, timeout: float) -> bool:
        """Wait until each of ``topics`` has a message stamped ``stamp_ns``; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                if all(self._has_stamp(topic, stamp_ns) for topic in topics):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._condition.wait(min(left, 0.1))

    def _has_stamp(self, topic: str, stamp_ns: int) -> bool:
        return any(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec == stamp_ns
                   for _, msg in self.received.get(topic, []))

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
        self._spinner.join(5)


def _depth_frame_available() -> bool:
    try:
        from ppd_ros.msg import DepthFrame  # noqa: F401  (built by colcon from msg/)
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------------ the run
class DemoError(RuntimeError):
    """The demo could not run (the node failed to start or never answered); says why."""


@dataclass
class FrameRecord:
    index: int
    stamp_ns: int
    sent_at: float  # time.monotonic()
    answered: bool = False
    round_trip_s: float = math.nan  # publish -> depth received, measured here
    node_latency_s: float = math.nan  # image receipt -> publish, reported by DepthFrame
    inference_s: float = math.nan  # reported by DepthFrame


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _warm_up(client: NodeClient, process: subprocess.Popen, sequence: SyntheticSequence, config: DemoConfig,
             log_path: Path) -> float:
    """Send frame 0 (with throw-away stamps) until the node answers on every output: model loaded,
    all endpoints discovered. Then wait for the answer to the last throw-away frame too, so the
    sequence does not queue behind it. Returns the seconds it took."""
    start = time.monotonic()
    stamps: list[int] = []
    while True:
        if process.poll() is not None:
            raise DemoError(f"the depth node exited with code {process.returncode} before answering; "
                            f"its log ({log_path}):\n{_log_tail(log_path)}")
        if time.monotonic() - start > config.startup_timeout:
            raise DemoError(f"the depth node did not answer within {config.startup_timeout:.0f} s; its log "
                            f"({log_path}):\n{_log_tail(log_path)}")
        stamps.append(time.time_ns())
        client.publish_frame(sequence.rgb[0], sequence.camera, stamps[-1])
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            if any(client.wait_for_outputs(stamp, client.outputs, timeout=0.0) for stamp in stamps):
                client.wait_for_outputs(stamps[-1], ["depth"], timeout=config.frame_timeout)
                return time.monotonic() - start
            time.sleep(0.05)


def _write_outputs(config: DemoConfig, sequence: SyntheticSequence, client: NodeClient, sent: list[FrameRecord],
                   inputs: list[tuple[str, str, int, bytes]]) -> dict:
    """Every file of the output directory except node.log; returns the summary dictionary."""
    from rclpy.serialization import serialize_message

    from ppd_ros.ros.conversions import image_to_numpy, pointcloud2_to_structured
    from ppd_ros.colormap import inverse_depth_rgb

    out = config.output
    for sub in ("rgb", "depth", "gt", "clouds"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for stale in (out / sub).glob("frame_*"):  # from an earlier run with more frames
            stale.unlink()
    per_frame = []
    for record in sent:
        name = f"frame_{record.index:03d}"
        cv2.imwrite(str(out / "rgb" / f"{name}.png"), cv2.cvtColor(sequence.rgb[record.index], cv2.COLOR_RGB2BGR))
        row = {"index": record.index, "stamp_ns": record.stamp_ns, "answered": record.answered,
               "round_trip_s": record.round_trip_s, "node_latency_s": record.node_latency_s,
               "inference_s": record.inference_s}
        depth_entry = client.stamped("depth", record.stamp_ns)
        if depth_entry is not None:
            depth = np.array(image_to_numpy(depth_entry[1]), dtype=np.float32)
            np.save(out / "depth" / f"{name}.npy", depth)
            cv2.imwrite(str(out / "depth" / f"{name}.png"), cv2.cvtColor(inverse_depth_rgb(depth), cv2.COLOR_RGB2BGR))
            gt = exact_depth_at(sequence, record.index, depth.shape[1], depth.shape[0])
            np.save(out / "gt" / f"{name}.npy", gt)
            row.update(frame_metrics(depth, gt), depth_size=[int(depth.shape[1]), int(depth.shape[0])])
        cloud_entry = client.stamped("points", record.stamp_ns)
        if cloud_entry is not None:
            row["cloud_points"] = write_ply(out / "clouds" / f"{name}.ply", pointcloud2_to_structured(cloud_entry[1]))
        per_frame.append(row)

    stamps = {record.stamp_ns for record in sent}
    records = list(inputs)
    for topic in client.outputs:
        msgtype = NODE_OUTPUTS[topic]
        for received_at, msg in client.received.get(topic, []):
            stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            if stamp_ns in stamps:  # warm-up answers are left out
                records.append((f"{NAMESPACE}/{topic}", msgtype, received_at, serialize_message(msg)))
    for received_at, msg in client.received.get(DIAGNOSTICS_TOPIC, []):
        records.append((DIAGNOSTICS_TOPIC, "diagnostic_msgs/msg/DiagnosticArray", received_at, serialize_message(msg)))
    bag_path = out / "bag"
    if bag_path.exists():
        import shutil

        shutil.rmtree(bag_path)  # rosbags refuses to overwrite a bag
    bag_counts = write_bag(bag_path, records)
    return {"per_frame": per_frame, "bag_counts": bag_counts}


def _last_diagnostics(client: NodeClient) -> dict[str, str]:
    from ppd_ros.ros.diagnostics import diagnostic_values

    for _, msg in reversed(client.received.get(DIAGNOSTICS_TOPIC, [])):
        for status in msg.status:
            if "ppd_depth" in status.name:
                values = diagnostic_values(status)
                if values.get("model"):
                    return values
    return {}


def run_demo(config: DemoConfig, print_fn=print) -> dict:
    """Run the whole demo (see the module docstring); returns the summary written to
    metrics_summary.json. Raises DemoError when the node does not start or answer."""
    started = time.monotonic()
    out = Path(config.output)
    config.output = out
    out.mkdir(parents=True, exist_ok=True)
    domain_id = config.domain_id if config.domain_id is not None else int(os.environ.get("ROS_DOMAIN_ID", "0"))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # must match the node's setting
    print_fn(f"ppd demo: model {config.model} ({model_note(config.model)})")
    print_fn(f"ppd demo: rendering {config.frames} synthetic frames at {config.width}x{config.height}")
    sequence = render_sequence(config.frames, config.width, config.height, config.seed)

    log_path = out / "node.log"
    process = start_node(config, domain_id, log_path)
    client = None
    sent: list[FrameRecord] = []
    inputs: list[tuple[str, str, int, bytes]] = []
    try:
        from rclpy.serialization import serialize_message

        client = NodeClient(domain_id, with_depth_frame=_depth_frame_available())
        print_fn(f"ppd demo: depth node started (pid {process.pid}, ROS_DOMAIN_ID {domain_id}, namespace "
                 f"{NAMESPACE}); waiting for it to load the model and answer")
        warm_up_s = _warm_up(client, process, sequence, config, log_path)
        print_fn(f"ppd demo: node answered after {warm_up_s:.1f} s; publishing the sequence")
        loop_started = time.monotonic()
        for index in range(config.frames):
            stamp_ns = time.time_ns()
            record = FrameRecord(index, stamp_ns, time.monotonic())
            image, info = client.publish_frame(sequence.rgb[index], sequence.camera, stamp_ns)
            inputs.append((f"{NAMESPACE}/camera_info", INPUTS["camera_info"], stamp_ns, serialize_message(info)))
            inputs.append((f"{NAMESPACE}/image", INPUTS["image"], stamp_ns, serialize_message(image)))
            record.answered = client.wait_for_outputs(stamp_ns, ["depth"], config.frame_timeout)
            if record.answered:
                record.round_trip_s = (client.stamped("depth", stamp_ns)[0] - stamp_ns) * 1e-9
                # the rest of the frame's outputs follow the depth within milliseconds
                client.wait_for_outputs(stamp_ns, client.outputs, timeout=2.0)
                frame_entry = client.stamped("depth/frame", stamp_ns) if "depth/frame" in client.outputs else None
                if frame_entry is not None:
                    record.node_latency_s = float(frame_entry[1].latency)
                    record.inference_s = float(frame_entry[1].inference_time)
            elif process.poll() is not None:
                raise DemoError(f"the depth node exited with code {process.returncode} during the sequence; "
                                f"its log ({log_path}):\n{_log_tail(log_path)}")
            sent.append(record)
        loop_s = time.monotonic() - loop_started
        time.sleep(0.6)  # one more diagnostics period after the last frame
        diagnostics = _last_diagnostics(client)
    finally:
        return_code = stop_node(process)
        if client is not None:
            client.close()

    written = _write_outputs(config, sequence, client, sent, inputs)
    per_frame = written["per_frame"]
    sent_stamps = {record.stamp_ns for record in sent}
    counts = {topic: sum(1 for _, msg in client.received.get(topic, [])
                         if msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec in sent_stamps)
              for topic in client.outputs}
    answered = [row for row in per_frame if "abs_rel" in row]
    summary = {
        "model": config.model,
        "model_note": model_note(config.model),
        "frames_sent": len(sent),
        "frames_answered": sum(record.answered for record in sent),
        "received_per_topic": counts,
        "diagnostics_messages": len(client.received.get(DIAGNOSTICS_TOPIC, [])),
        "bag_messages_per_topic": written["bag_counts"],
        "cloud_points_mean": _mean(row.get("cloud_points", math.nan) for row in per_frame),
        "depth_kind": diagnostics.get("depth_kind"),
        "depth_note": diagnostics.get("depth_note"),
        "camera_size": [config.width, config.height],
        "depth_size": answered[0]["depth_size"] if answered else None,
        "steps": config.steps,
        "target_area": config.target_area or default_target_area(config.model, config.width, config.height),
        "seed": config.seed,
        "metrics": {
            "alignment": "least squares in log(depth + 1) per frame against the renderer's exact depth",
            "abs_rel": _mean(row["abs_rel"] for row in answered),
            "delta1": _mean(row["delta1"] for row in answered),
            "baseline": "best constant depth per frame (log-space mean of the exact depth)",
            "baseline_abs_rel": _mean(row["baseline_abs_rel"] for row in answered),
            "baseline_delta1": _mean(row["baseline_delta1"] for row in answered),
        },
        "latency": {
            "round_trip_mean_s": _mean(r.round_trip_s for r in sent),
            "round_trip_p50_s": _percentile([r.round_trip_s for r in sent], 50),
            "round_trip_max_s": _percentile([r.round_trip_s for r in sent], 100),
            "node_latency_mean_s": _mean(r.node_latency_s for r in sent),
            "node_inference_mean_s": _mean(r.inference_s for r in sent),
            "diagnostics_model_ms": _diagnostic_number(diagnostics, "model_ms"),
            "diagnostics_latency_ms": _diagnostic_number(diagnostics, "latency_ms"),
            "device": diagnostics.get("device"),
        },
        "timing": {"node_start_and_first_answer_s": warm_up_s, "sequence_s": loop_s,
                   "total_s": time.monotonic() - started},
        "node_exit_code": return_code,
        "per_frame": per_frame,
    }
    (out / "metrics_summary.json").write_text(json.dumps(_json_safe(summary), indent=2))
    write_summary_markdown(out / "metrics_summary.md", summary)
    metrics = summary["metrics"]
    print_fn(f"ppd demo: {summary['frames_answered']}/{summary['frames_sent']} frames answered; AbsRel "
             f"{metrics['abs_rel']:.4f} delta1 {metrics['delta1']:.4f} (constant-depth baseline AbsRel "
             f"{metrics['baseline_abs_rel']:.4f} delta1 {metrics['baseline_delta1']:.4f}); round trip "
             f"{summary['latency']['round_trip_mean_s'] * 1000:.0f} ms mean")
    print_fn(f"ppd demo: outputs in {out}: rgb/ depth/ gt/ clouds/ bag/ metrics_summary.md|json node.log")
    print_fn(f"ppd demo: model used: {config.model} — {model_note(config.model)}")
    return summary


def _json_safe(value):
    """NaN/inf -> None (strict JSON), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def _diagnostic_number(values: dict[str, str], key: str) -> float:
    try:
        return float(values[key])
    except (KeyError, ValueError):
        return math.nan


def write_summary_markdown(path: Path, summary: dict) -> None:
    """The human-readable metrics summary."""
    def number(value, digits=4):
        missing = value is None or (isinstance(value, float) and not math.isfinite(value))
        return "n/a" if missing else f"{value:.{digits}f}"

    metrics, latency, timing = summary["metrics"], summary["latency"], summary["timing"]
    grid = summary["depth_size"][0] * summary["depth_size"][1] if summary["depth_size"] else math.nan
    kept = summary["cloud_points_mean"] / grid if grid else math.nan
    kind = summary.get("depth_kind") or "unknown"
    lines = [
        "# ppd_ros demo: synthetic camera -> depth node over DDS", "",
        f"**Model: {summary['model']}** — {summary['model_note']}.", "",
        f"Frames sent {summary['frames_sent']}, answered {summary['frames_answered']}; camera "
        f"{summary['camera_size'][0]}x{summary['camera_size'][1]}, depth "
        f"{'x'.join(map(str, summary['depth_size'])) if summary['depth_size'] else 'n/a'}, "
        f"{summary['steps']} diffusion steps, scene seed {summary['seed']}.", "",
        f"Depth published by the node: **{kind.upper()}** ({summary.get('depth_note') or 'see its diagnostics'}). "
        "The saved depth/*.npy are those published values; the quality table below aligns them to the exact "
        "depth first, as relative depth is evaluated.", "",
        f"Clouds: {number(summary['cloud_points_mean'], 0)} points on average of the {number(grid, 0)} pixels of the "
        f"depth grid ({number(100 * kept, 0)}%) are kept by the flying-pixel filter; the rest are pixels without "
        "depth or points it removed as hanging between surfaces (for a small demo model that includes its "
        "pixel-level noise, which looks like depth discontinuities to the filter).", "",
        "## Depth quality (mean over answered frames)", "",
        f"Alignment: {metrics['alignment']}. Baseline: {metrics['baseline']}.", "",
        "| prediction | AbsRel (lower is better) | delta1 (higher is better) |", "|---|---|---|",
        f"| {summary['model']} | {number(metrics['abs_rel'])} | {number(metrics['delta1'])} |",
        f"| constant depth | {number(metrics['baseline_abs_rel'])} | {number(metrics['baseline_delta1'])} |", "",
        "## Latency", "",
        "| quantity | value |", "|---|---|",
        f"| round trip publish -> depth, mean (s) | {number(latency['round_trip_mean_s'], 3)} |",
        f"| round trip, median (s) | {number(latency['round_trip_p50_s'], 3)} |",
        f"| round trip, max (s) | {number(latency['round_trip_max_s'], 3)} |",
        f"| node latency from DepthFrame, mean (s) | {number(latency['node_latency_mean_s'], 3)} |",
        f"| node inference from DepthFrame, mean (s) | {number(latency['node_inference_mean_s'], 3)} |",
        f"| node diagnostics: model stage, mean (ms) | {number(latency['diagnostics_model_ms'], 1)} |",
        f"| device | {latency['device'] or 'n/a'} |",
        f"| node start + first answer (s) | {number(timing['node_start_and_first_answer_s'], 1)} |",
        f"| sequence (s) | {number(timing['sequence_s'], 1)} |",
        f"| whole demo (s) | {number(timing['total_s'], 1)} |", "",
        "## Messages received from the node", "",
        "| topic | messages |", "|---|---|",
        *(f"| {NAMESPACE}/{topic} | {count} |" for topic, count in summary["received_per_topic"].items()),
        f"| {DIAGNOSTICS_TOPIC} | {summary['diagnostics_messages']} |", "",
        "Files: rgb/*.png (inputs), depth/*.png (colour-mapped inverse depth) and depth/*.npy (float32, the "
        f"node's published depth: {kind}), gt/*.npy (exact depth on the depth grid), clouds/*.ply (binary PLY, removed "
        "points dropped), bag/ (rosbag2 MCAP: inputs, node outputs, /diagnostics), node.log.", "",
    ]
    path.write_text("\n".join(lines))


def parse_args(argv=None) -> DemoConfig:
    defaults = DemoConfig()
    parser = argparse.ArgumentParser(
        prog="ppd-demo", description="End-to-end demo: a synthetic camera published over DDS, the depth "
        "node answering, depth PNGs, PLY clouds, an MCAP bag and a metrics summary written.")
    parser.add_argument("--output", type=Path, default=defaults.output, help="output directory (default out/demo)")
    parser.add_argument("--model", default=defaults.model, help=f"depth model (default {defaults.model})")
    parser.add_argument("--frames", type=int, default=defaults.frames)
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--height", type=int, default=defaults.height)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--target-area", type=int, default=defaults.target_area,
                        help="inference area in pixels; 0 = the model's native area, else the camera's size")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of the synthetic scene and camera trajectory")
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--domain-id", type=int, default=None, help="ROS domain (default $ROS_DOMAIN_ID or 0)")
    parser.add_argument("--startup-timeout", type=float, default=defaults.startup_timeout)
    parser.add_argument("--frame-timeout", type=float, default=defaults.frame_timeout)
    args = parser.parse_args(argv)
    if args.frames <= 0 or args.width < 16 or args.height < 16:
        parser.error("--frames must be positive and --width/--height at least 16")
    return DemoConfig(output=args.output, model=args.model, frames=args.frames, width=args.width,
                      height=args.height, steps=args.steps, target_area=args.target_area, seed=args.seed,
                      device=args.device, domain_id=args.domain_id, startup_timeout=args.startup_timeout,
                      frame_timeout=args.frame_timeout)


def main(argv=None) -> int:
    """Entry point of ``ppd-demo`` (and ``ros2 run ppd_ros demo``)."""
    if argv is None:  # `ros2 run ppd_ros demo` may append --ros-args
        from rclpy.utilities import remove_ros_args

        argv = remove_ros_args(sys.argv)[1:]
    config = parse_args(argv)
    from ppd_ros.paths import share_dir

    profile = share_dir() / "config" / "fastdds_shm.xml"
    if profile.is_file():  # before this process creates its DDS participant
        os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(profile))
    try:
        run_demo(config)
    except DemoError as error:
        print(f"ppd demo failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
