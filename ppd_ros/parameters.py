"""The depth pipeline's parameters: one table, its validation and the documents made from it.

:data:`PARAMETERS` is the single source of truth. The depth node declares exactly these (with
:mod:`ppd_ros.ros.params`), ``ppd eval-bag`` and the benches run the node's configuration from
the same table (defaults, a ROS params file, overrides), and ``config/depth_node.yaml`` and the
README's parameter list are generated from it (``python -m ppd_ros.parameters --write``; a test
checks they agree). ROS-free and torch-free.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from ppd_ros.constants import DEFAULT_MAX_GRAZING_ANGLE_DEG, DEFAULT_MAX_RELATIVE_JUMP
from ppd_ros.model_specs import IMAGE_MODEL_NAMES, METRIC_MODEL_NAMES, VIDEO_MODEL_NAMES, is_export_path

MAX_VIDEO_STRIDE = 13
RELIABILITY_CHOICES = ("reliable", "best_effort")
METRIC_SOURCES = ("none", "fixed", "moge2", "sparse")
BACKEND_NAMES = ("torch", "onnxruntime")
PRECISIONS = ("auto", "fp32", "bf16", "bf16-autocast")
PREPROCESS_MODES = ("auto", "cv2", "device")
SDPA_BACKENDS = ("auto", "cudnn", "flash", "efficient", "math")
DEFAULT_ONNX_PROVIDERS = ("tensorrt", "cuda", "cpu")

# log(depth + 1) = depth_scale * relative + depth_shift. These defaults map the model's
# relative range [-0.5, 0.5] (its 2% / 98% quantiles in training) to 0.5 m .. 10 m.
DEFAULT_DEPTH_SCALE = round(math.log(11.0) - math.log(1.5), 4)
DEFAULT_DEPTH_SHIFT = round(math.log(1.5) + 0.5 * DEFAULT_DEPTH_SCALE, 4)

RELATIVE_NOTE = (
    "RELATIVE depth: no metric source is configured; depth = exp(depth_scale * relative + "
    "depth_shift) - 1 with fixed parameters, so distances are only correct up to that assumed mapping"
)
DEPTH_KIND_NOTES = {
    "none": RELATIVE_NOTE,
    "fixed": "metric by a user-calibrated fixed mapping (metric_source = fixed: depth_scale, depth_shift)",
    "moge2": "metric: scale/shift fitted per frame to MoGe-2's metric depth (same encoder pass) and "
             "filtered over time; relative until the first fit succeeds",
    "sparse": "metric: scale/shift fitted per frame to the reference on metric_reference_topic and "
              "filtered over time; relative until the first fit succeeds",
}

LIVE = "live"  # a change applies from the next frame
RELOAD = "reconfigure"  # a change needs deactivate -> cleanup -> configure -> activate (or a restart)
READ_ONLY = "read-only"  # set at start only


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: the default fixes its type; ``minimum``/``maximum`` bound numbers (strictly
    when ``exclusive``); ``change`` says whether a running node applies a new value live or needs
    a reconfigure."""

    name: str
    default: bool | int | float | str | list
    description: str
    group: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    exclusive: bool = False
    change: str = RELOAD

    @property
    def type_name(self) -> str:
        if isinstance(self.default, list):
            return "string[]" if all(isinstance(v, str) for v in self.default) else "double[]"
        return {bool: "bool", int: "int", float: "double", str: "string"}[type(self.default)]

    @property
    def constraint_text(self) -> str:
        """The allowed values in words (also the ParameterDescriptor's additional_constraints)."""
        if self.choices:
            return "one of: " + ", ".join(self.choices)
        low = "" if self.minimum is None else (f"> {self.minimum:g}" if self.exclusive else f">= {self.minimum:g}")
        high = "" if self.maximum is None else (f"< {self.maximum:g}" if self.exclusive else f"<= {self.maximum:g}")
        return " and ".join(part for part in (low, high) if part)


def _p(name, default, description, group, **kwargs) -> ParamSpec:
    return ParamSpec(name, default, description, group, **kwargs)


PARAMETERS: tuple[ParamSpec, ...] = (
    _p("model", "ppd-da2", f"Image depth model: {', '.join(IMAGE_MODEL_NAMES)}, or the path of a model you "
       "trained (`ppd-train export` writes NAME.safetensors + NAME.json; its native inference area and semantic "
       "encoder come from the JSON). ppd-da2 and ppd-moge2 need the official weights (`ppd fetch-weights "
       "NAME`); ppd-demo ships with the package (synthetic scenes only, not for real cameras); tiny-random is a "
       "small random network for tests whose depth is meaningless.", "model"),
    _p("backend", "torch", "What runs the networks: torch (CPU or CUDA) or onnxruntime (image models exported "
       "with `ppd export-onnx`; providers from onnx_providers).", "model", choices=BACKEND_NAMES),
    _p("precision", "auto", "torch backend: auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 (bf16 weights and "
       "activations, latent and Euler update in fp32) or bf16-autocast (fp32 weights under bf16 autocast, as the "
       "official code).", "model", choices=PRECISIONS),
    _p("compile", False, "torch backend: torch.compile the networks (each new input size compiles once, the "
       "first frame of a size is slow).", "model"),
    _p("cuda_graphs", False, "torch backend on CUDA, image models: capture the encoder and the sampler as one CUDA "
       "graph per input size (the first frame of a size pays, later frames replay).", "model"),
    _p("onnx_providers", list(DEFAULT_ONNX_PROVIDERS), "onnxruntime backend: execution providers in order of "
       "preference (tensorrt, cuda, cpu or full ONNX Runtime names); providers this onnxruntime lacks are skipped "
       "with one warning.", "model"),
    _p("onnx_dir", "", "onnxruntime backend: folder written by `ppd export-onnx`; empty = <weights_dir>/onnx/<model>.",
       "model"),
    _p("weights_dir", "", "Directory of the official weight files; empty = $PPD_WEIGHTS_DIR, else "
       "~/.cache/ppd_ros/weights.", "model"),
    _p("device", "auto", "Torch device: auto (cuda when available, else cpu), cpu, cuda, cuda:N.", "model"),
    _p("steps", 4, "Diffusion (Euler) steps per frame; more is slower and slightly sharper.", "model",
       minimum=1, change=LIVE),
    _p("target_area", 0, "Inference resolution as a pixel area: the image is resized to about this area at its "
       "aspect ratio, both sides multiples of 16; 0 = the model's own (1024x768, 96x64 for ppd-demo).", "model",
       minimum=0),
    _p("seed", 0, "Seed of the diffusion noise (fixed noise gives repeatable depth).", "model"),
    _p("cameras", [""], "Cameras served by this node from one copy of the model. [''] (default): one camera "
       "whose topics are the node's own (image, camera_info, depth, points, ...). [front, rear]: each name "
       "gets its own topics under its own namespace (front/image, front/depth, ...), its own CameraInfo "
       "pairing, metric filter and video stream; frames of several cameras that wait at the same time run as "
       "one batch when their inference sizes match.", "model"),
    # video
    _p("mode", "image", "image: every frame on its own with `model` (newest frame wins when busy); video: a "
       "causal PPVD stream per camera with `video_model` (temporally consistent; each frame comes out with its "
       "own header once its window ran, so later by up to video_stride - 1 frames; frames are queued, not "
       "replaced).", "video", choices=("image", "video")),
    _p("video_model", "ppvd", f"mode video: {', '.join(VIDEO_MODEL_NAMES)} (ppvd needs `ppd fetch-weights ppvd` "
       "and `pi3`; tiny-random-video is a small random network for tests).", "video", choices=VIDEO_MODEL_NAMES),
    _p("video_stride", MAX_VIDEO_STRIDE, f"mode video: new frames per 16-frame window, 1..{MAX_VIDEO_STRIDE}. "
       f"{MAX_VIDEO_STRIDE} = the released windows (latency up to {MAX_VIDEO_STRIDE - 1} frames); smaller = lower "
       "latency, more compute per frame.", "video", minimum=1, maximum=MAX_VIDEO_STRIDE),
    _p("video_channel_order", "rgb", "mode video: channel order fed to the video model. rgb: what the model was "
       "trained on (the official training loaders and image path); bgr: reproduces the official video demo "
       "exactly (it converts BGR->RGB twice, so its networks see BGR).", "video", choices=("rgb", "bgr")),
    _p("video_queue_size", 32, "mode video: frames waiting for the model per camera; when full the oldest is "
       "dropped (counted in dropped_frames).", "video", minimum=1),
    _p("video_max_gap", 0.5, "mode video: seconds; a larger gap between frame stamps (or stamps going back) "
       "restarts the stream, and pending frames are flushed when no frame arrived for this long. The stream "
       "also restarts on a CameraInfo change and on ~/reset_stream.", "video", minimum=0, exclusive=True),
    # input
    _p("input_transport", "raw", "raw: subscribe to `image` (sensor_msgs/Image); compressed: subscribe to "
       "`image/compressed` (sensor_msgs/CompressedImage, jpeg or png).", "input", choices=("raw", "compressed")),
    _p("max_image_pixels", 8192 * 8192, "Compressed images whose JPEG/PNG header claims more pixels than this "
       "are refused before decoding (decompression bombs); raw images are bounded by their message size.",
       "input", minimum=1, change=LIVE),
    _p("image_is_rectified", False, "true: the image is rectified, use CameraInfo P (no distortion); false: use "
       "K and D.", "input", change=LIVE),
    _p("sync_tolerance", 0.01, "Seconds: an image pairs with the CameraInfo of the nearest stamp within this "
       "tolerance; 0 = exact stamps only.", "input", minimum=0, change=LIVE),
    _p("camera_info_size_mismatch", "reject", "CameraInfo whose width/height differ from the image: reject "
       "(error, frame skipped) or scale (intrinsics scaled to the image size; the aspect ratio must match "
       "within 1%).", "input", choices=("reject", "scale"), change=LIVE),
    # output
    _p("output_resolution", "inference", "Resolution of depth, depth/camera_info, points and depth/colored: "
       "inference (as computed; for the video model its square window) or input (upsampled nearest, never "
       "smoothed).", "output", choices=("inference", "input"), change=LIVE),
    _p("depth_scale", DEFAULT_DEPTH_SCALE, "Fixed mapping of relative log-depth to metres: depth = "
       "exp(depth_scale * relative + depth_shift) - 1. The default maps relative -0.5 .. 0.5 to 0.5 m .. 10 m.",
       "output", minimum=0, exclusive=True, change=LIVE),
    _p("depth_shift", DEFAULT_DEPTH_SHIFT, "See depth_scale.", "output", change=LIVE),
    _p("filter_flying_pixels", True, "Remove points at depth discontinuities from `points`.", "output",
       change=LIVE),
    _p("keep_organized", True, "true: organised cloud (height x width) with NaN where points were removed; "
       "false: a flat cloud of the valid points only.", "output", change=LIVE),
    _p("max_relative_jump", DEFAULT_MAX_RELATIVE_JUMP, "Flying-pixel filter: remove a point whose depth differs "
       "from both neighbours along an image axis by more than this fraction of its depth; <= 0 disables this "
       "test.", "output", change=LIVE),
    _p("max_grazing_angle_deg", DEFAULT_MAX_GRAZING_ANGLE_DEG, "Flying-pixel filter: remove a point whose local "
       "surface normal is more than this angle (degrees) from the view ray; <= 0 disables this test.",
       "output", maximum=90, exclusive=True, change=LIVE),
    # metric depth
    _p("metric_source", "none", "Where metres come from. none: RELATIVE depth through the fixed "
       "depth_scale/depth_shift mapping, flagged relative everywhere; fixed: the same mapping, calibrated by you "
       "for this camera, reported metric; moge2: fitted to the metric depth of MoGe-2 (model ppd-moge2, same "
       "encoder pass); sparse: fitted to the reference on metric_reference_topic. moge2 and sparse fit "
       "scale/shift per frame (robust, in log(d + 1)) and filter them over time.", "metric",
       choices=METRIC_SOURCES, change=READ_ONLY),
    _p("depth_kind", "", "Read-only, set by the node: whether the published depth is relative or metric and "
       "why.", "metric", change=READ_ONLY),
    _p("metric_reference_type", "depth_image", "sparse: depth_image = sensor_msgs/Image in 32FC1 metres or "
       "16UC1 millimetres (0/NaN = no depth), registered to the camera image (same viewpoint and field of view, "
       "any resolution; e.g. stereo or ToF); pointcloud = sensor_msgs/PointCloud2 with float x, y, z (e.g. "
       "LiDAR), projected into the image with the metric_lidar_* extrinsic and the paired CameraInfo "
       "(rectified: K without distortion).", "metric", choices=("depth_image", "pointcloud")),
    _p("metric_reference_topic", "metric_reference", "sparse: topic of the reference (relative names follow "
       "the node's namespace, the camera's namespace and remaps).", "metric"),
    _p("metric_reference_tolerance", 0.05, "sparse: seconds; a frame pairs with the reference of the nearest "
       "stamp within this. A frame without one keeps the filtered scale/shift.", "metric", minimum=0,
       change=LIVE),
    _p("metric_reference_reuse", False, "sparse: false: a reference message pairs with one frame only, so a "
       "frame whose own reference is missing keeps the held scale/shift (fit_status no_reference) instead of "
       "silently refitting to the previous frame's reference; true: one reference may pair with several frames "
       "(a reference slower than the camera, e.g. a 10 Hz LiDAR behind a 30 Hz camera; set "
       "metric_reference_tolerance to cover its period).", "metric", change=LIVE),
    _p("metric_lidar_translation", [0.0, 0.0, 0.0], "pointcloud reference: position x, y, z (metres) of the "
       "LiDAR frame in the camera optical frame (z forward, x right, y down): what tf2 "
       "lookup_transform(camera_optical_frame, lidar_frame) gives.", "metric"),
    _p("metric_lidar_rotation_xyzw", [0.0, 0.0, 0.0, 1.0], "pointcloud reference: orientation of the LiDAR "
       "frame in the camera optical frame, quaternion x, y, z, w.", "metric"),
    _p("metric_temporal_filter", True, "moge2/sparse: filter scale/shift over time (Kalman in log-scale weighing "
       "each fit by its standard error, jumps gated), restarting on a CameraInfo change, a stamp gap above "
       "metric_max_gap or a persistent jump; false: each frame's own fit.", "metric"),
    _p("metric_max_gap", 1.0, "moge2/sparse: seconds between frame stamps above which the scale/shift filter "
       "restarts.", "metric", minimum=0, exclusive=True),
    _p("metric_max_residual", 0.3, "moge2/sparse: a fit whose inlier RMS residual in log(depth + 1) units is "
       "above this is rejected; the frame keeps the previous scale/shift.", "metric", minimum=0, exclusive=True),
    _p("metric_max_age", 2.0, "moge2/sparse: seconds (frame stamps) a held scale/shift stays fresh after the last "
       "accepted fit; older, the output is stale: flagged (DepthFrame metric_stale, diagnostics WARN, a log "
       "line) and metric_stale_output applies. 0 = never stale.", "metric", minimum=0, change=LIVE),
    _p("metric_stale_output", "held_scale", "moge2/sparse: what frames without a fresh metric scale publish. "
       "held_scale: stale frames keep the held scale (metres by the last accepted fit, flagged stale) and "
       "frames before the first accepted fit are relative (the fixed mapping, flagged); no_depth: both "
       "publish no depth at all (NaN in depth and points, is_metric false), so nothing is ever published in "
       "assumed metres, for consumers that cannot read the flags (costmaps, planners).", "metric",
       choices=("held_scale", "no_depth"), change=LIVE),
    _p("use_moge_intrinsics", True, "model ppd-moge2 and no CameraInfo paired with a frame: use the intrinsics "
       "MoGe-2 estimates for depth/camera_info and points (diagnostics report camera_info: MoGe-2 estimate).",
       "metric", change=LIVE),
    # QoS
    _p("input_reliability", "best_effort", "QoS reliability of the image and camera_info subscriptions.", "qos",
       choices=RELIABILITY_CHOICES),
    _p("input_depth", 1, "QoS history depth of the subscriptions (1 = newest frame only).", "qos", minimum=1),
    _p("output_reliability", "reliable", "QoS reliability of the publishers (reliable so RViz's default QoS "
       "receives them).", "qos", choices=RELIABILITY_CHOICES),
    _p("output_depth", 1, "QoS history depth of the publishers.", "qos", minimum=1),
    # runtime
    _p("diagnostics_period", 1.0, "Seconds between DiagnosticArray messages on /diagnostics.", "runtime",
       minimum=0, exclusive=True, change=LIVE),
    _p("auto_start", True, "Configure (load the model) and activate (start processing) right away, as `ros2 "
       "run` users expect; false: wait for a lifecycle manager.", "runtime", change=READ_ONLY),
)
SPECS = {spec.name: spec for spec in PARAMETERS}
REPORTED = ("depth_kind",)  # set by the node, never from overrides
GROUP_TITLES = {"model": "Model", "video": "Video (mode video)", "input": "Input", "output": "Output",
                "metric": "Metric depth", "qos": "QoS", "runtime": "Runtime"}


class ParameterError(ValueError):
    """One or more parameters are invalid; ``problems`` holds one message per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class DepthConfig:
    """Validated parameter values (names as in :data:`PARAMETERS`)."""

    model: str
    backend: str
    precision: str
    compile: bool
    cuda_graphs: bool
    onnx_providers: tuple[str, ...]
    onnx_dir: str
    weights_dir: str
    device: str
    steps: int
    target_area: int
    seed: int
    cameras: tuple[str, ...]
    mode: str
    video_model: str
    video_stride: int
    video_channel_order: str
    video_queue_size: int
    video_max_gap: float
    input_transport: str
    max_image_pixels: int
    image_is_rectified: bool
    sync_tolerance: float
    camera_info_size_mismatch: str
    output_resolution: str
    depth_scale: float
    depth_shift: float
    filter_flying_pixels: bool
    keep_organized: bool
    max_relative_jump: float
    max_grazing_angle_deg: float
    metric_source: str
    depth_kind: str
    metric_reference_type: str
    metric_reference_topic: str
    metric_reference_tolerance: float
    metric_reference_reuse: bool
    metric_lidar_translation: tuple[float, ...]
    metric_lidar_rotation_xyzw: tuple[float, ...]
    metric_temporal_filter: bool
    metric_max_gap: float
    metric_max_residual: float
    metric_max_age: float
    metric_stale_output: str
    use_moge_intrinsics: bool
    input_reliability: str
    input_depth: int
    output_reliability: str
    output_depth: int
    diagnostics_period: float
    auto_start: bool

    @property
    def model_name(self) -> str:
        """The model that runs: ``video_model`` in mode video, else ``model``."""
        return self.video_model if self.mode == "video" else self.model

    @property
    def is_metric(self) -> bool:
        """Whether a metric source is configured (moge2/sparse are metric once a fit succeeded)."""
        return self.metric_source != "none"

    @property
    def fits_scale(self) -> bool:
        """Whether scale/shift are fitted per frame to a metric reference (moge2, sparse)."""
        return self.metric_source in ("moge2", "sparse")

    @property
    def filter_thresholds(self) -> dict:
        """Keyword arguments of geometry.cloud.depth_to_cloud (None disables a test)."""
        return {"max_relative_jump": self.max_relative_jump if self.max_relative_jump > 0 else None,
                "max_grazing_angle_deg": self.max_grazing_angle_deg if self.max_grazing_angle_deg > 0 else None}

    @property
    def depth_kind_note(self) -> str:
        return DEPTH_KIND_NOTES[self.metric_source]


def default_values() -> dict:
    """Every parameter at its default (the report ``depth_kind`` included)."""
    values = {spec.name: list(spec.default) if isinstance(spec.default, list) else spec.default
              for spec in PARAMETERS}
    values["depth_kind"] = DEPTH_KIND_NOTES[values["metric_source"]]
    return values


def coerce_value(spec: ParamSpec, value):
    """``value`` as the parameter's type (ints accepted for doubles); ``None`` when it cannot be."""
    if isinstance(spec.default, bool):
        return value if isinstance(value, bool) else None
    if isinstance(spec.default, float):
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if isinstance(spec.default, int):
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(spec.default, str):
        return value if isinstance(value, str) else None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return None
    items = list(value)
    if spec.type_name == "string[]":
        return items if all(isinstance(v, str) for v in items) else None
    if any(isinstance(v, (bool, str)) or not isinstance(v, (int, float)) for v in items):
        return None
    return [float(v) for v in items]


def value_problems(spec: ParamSpec, value) -> list[str]:
    """Problems of one (coerced) value on its own: type, choices, range, finiteness."""
    if value is None:
        return [f"parameter {spec.name} must be of type {spec.type_name}"]
    if spec.choices and value not in spec.choices:
        return [f"parameter {spec.name}={value!r} is not one of {', '.join(spec.choices)}"]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"parameter {spec.name}={value} must be finite"]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        too_low = spec.minimum is not None and (value <= spec.minimum if spec.exclusive else value < spec.minimum)
        too_high = spec.maximum is not None and (value >= spec.maximum if spec.exclusive else value > spec.maximum)
        if too_low or too_high:
            return [f"parameter {spec.name}={value} must be {spec.constraint_text}"]
    return []


def _cross_problems(values: dict) -> list[str]:
    """Problems that involve more than one parameter (or a special value)."""
    problems = []
    model_is_metric = False
    if values["model"] in IMAGE_MODEL_NAMES:
        model_is_metric = values["model"] in METRIC_MODEL_NAMES
    elif is_export_path(values["model"]):
        from ppd_ros.nets.exported import ExportError, read_export_metadata

        try:
            model_is_metric = read_export_metadata(values["model"]).is_metric
        except ExportError as error:
            problems.append(f"parameter model={values['model']!r}: {error}")
    else:
        problems.append(f"parameter model={values['model']!r} is not one of {', '.join(IMAGE_MODEL_NAMES)} nor the "
                        "path of an exported model (NAME.safetensors with NAME.json beside it)")
    if 0 < values["target_area"] < 16 * 16:
        problems.append(f"parameter target_area={values['target_area']} is below one 16x16 patch "
                        "(0 = the model's own area)")
    source, model = values["metric_source"], values["model"]
    if source == "moge2" and values["mode"] == "video":
        problems.append("parameter metric_source='moge2' works in mode 'image' only (the video model has no "
                        "metric head); use sparse or fixed in video mode")
    elif source == "moge2" and not model_is_metric:
        problems.append(f"parameter metric_source='moge2' needs a MoGe-2 model ({', '.join(METRIC_MODEL_NAMES)} or "
                        f"an export with MoGe-2 semantics), but model={model!r}")
    if source == "sparse" and not values["metric_reference_topic"]:
        problems.append("parameter metric_reference_topic is empty but metric_source='sparse' needs it")
    for name, size in (("metric_lidar_translation", 3), ("metric_lidar_rotation_xyzw", 4)):
        vector = values[name]
        if len(vector) != size or not all(math.isfinite(v) for v in vector):
            problems.append(f"parameter {name}={list(vector)} must be {size} finite numbers")
        elif size == 4 and math.fsum(v * v for v in vector) < 1e-12:
            problems.append(f"parameter {name}={list(vector)} is not a rotation (zero quaternion)")
    cameras = values["cameras"]
    if cameras != [""]:
        names = [name.strip("/") for name in cameras]
        if not names or any(not name or not all(part.replace("_", "a").isalnum() and not part[0].isdigit()
                                                for part in name.split("/")) for name in names):
            problems.append(f"parameter cameras={cameras!r}: each name must be a ROS name (letters, digits, _, "
                            "/ between parts, not starting with a digit), or [''] for one camera on the node's "
                            "own topics")
        elif len(set(names)) != len(names):
            problems.append(f"parameter cameras={cameras!r} names a camera twice")
    return problems


def validate(values: dict) -> DepthConfig:
    """Check raw values (every name of :data:`PARAMETERS`); :class:`ParameterError` with one message
    per problem, else the :class:`DepthConfig`."""
    problems, coerced = [], {}
    for spec in PARAMETERS:
        value = coerce_value(spec, values.get(spec.name, spec.default))
        problems += value_problems(spec, value)
        coerced[spec.name] = spec.default if value is None else value
    problems += _cross_problems(coerced)
    if problems:
        raise ParameterError(problems)
    coerced.update(metric_lidar_translation=tuple(coerced["metric_lidar_translation"]),
                   metric_lidar_rotation_xyzw=tuple(coerced["metric_lidar_rotation_xyzw"]),
                   cameras=tuple(name.strip("/") for name in coerced["cameras"]),
                   onnx_providers=tuple(coerced["onnx_providers"]))
    return DepthConfig(**{field.name: coerced[field.name] for field in fields(DepthConfig)})


def config_with(overrides: dict | None = None) -> DepthConfig:
    """The validated configuration of the defaults with ``overrides`` applied (tools and tests)."""
    values = default_values()
    unknown = set(overrides or {}) - set(SPECS)
    if unknown:
        raise ParameterError([f"unknown parameter {name!r}" for name in sorted(unknown)])
    values.update(overrides or {})
    values["depth_kind"] = DEPTH_KIND_NOTES.get(values["metric_source"], RELATIVE_NOTE)
    return validate(values)


def read_params_file(path: str | Path, node_name: str = "ppd_depth") -> dict:
    """Parameter values for ``node_name`` from a ROS 2 params YAML (``/**:``, ``node_name:`` or
    ``/ns/node_name:`` keys, each holding ``ros__parameters``), later keys winning."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"params file {path} is not valid YAML: {error}") from error
    values = {}
    for key, section in data.items() if isinstance(data, dict) else ():
        name = str(key).rstrip("/").split("/")[-1]
        if (key in ("/**", "**") or name == node_name) and isinstance(section, dict):
            values.update(section.get("ros__parameters", {}) or {})
    return values


# --------------------------------------------------------------------------- generated documents
def _wrap(text: str, width: int, prefix: str) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width, initial_indent=prefix, subsequent_indent=prefix,
                         break_on_hyphens=False)


def _yaml_value(value) -> str:
    import json

    return json.dumps(value) if isinstance(value, (str, list)) else str(value).lower() if isinstance(
        value, bool) else repr(value)


def params_yaml() -> str:
    """The text of config/depth_node.yaml."""
    live = ", ".join(spec.name for spec in PARAMETERS if spec.change == LIVE)
    lines = [
        "# Parameters of the ppd_ros depth node, with their defaults. GENERATED from ppd_ros/parameters.py",
        "# (python -m ppd_ros.parameters --write); edit the table there, not this file.",
        "# Use:  ros2 run ppd_ros depth_node --ros-args --params-file config/depth_node.yaml",
        "#       ppd-depth-node --ros-args --params-file config/depth_node.yaml -p model:=tiny-random",
        "#       ros2 launch ppd_ros depth.launch.py params_file:=<this file>",
        "#       ppd eval-bag BAG --params-file <this file> ...   (the same configuration, offline)",
        "# `/**:` matches the node under any name and namespace.",
    ]
    lines += _wrap(f"Changed at runtime (ros2 param set), these apply from the next frame: {live}. The others "
                   "are refused while the node is configured (they need deactivate -> cleanup -> configure -> "
                   "activate, or a restart); metric_source and auto_start are set at start only; depth_kind is "
                   "a read-only report set by the node.", 98, "# ")
    lines += ["# Service (mode video): ~/reset_stream (std_srvs/Trigger) flushes the pending frames and restarts",
              "# the stream(s).", "/**:", "  ros__parameters:"]
    for group, title in GROUP_TITLES.items():
        lines.append(f"    # --- {title}")
        for spec in PARAMETERS:
            if spec.group != group or spec.name in REPORTED:
                continue
            lines += _wrap(spec.description, 96, "    # ")
            lines.append(f"    {spec.name}: {_yaml_value(spec.default)}")
    return "\n".join(lines) + "\n"


README_BEGIN = "<!-- parameters: generated by `python -m ppd_ros.parameters --write` -->"
README_END = "<!-- parameters: end -->"


def params_markdown() -> str:
    """The README's parameter table (between :data:`README_BEGIN` and :data:`README_END`)."""
    rows = ["| parameter | type | default | allowed | change | description |", "|---|---|---|---|---|---|"]
    for spec in PARAMETERS:
        default = _yaml_value(spec.default).replace("|", "\\|")
        description = spec.description.replace("|", "\\|")
        rows.append(f"| `{spec.name}` | {spec.type_name} | `{default}` | {spec.constraint_text} | {spec.change} | "
                    f"{description} |")
    return "\n".join(rows)


def readme_with_parameters(readme: str) -> str:
    """``readme`` with its generated parameter block replaced by the current table."""
    start, end = readme.index(README_BEGIN) + len(README_BEGIN), readme.index(README_END)
    return readme[:start] + "\n" + params_markdown() + "\n" + readme[end:]


def main(argv: list[str] | None = None) -> int:
    """``python -m ppd_ros.parameters [--write]``: print (or write) the generated documents."""
    argv = sys.argv[1:] if argv is None else argv
    repo = Path(__file__).resolve().parents[1]
    if "--write" in argv:
        (repo / "config" / "depth_node.yaml").write_text(params_yaml())
        readme = repo / "README.md"
        readme.write_text(readme_with_parameters(readme.read_text()))
        print("wrote config/depth_node.yaml and the README parameter table")
    else:
        print(params_yaml())
    return 0


if __name__ == "__main__":
    sys.exit(main())
