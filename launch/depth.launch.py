"""Start the ppd_ros depth node (and optionally RViz).

    ros2 launch ppd_ros depth.launch.py image:=/camera/color/image_raw \
        camera_info:=/camera/color/camera_info model:=ppd-moge2 metric_source:=moge2 namespace:=front

Arguments (`ros2 launch ppd_ros depth.launch.py --show-args` lists them with their choices):
- image, camera_info: input topics of the camera; transport: raw | compressed (then the node
  subscribes to <image>/compressed).
- cameras: several cameras served by one node from one model, comma separated (cameras:=front,rear).
  Then image and camera_info are topic names under each camera's namespace: with
  image:=color/image_raw camera_info:=color/camera_info the node reads /front/color/image_raw and
  /rear/color/image_raw (what two realsense-ros cameras named front and rear publish) and writes
  <namespace>/front/depth, <namespace>/rear/points, ...
- model, device, steps, mode, metric_source: the node parameters users change most; names,
  defaults and choices are the node's own (ppd_ros/parameters.py). One set to another value than
  its default overrides params_file; one at its default leaves the params_file value.
- params_file: YAML of node parameters (`/**:` keys), default config/depth_node.yaml.
- namespace: of the node, so outputs land in <namespace>/depth, <namespace>/points, ...
- rviz: also start RViz with config/ppd.rviz, its topics moved under the namespace and its Fixed
  Frame set to fixed_frame (default camera_color_optical_frame, the color optical frame of
  realsense-ros and Orbbec cameras: set it to the header.frame_id of your images, or to any frame
  TF connects to it).
FASTRTPS_DEFAULT_PROFILES_FILE is set for every process of this launch to config/fastdds_shm.xml
(unless already set), so big depth images and clouds travel through shared memory instead of being
dropped by Fast DDS's small default segment; the camera driver's process needs it too.
The launch fails (non-zero exit, one error line) on a bad argument or params file, on rviz:=true
without RViz 2 installed (checked before anything starts), and when the node exits with an error.
"""
from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import yaml
from ament_index_python.packages import PackageNotFoundError, get_package_prefix
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, LogInfo, OpaqueFunction, RegisterEventHandler,
                            SetEnvironmentVariable, Shutdown)
from launch.event_handlers import OnProcessExit, OnShutdown
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare
from launch_ros.utilities import make_namespace_absolute, prefix_namespace

from ppd_ros.model_specs import IMAGE_MODEL_NAMES, is_export_path
from ppd_ros.parameters import SPECS, coerce_value, value_problems
from ppd_ros.ros.cli_args import params_file_problem

PACKAGE = "ppd_ros"
NODE_NAME = "ppd_depth"
PROFILE_VARIABLE = "FASTRTPS_DEFAULT_PROFILES_FILE"
DEFAULT_FIXED_FRAME = "camera_color_optical_frame"
# launch argument -> node parameter it sets
PARAMETER_ARGUMENTS = {
    "model": "model",
    "device": "device",
    "steps": "steps",
    "mode": "mode",
    "metric_source": "metric_source",
    "transport": "input_transport",
}


def parameter_argument(argument: str) -> DeclareLaunchArgument:
    """A launch argument with the default, choices and description of its node parameter."""
    spec = SPECS[PARAMETER_ARGUMENTS[argument]]
    return DeclareLaunchArgument(argument, default_value=str(spec.default), description=spec.description,
                                 choices=list(spec.choices) or None)


def parameter_value(argument: str, text: str):
    """The launch argument's text as a value of its parameter, checked as the node checks it
    (type, choices, range); RuntimeError with the node's message if it is not valid."""
    spec = SPECS[PARAMETER_ARGUMENTS[argument]]
    value = text
    if not isinstance(spec.default, str):
        try:
            value = coerce_value(spec, yaml.safe_load(text))
        except yaml.YAMLError:
            value = None
    problems = value_problems(spec, value)
    if spec.name == "model" and value not in IMAGE_MODEL_NAMES and not is_export_path(value):
        problems = [f"parameter model={value!r} is not one of {', '.join(IMAGE_MODEL_NAMES)} nor the path of an "
                    "exported model (NAME.safetensors with NAME.json beside it)"]
    if problems:
        raise RuntimeError(f"launch argument {argument}:={text!r}: {problems[0]}")
    return value


def parameter_overrides(arguments: dict[str, str]) -> dict:
    """Node parameters of the launch arguments that differ from their defaults."""
    overrides = {}
    for argument, parameter in PARAMETER_ARGUMENTS.items():
        value = parameter_value(argument, arguments[argument])
        if value != SPECS[parameter].default:
            overrides[parameter] = value
    return overrides


def rviz_config(template: str, namespace: str, fixed_frame: str) -> str:
    """The RViz config ``template`` (config/ppd.rviz, topics under /) with every display topic
    moved under the absolute ``namespace`` and the Global Options' Fixed Frame set."""
    config = yaml.safe_load(template)
    manager = config["Visualization Manager"]
    prefix = namespace.rstrip("/")
    for display in manager["Displays"]:
        if "Topic" in display:
            display["Topic"]["Value"] = prefix + "/" + display["Topic"]["Value"].lstrip("/")
    manager["Global Options"]["Fixed Frame"] = fixed_frame
    return yaml.safe_dump(config, sort_keys=False)


def rviz2_problem() -> str | None:
    """Why rviz:=true cannot start RViz 2 here, or None."""
    try:
        executable = Path(get_package_prefix("rviz2")) / "lib" / "rviz2" / "rviz2"
    except (PackageNotFoundError, EnvironmentError):
        executable = None
    if executable is not None and os.access(executable, os.X_OK):
        return None
    distro = os.environ.get("ROS_DISTRO", "<distro>")
    return (f"rviz:=true, but RViz 2 is not installed (no package 'rviz2' in AMENT_PREFIX_PATH): "
            f"install ros-{distro}-rviz2 or launch with rviz:=false")


def node_exited(event, context):
    """Stop the launch when the depth node ends; fail it when the node failed."""
    if context.is_shutdown:
        return None
    if event.returncode not in (0, -signal.SIGINT):  # Ctrl-C may reach the node first
        # An exception is what makes LaunchService.run() (and `ros2 launch`) return non-zero.
        raise RuntimeError(f"the ppd_ros depth node exited with code {event.returncode} "
                           "(its error is above); stopping the launch")
    return [Shutdown(reason="the ppd_ros depth node exited")]


def launch_setup(context):
    """Check the arguments, then the actions that start the node (and RViz)."""
    arguments = dict(context.launch_configurations)
    share = Path(FindPackageShare(PACKAGE).perform(context))
    params_file = arguments["params_file"]
    problem = params_file_problem(params_file) if params_file else None
    if problem:
        raise RuntimeError(f"launch argument params_file: {problem}")
    overrides = parameter_overrides(arguments)
    start_rviz = arguments["rviz"] == "true"
    if start_rviz and (problem := rviz2_problem()):
        raise RuntimeError(problem)

    namespace = make_namespace_absolute(prefix_namespace(
        context.launch_configurations.get("ros_namespace"), arguments["namespace"]))
    image, info = arguments["image"], arguments["camera_info"]
    cameras = [name.strip().strip("/") for name in arguments["cameras"].split(",") if name.strip()]
    if cameras:
        if image.startswith("/") or info.startswith("/"):
            raise RuntimeError(f"launch argument cameras:={arguments['cameras']}: image and camera_info must then be "
                               "names under each camera's namespace (e.g. image:=color/image_raw), got "
                               f"{image}, {info}")
        overrides["cameras"] = cameras
        remappings = [(f"{camera}/{topic}", f"/{camera}/{target}") for camera in cameras for topic, target in
                      (("image", image), ("image/compressed", image.rstrip("/") + "/compressed"),
                       ("camera_info", info))]
    else:
        remappings = [("image", image), ("image/compressed", image.rstrip("/") + "/compressed"), ("camera_info", info)]
    profile = os.environ.get(PROFILE_VARIABLE) or str(share / "config" / "fastdds_shm.xml")
    node = Node(
        package=PACKAGE,
        executable="depth_node",
        name=NODE_NAME,
        namespace=arguments["namespace"],
        output="screen",
        parameters=[*([params_file] if params_file else []), *([overrides] if overrides else [])],
        remappings=remappings,
    )
    actions = [
        SetEnvironmentVariable(PROFILE_VARIABLE, profile),
        LogInfo(msg=f"ppd_ros: node {namespace.rstrip('/')}/{NODE_NAME} on "
                    f"{', '.join(target for _, target in remappings[::3])} ({arguments['transport']}), parameters "
                    f"{params_file or '(node defaults)'} + {overrides or 'no overrides'}; "
                    f"{PROFILE_VARIABLE}={profile}"),
        RegisterEventHandler(OnProcessExit(target_action=node, on_exit=node_exited)),
        node,
    ]
    if start_rviz:
        config = tempfile.NamedTemporaryFile("w", prefix="ppd_rviz_", suffix=".rviz", delete=False)
        with config:
            shown = prefix_namespace(namespace, cameras[0]) if cameras else namespace  # RViz shows the first camera
            config.write(rviz_config((share / "config" / "ppd.rviz").read_text(), shown, arguments["fixed_frame"]))
        actions += [
            RegisterEventHandler(OnShutdown(
                on_shutdown=lambda event, context: Path(config.name).unlink(missing_ok=True))),
            Node(package="rviz2", executable="rviz2", name="ppd_rviz", namespace=arguments["namespace"],
                 arguments=["-d", config.name], output="screen",
                 on_exit=[Shutdown(reason="RViz was closed")]),
        ]
    return actions


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument("image", default_value="/camera/image_raw",
                              description="Input image topic (sensor_msgs/Image; with transport "
                                          "compressed the node subscribes to <image>/compressed)."),
        DeclareLaunchArgument("camera_info", default_value="/camera/camera_info",
                              description="CameraInfo topic of the input images."),
        parameter_argument("transport"),
        DeclareLaunchArgument("cameras", default_value="",
                              description="Several cameras in one node, comma separated (front,rear); image and "
                                          "camera_info are then names under each camera's namespace."),
        DeclareLaunchArgument("namespace", default_value="",
                              description="Namespace of the node and its outputs (<namespace>/depth, ...)."),
        parameter_argument("model"),
        parameter_argument("device"),
        parameter_argument("steps"),
        parameter_argument("mode"),
        parameter_argument("metric_source"),
        DeclareLaunchArgument("params_file", default_value=[share, "/config/depth_node.yaml"],
                              description="YAML file of node parameters (use /**: keys); model, "
                                          "device, steps, mode, metric_source and transport "
                                          "override it where they differ from their defaults."),
        DeclareLaunchArgument("rviz", default_value="false", choices=["true", "false"],
                              description="Also start RViz 2 showing the cloud and the depth image."),
        DeclareLaunchArgument("fixed_frame", default_value=DEFAULT_FIXED_FRAME,
                              description="RViz Fixed Frame: the frame_id of the camera images, or a "
                                          "frame TF connects to it."),
        OpaqueFunction(function=launch_setup),
    ])
