"""The depth node's parameters: one table with defaults and descriptions, declaration and validation.

The table (:data:`PARAMETERS`) is the single source of truth: the node declares exactly these,
config/depth_node.yaml documents them, and the launch-file tests check names against
:func:`declared_parameter_names`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from ppd_ros.engine import MODEL_NAMES
from ppd_ros.geometry.cloud import DEFAULT_MAX_GRAZING_ANGLE_DEG, DEFAULT_MAX_RELATIVE_JUMP
from ppd_ros.ros.qos import RELIABILITY_CHOICES
from ppd_ros.video import STRIDE as MAX_VIDEO_STRIDE
from ppd_ros.video_engine import VIDEO_MODEL_NAMES

TRANSPORT_CHOICES = ("raw", "compressed")
SIZE_MISMATCH_CHOICES = ("reject", "scale")
RESOLUTION_CHOICES = ("inference", "input")
MODE_CHOICES = ("image", "video")
METRIC_SOURCES = ("none", "fixed", "moge2", "sparse")
REFERENCE_TYPES = ("depth_image", "pointcloud")
METRIC_MODEL = "ppd-moge2"  # the model whose encoder gives metric depth (metric_source moge2)

# log(depth + 1) = depth_scale * relative + depth_shift. These defaults map the model's
# relative range [-0.5, 0.5] (its 2% / 98% quantiles in training) to 0.5 m .. 10 m.
DEFAULT_DEPTH_SCALE = round(math.log(11.0) - math.log(1.5), 4)
DEFAULT_DEPTH_SHIFT = round(math.log(1.5) + 0.5 * DEFAULT_DEPTH_SCALE, 4)

# Set by the node, never from overrides.
REPORTED = ("depth_kind",)

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


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter: name, default (fixes its type), description, allowed values."""

    name: str
    default: bool | int | float | str | list
    description: str
    choices: tuple[str, ...] = ()
    read_only: bool = False


PARAMETERS: tuple[ParamSpec, ...] = (
    # model
    ParamSpec("model", "ppd-da2", f"Depth model, one of: {', '.join(MODEL_NAMES)}. ppd-da2 and "
              "ppd-moge2 need the official weights (`ppd fetch-weights NAME`); ppd-demo ships with the "
              "package (synthetic scenes only, not for real cameras); tiny-random is a small random network "
              "for tests whose depth is meaningless."),
    ParamSpec("weights_dir", "", "Directory of the official weight files; empty = "
              "$PPD_WEIGHTS_DIR, else ~/.cache/ppd_ros/weights."),
    ParamSpec("device", "auto", "Torch device: auto (cuda when available, else cpu), cpu, cuda, cuda:N."),
    ParamSpec("steps", 4, "Diffusion (Euler) steps per frame; more is slower and slightly sharper."),
    ParamSpec("target_area", 0, "Inference resolution as a pixel area: the image is resized to about "
              "this area at its aspect ratio, both sides multiples of 16; 0 = the model's own (1024x768, "
              "96x64 for ppd-demo)."),
    ParamSpec("seed", 0, "Seed of the diffusion noise (fixed noise gives repeatable depth)."),
    # video
    ParamSpec("mode", "image", "image: every frame on its own with `model` (newest frame wins when "
              "busy); video: a causal PPVD stream with `video_model` (temporally consistent; each frame "
              "comes out with its own header once its window ran, so later by up to video_stride - 1 "
              "frames; frames are queued, not replaced).", choices=MODE_CHOICES),
    ParamSpec("video_model", "ppvd", f"mode video: {', '.join(VIDEO_MODEL_NAMES)} (ppvd needs "
              "`ppd fetch-weights ppvd` and `pi3`; tiny-random-video is a small random network for tests).",
              choices=VIDEO_MODEL_NAMES),
    ParamSpec("video_stride", MAX_VIDEO_STRIDE, f"mode video: new frames per 16-frame window, 1..{MAX_VIDEO_STRIDE}. "
              f"{MAX_VIDEO_STRIDE} = the released windows (latency up to {MAX_VIDEO_STRIDE - 1} frames); smaller = "
              "lower latency, more compute per frame."),
    ParamSpec("video_queue_size", 32, "mode video: frames waiting for the model; when full the oldest "
              "is dropped (counted in dropped_frames)."),
    ParamSpec("video_max_gap", 0.5, "mode video: seconds; a larger gap between frame stamps (or stamps "
              "going back) restarts the stream, and pending frames are flushed when no frame arrived "
              "for this long. The stream also restarts on a CameraInfo change and on ~/reset_stream."),
    # input
    ParamSpec("input_transport", "raw", "raw: subscribe to `image` (sensor_msgs/Image); compressed: "
              "subscribe to `image/compressed` (sensor_msgs/CompressedImage, jpeg or png).",
              choices=TRANSPORT_CHOICES),
    ParamSpec("image_is_rectified", False, "true: the image is rectified, use CameraInfo P (no "
              "distortion); false: use K and D."),
    ParamSpec("sync_tolerance", 0.01, "Seconds: an image pairs with the CameraInfo of the nearest "
              "stamp within this tolerance; 0 = exact stamps only."),
    ParamSpec("camera_info_size_mismatch", "reject", "CameraInfo whose width/height differ from the "
              "image: reject (error, frame skipped) or scale (intrinsics scaled to the image size; "
              "the aspect ratio must match within 1%).", choices=SIZE_MISMATCH_CHOICES),
    # output
    ParamSpec("output_resolution", "inference", "Resolution of depth, depth/camera_info, points and "
              "depth/colored: inference (as computed) or input (upsampled nearest, never smoothed). "
              "mode video: always the input size (the stream resizes back nearest itself).",
              choices=RESOLUTION_CHOICES),
    ParamSpec("depth_scale", DEFAULT_DEPTH_SCALE, "Fixed mapping of relative log-depth to metres: "
              "depth = exp(depth_scale * relative + depth_shift) - 1. The default maps relative "
              "-0.5 .. 0.5 to 0.5 m .. 10 m."),
    ParamSpec("depth_shift", DEFAULT_DEPTH_SHIFT, "See depth_scale."),
    ParamSpec("filter_flying_pixels", True, "Remove points at depth discontinuities from `points`."),
    ParamSpec("keep_organized", True, "true: organised cloud (height x width) with NaN where points "
              "were removed; false: a flat cloud of the valid points only."),
    ParamSpec("max_relative_jump", DEFAULT_MAX_RELATIVE_JUMP, "Flying-pixel filter: remove a point "
              "whose depth differs from both neighbours along an image axis by more than this fraction "
              "of its depth; <= 0 disables this test."),
    ParamSpec("max_grazing_angle_deg", DEFAULT_MAX_GRAZING_ANGLE_DEG, "Flying-pixel filter: remove a "
              "point whose local surface normal is more than this angle (degrees) from the view ray; "
              "<= 0 disables this test."),
    # metric depth
    ParamSpec("metric_source", "none", "Where metres come from. none: RELATIVE depth through the fixed "
              "depth_scale/depth_shift mapping, flagged relative everywhere; fixed: the same mapping, "
              "calibrated by you for this camera, reported metric; moge2: fitted to the metric depth of "
              "MoGe-2 (model ppd-moge2, same encoder pass); sparse: fitted to the reference on "
              "metric_reference_topic. moge2 and sparse fit scale/shift per frame (robust, in log(d + 1)) "
              "and filter them over time. Read-only: set it at start.", choices=METRIC_SOURCES,
              read_only=True),
    ParamSpec("depth_kind", "", "Read-only, set by the node: whether the published depth is relative "
              "or metric and why.", read_only=True),
    ParamSpec("metric_reference_type", "depth_image", "sparse: depth_image = sensor_msgs/Image in 32FC1 "
              "metres or 16UC1 millimetres (0/NaN = no depth), registered to the camera image (same "
              "viewpoint and field of view, any resolution; e.g. stereo or ToF); pointcloud = "
              "sensor_msgs/PointCloud2 with float x, y, z (e.g. LiDAR), projected into the image with the "
              "metric_lidar_* extrinsic and the paired CameraInfo (rectified: K without distortion).",
              choices=REFERENCE_TYPES),
    ParamSpec("metric_reference_topic", "metric_reference", "sparse: topic of the reference (relative "
              "names follow the node's namespace and remaps)."),
    ParamSpec("metric_reference_tolerance", 0.05, "sparse: seconds; a frame pairs with the reference "
              "of the nearest stamp within this. A frame without one keeps the filtered scale/shift."),
    ParamSpec("metric_lidar_translation", [0.0, 0.0, 0.0], "pointcloud reference: position x, y, z "
              "(metres) of the LiDAR frame in the camera optical frame (z forward, x right, y down): "
              "what tf2 lookup_transform(camera_optical_frame, lidar_frame) gives."),
    ParamSpec("metric_lidar_rotation_xyzw", [0.0, 0.0, 0.0, 1.0], "pointcloud reference: orientation of "
              "the LiDAR frame in the camera optical frame, quaternion x, y, z, w."),
    ParamSpec("metric_temporal_filter", True, "moge2/sparse: filter scale/shift over time (Kalman in "
              "log-scale, jumps gated), restarting on a CameraInfo change, a stamp gap above "
              "metric_max_gap or a persistent jump; false: each frame's own fit."),
    ParamSpec("metric_max_gap", 1.0, "moge2/sparse: seconds between frame stamps above which the "
              "scale/shift filter restarts."),
    ParamSpec("metric_max_residual", 0.3, "moge2/sparse: a fit whose inlier RMS residual in "
              "log(depth + 1) units is above this is rejected; the frame keeps the previous scale/shift."),
    ParamSpec("use_moge_intrinsics", True, "model ppd-moge2 and no CameraInfo paired with a frame: use "
              "the intrinsics MoGe-2 estimates for depth/camera_info and points (diagnostics report "
              "camera_info: MoGe-2 estimate)."),
    # QoS
    ParamSpec("input_reliability", "best_effort", "QoS reliability of the image and camera_info "
              "subscriptions.", choices=RELIABILITY_CHOICES),
    ParamSpec("input_depth", 1, "QoS history depth of the subscriptions (1 = newest frame only)."),
    ParamSpec("output_reliability", "reliable", "QoS reliability of the publishers (reliable so RViz's "
              "default QoS receives them).", choices=RELIABILITY_CHOICES),
    ParamSpec("output_depth", 1, "QoS history depth of the publishers."),
    # runtime
    ParamSpec("diagnostics_period", 1.0, "Seconds between DiagnosticArray messages on /diagnostics."),
    ParamSpec("auto_start", True, "Configure (load the model) and activate (start processing) right "
              "away, as `ros2 run` users expect; false: wait for a lifecycle manager."),
)


def declared_parameter_names() -> tuple[str, ...]:
    """Names of every parameter the depth node declares."""
    return tuple(spec.name for spec in PARAMETERS)


class ParameterError(ValueError):
    """One or more parameters are invalid; ``problems`` holds one message per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class NodeConfig:
    """Validated parameter values (names as in :data:`PARAMETERS`)."""

    model: str
    weights_dir: str
    device: str
    steps: int
    target_area: int
    seed: int
    input_transport: str
    image_is_rectified: bool
    sync_tolerance: float
    camera_info_size_mismatch: str
    output_resolution: str
    depth_scale: float
    depth_shift: float
    depth_kind: str
    filter_flying_pixels: bool
    keep_organized: bool
    max_relative_jump: float
    max_grazing_angle_deg: float
    input_reliability: str
    input_depth: int
    output_reliability: str
    output_depth: int
    diagnostics_period: float
    auto_start: bool
    mode: str
    video_model: str
    video_stride: int
    video_queue_size: int
    video_max_gap: float
    metric_source: str
    metric_reference_type: str
    metric_reference_topic: str
    metric_reference_tolerance: float
    metric_lidar_translation: tuple[float, ...]
    metric_lidar_rotation_xyzw: tuple[float, ...]
    metric_temporal_filter: bool
    metric_max_gap: float
    metric_max_residual: float
    use_moge_intrinsics: bool

    @property
    def is_metric(self) -> bool:
        """Whether a metric source is configured (per frame, moge2/sparse are metric once a fit succeeded)."""
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


def config_from_values(values: dict, model_names: tuple[str, ...] = MODEL_NAMES) -> NodeConfig:
    """Validate raw parameter values; raise :class:`ParameterError` with one message per problem."""
    problems: list[str] = []
    specs = {spec.name: spec for spec in PARAMETERS}
    for name, spec in specs.items():
        if spec.choices and values[name] not in spec.choices:
            problems.append(f"parameter {name}={values[name]!r} is not one of {', '.join(spec.choices)}")
    if values["model"] not in model_names:
        problems.append(f"parameter model={values['model']!r} is not a known model; choose one of "
                        f"{', '.join(model_names)}")
    for name in ("steps", "input_depth", "output_depth"):
        if values[name] <= 0:
            problems.append(f"parameter {name}={values[name]} must be positive")
    if values["target_area"] < 0 or 0 < values["target_area"] < 16 * 16:
        problems.append(f"parameter target_area={values['target_area']} is below one 16x16 patch")
    for name in ("sync_tolerance",):
        if not math.isfinite(values[name]) or values[name] < 0:
            problems.append(f"parameter {name}={values[name]} must be finite and >= 0")
    if not math.isfinite(values["diagnostics_period"]) or values["diagnostics_period"] <= 0:
        problems.append(f"parameter diagnostics_period={values['diagnostics_period']} must be positive")
    for name in ("depth_scale", "depth_shift", "max_relative_jump", "max_grazing_angle_deg"):
        if not math.isfinite(values[name]):
            problems.append(f"parameter {name}={values[name]} must be finite")
    if math.isfinite(values["depth_scale"]) and values["depth_scale"] <= 0:
        problems.append(f"parameter depth_scale={values['depth_scale']} must be positive "
                        "(depth grows with relative depth)")
    problems += _metric_problems(values)
    if not 1 <= values["video_stride"] <= MAX_VIDEO_STRIDE:
        problems.append(f"parameter video_stride={values['video_stride']} must be in 1..{MAX_VIDEO_STRIDE}")
    if values["video_queue_size"] < 1:
        problems.append(f"parameter video_queue_size={values['video_queue_size']} must be positive")
    if not math.isfinite(values["video_max_gap"]) or values["video_max_gap"] <= 0:
        problems.append(f"parameter video_max_gap={values['video_max_gap']} must be finite and positive")
    if values["max_grazing_angle_deg"] >= 90:
        problems.append(f"parameter max_grazing_angle_deg={values['max_grazing_angle_deg']} must be "
                        "below 90 (or <= 0 to disable the test)")
    if problems:
        raise ParameterError(problems)
    values = dict(values, metric_lidar_translation=tuple(values["metric_lidar_translation"]),
                  metric_lidar_rotation_xyzw=tuple(values["metric_lidar_rotation_xyzw"]))
    return NodeConfig(**{field.name: values[field.name] for field in fields(NodeConfig)})


def _metric_problems(values: dict) -> list[str]:
    problems = []
    if values["metric_source"] == "moge2" and values["mode"] == "video":
        problems.append("parameter metric_source='moge2' works in mode 'image' only (the video model has "
                        "no metric head); use sparse or fixed in video mode")
    elif values["metric_source"] == "moge2" and values["model"] != METRIC_MODEL:
        problems.append(f"parameter metric_source='moge2' needs model={METRIC_MODEL!r} (its MoGe-2 encoder "
                        f"gives the metric depth), but model={values['model']!r}")
    if not math.isfinite(values["metric_reference_tolerance"]) or values["metric_reference_tolerance"] < 0:
        problems.append(f"parameter metric_reference_tolerance={values['metric_reference_tolerance']} "
                        "must be finite and >= 0")
    for name in ("metric_max_gap", "metric_max_residual"):
        if not math.isfinite(values[name]) or values[name] <= 0:
            problems.append(f"parameter {name}={values[name]} must be finite and positive")
    if values["metric_source"] == "sparse" and not values["metric_reference_topic"]:
        problems.append("parameter metric_reference_topic is empty but metric_source='sparse' needs it")
    for name, size in (("metric_lidar_translation", 3), ("metric_lidar_rotation_xyzw", 4)):
        vector = values[name]
        if len(vector) != size or not all(math.isfinite(v) for v in vector):
            problems.append(f"parameter {name}={list(vector)} must be {size} finite numbers")
        elif size == 4 and math.fsum(v * v for v in vector) < 1e-12:
            problems.append(f"parameter {name}={list(vector)} is not a rotation (zero quaternion)")
    return problems


def declare_parameters(node) -> list[str]:
    """Declare every parameter of :data:`PARAMETERS` on ``node`` (overrides from the command line
    or a params file apply). Returns one message per override of the wrong type."""
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.exceptions import InvalidParameterTypeException

    problems = []
    for spec in PARAMETERS:
        constraints = f"one of: {', '.join(spec.choices)}" if spec.choices else ""
        descriptor = ParameterDescriptor(
            description=spec.description,
            additional_constraints=constraints,
            read_only=spec.read_only,
            # floats also accept integer overrides (`-p sync_tolerance:=0`); converted when read
            dynamic_typing=isinstance(spec.default, (float, list)),
        )
        value = spec.default
        if spec.name == "depth_kind":  # read-only report, from the (read-only) metric_source declared before it
            value = DEPTH_KIND_NOTES.get(node.get_parameter("metric_source").value, RELATIVE_NOTE)
        try:
            node.declare_parameter(spec.name, value, descriptor, ignore_override=spec.name in REPORTED)
        except InvalidParameterTypeException as error:
            problems.append(f"parameter {spec.name}: {error}")
            node.declare_parameter(spec.name, value, descriptor, ignore_override=True)
    return problems


def parameter_values(node) -> tuple[dict, list[str]]:
    """Current values of the declared parameters, floats converted; plus type problems."""
    values, problems = {}, []
    for spec in PARAMETERS:
        value = node.get_parameter(spec.name).value
        if isinstance(spec.default, float):
            if isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            elif not isinstance(value, float):
                problems.append(f"parameter {spec.name}={value!r} must be a number")
                value = spec.default
        elif isinstance(spec.default, list):  # numeric arrays: integer overrides accepted
            try:
                if isinstance(value, (str, bytes)) or any(isinstance(v, (bool, str)) for v in value):
                    raise TypeError
                value = [float(v) for v in value]
            except TypeError:
                problems.append(f"parameter {spec.name}={value!r} must be a list of numbers")
                value = list(spec.default)
        values[spec.name] = value
    return values, problems
