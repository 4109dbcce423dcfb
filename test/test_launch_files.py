"""launch/depth.launch.py and depth.launch.xml, run for real through launch.LaunchService (ROS 2
Jazzy's launch and launch_ros, installed by .ci/setup from ../shared/ros_launch), each launch in
its own process (test/ros_helpers/run_launch.py): the arguments reach the node (model, namespace,
remaps, params file, FASTRTPS_DEFAULT_PROFILES_FILE), the node answers a frame over DDS, bad
arguments and a failing node fail the launch with one clear line, SIGINT shuts everything down
with no orphan; on the colcon install and on a real `pip install` prefix. Plus the checks that need
no run: the arguments agree with the node's parameter table, the RViz config."""
from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from ppd_ros.parameters import PARAMETERS

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "ppd_ros"
RUN_LAUNCH = REPO / "test" / "ros_helpers" / "run_launch.py"
PROFILE_VARIABLE = "FASTRTPS_DEFAULT_PROFILES_FILE"
NODE_OUTPUTS = {"depth", "depth/camera_info", "points", "depth/colored", "depth/frame"}
ARGUMENTS = ["image", "camera_info", "transport", "cameras", "namespace", "model", "device", "steps", "mode",
             "metric_source", "params_file", "rviz", "fixed_frame"]
DOMAIN_ID = 71
WIDTH, HEIGHT = 96, 72
TARGET_AREA = 64 * 48  # from the params file: the node answers at 64x48
# lark-parser 0.12 (launch's substitution grammar; pinned by the rosidl wheels) imports sre_parse
pytestmark = pytest.mark.filterwarnings("ignore:module 'sre_:DeprecationWarning")
STARTED = re.compile(r"\[(\S+)-\d+\]: process started with pid \[(\d+)\]")


def require(condition: bool, reason: str) -> None:
    """Skip (fail under CI, which always has what these tests need) when ``condition`` is false."""
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def launch_stack_missing() -> str | None:
    try:
        import composition_interfaces.srv  # noqa: F401
        import launch_ros.actions  # noqa: F401
        import launch_xml  # noqa: F401
    except ImportError as error:
        return (f"ROS 2 launch is not installed ({error}): `bash .ci/setup` installs it from "
                "../shared/ros_launch")
    return None


@pytest.fixture(scope="module")
def launch_stack() -> None:
    problem = launch_stack_missing()
    require(problem is None, problem or "")


@pytest.fixture(scope="module")
def colcon_prefix(launch_stack) -> Path:
    from test_colcon_route import package_prefix

    install = Path(os.environ.get("PPD_ROS_INSTALL", REPO / "install")).resolve()
    require(any(install.glob(f"**/share/{PACKAGE}/package.dsv")),
            f"no colcon install of {PACKAGE} at {install}: run `bash .ci/setup` (or set PPD_ROS_INSTALL)")
    return package_prefix(install)


@pytest.fixture(scope="module")
def launch_module(colcon_prefix):
    """depth.launch.py as a module (its helpers), with the colcon install in the ament index."""
    saved = os.environ.get("AMENT_PREFIX_PATH")
    os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join([str(colcon_prefix), sys.prefix])
    spec = importlib.util.spec_from_file_location("ppd_depth_launch", REPO / "launch" / "depth.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    if saved is None:
        os.environ.pop("AMENT_PREFIX_PATH")
    else:
        os.environ["AMENT_PREFIX_PATH"] = saved


# ------------------------------------------------------------------ processes
def launch_env(prefixes: list[Path], pythonpath: list[Path], domain_id: int = DOMAIN_ID) -> dict[str, str]:
    """Environment of a launch process: ``prefixes`` (then this venv) in the ament index,
    ``pythonpath`` first on PYTHONPATH, no Fast DDS profile set, the test's ROS domain."""
    from ros_helpers.harness import ros_env

    env = ros_env(domain_id)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(map(str, [*prefixes, sys.prefix]))
    env["PYTHONPATH"] = os.pathsep.join(map(str, [*pythonpath, *filter(None, [os.environ.get("PYTHONPATH")])]))
    env.pop(PROFILE_VARIABLE, None)
    # as in an activated venv: the colcon launchers start `/usr/bin/env python3`
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def colcon_env(prefix: Path, extra_prefixes: tuple[Path, ...] = ()) -> dict[str, str]:
    """launch_env with what `source install/setup.sh` adds for ppd_ros, ``extra_prefixes`` first."""
    from test_colcon_route import install_environment

    return install_environment(prefix, launch_env([*extra_prefixes, prefix], []))


def start_launch(path: Path, arguments: list[str], env: dict[str, str], cwd: Path):
    from ros_helpers.harness import NodeProcess

    return NodeProcess([sys.executable, str(RUN_LAUNCH), str(path), *arguments], DOMAIN_ID, env=env, cwd=cwd)


def run_launch(path: Path, arguments: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """(return code, output) of a launch expected to end by itself."""
    result = subprocess.run([sys.executable, str(RUN_LAUNCH), str(path), *arguments], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=90)
    return result.returncode, result.stdout


def started_pids(output: list[str] | str) -> dict[str, int]:
    """Process name (depth_node, rviz2) -> pid, from launch's `process started with pid` lines."""
    text = output if isinstance(output, str) else "\n".join(output)
    return {name: int(pid) for name, pid in STARTED.findall(text)}


def wait_started(launch, name: str, timeout: float = 30.0) -> int:
    launch.wait_for_line(f"[{name}-", "process started with pid", timeout=timeout)
    return started_pids(launch.output())[name]


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a live process from /proc, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    state, ppid = text.rsplit(")", 1)[1].split()[:2]
    return state, int(ppid)


def alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def proc_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def stop_launch(launch, pids: list[int]) -> None:
    """Ctrl-C (SIGINT to the launch's process group): the launch must exit 0 and leave none of
    ``pids`` running."""
    output = lambda: "\n".join(launch.output()[-40:])  # noqa: E731
    if launch.process.poll() is None:
        os.killpg(launch.process.pid, signal.SIGINT)
        try:
            launch.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    assert launch.stop() == 0, output()
    assert "escalating to 'SIGTERM'" not in output(), output()
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = [pid for pid in pids if alive(pid)]
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    assert not orphans, f"processes left running after the launch ended: {orphans}\n{output()}"


# ------------------------------------------------------------------ DDS side
def get_parameters(client, node: str, names: list[str]) -> dict:
    """Parameter values of ``node`` through its get_parameters service."""
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    response = client.call(GetParameters, f"{node}/get_parameters", GetParameters.Request(names=names),
                           resend_every=5.0)
    return {name: parameter_value_to_python(value) for name, value in zip(names, response.values)}


def answer_one_frame(client, launch, image_topic: str, info_topic: str, depth_topic: str):
    """Publish one camera frame (Image + CameraInfo) until ``depth_topic`` answers it."""
    from sensor_msgs.msg import CameraInfo, Image

    from ppd_ros.ros.conversions import numpy_to_image
    from ros_helpers.harness import camera_info_msg, make_stamp, same_stamp, synthetic_frames

    (rgb,), camera = synthetic_frames(1, WIDTH, HEIGHT)
    stamp = make_stamp(1)
    image = numpy_to_image(rgb, "rgb8")
    image.header.stamp, image.header.frame_id = stamp, "launch_test_optical_frame"
    info = camera_info_msg(camera, stamp, "launch_test_optical_frame")
    client.subscribe(depth_topic, Image)
    image_pub = client.publisher(image_topic, Image)
    info_pub = client.publisher(info_topic, CameraInfo)
    launch.wait_for_line("Output:", timeout=60)  # the node is configured and active
    client.wait_until_connected([image_pub, info_pub])
    deadline = time.monotonic() + 45
    while True:
        info_pub.publish(info)
        image_pub.publish(image)
        try:
            depth = client.wait_for(depth_topic, same_stamp(stamp), timeout=3)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
    assert depth.encoding == "32FC1" and depth.header.frame_id == "launch_test_optical_frame"
    return depth


def stand_in_rviz2(root: Path) -> tuple[Path, Path]:
    """(ament prefix, record dir) of a stand-in for RViz 2, a GUI that cannot be installed here:
    package rviz2 with lib/rviz2/rviz2 that saves its arguments and `-d` config and waits for SIGINT."""
    prefix, record = root / "rviz_prefix", root / "rviz_record"
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "rviz2").write_text("")
    executable = prefix / "lib" / "rviz2" / "rviz2"
    executable.parent.mkdir(parents=True)
    record.mkdir()
    executable.write_text(
        f"#!{sys.executable}\n"
        "import pathlib, shutil, signal, sys, time\n"
        f"record = pathlib.Path({str(record)!r})\n"
        "args = sys.argv[1:]\n"
        "shutil.copy(args[args.index('-d') + 1], record / 'config.rviz')\n"
        "(record / 'args.txt').write_text('\\n'.join(args))\n"
        "signal.signal(signal.SIGINT, lambda *_: sys.exit(0))\n"
        "while True:\n    time.sleep(1)\n")
    executable.chmod(0o755)
    return prefix, record


def params_file(path: Path) -> Path:
    """Parameters a launch argument does not cover: target_area; model is overridden by model:=."""
    path.write_text("/**:\n  ros__parameters:\n"
                    f"    model: ppd-demo\n    device: cpu\n    target_area: {TARGET_AREA}\n")
    return path


# ------------------------------------------------------------------ real launches
def test_py_launch_colcon_route_arguments_reach_the_node(colcon_prefix, tmp_path):
    """depth.launch.py from the colcon install with every kind of argument, RViz included."""
    from ros_helpers.harness import RosClient

    share = colcon_prefix / "share" / PACKAGE
    rviz_prefix, record = stand_in_rviz2(tmp_path)
    launch = start_launch(share / "launch" / "depth.launch.py", [
        "model:=tiny-random", "steps:=2", "namespace:=front", "image:=/cam/color/image_raw",
        "camera_info:=/cam/color/camera_info", f"params_file:={params_file(tmp_path / 'params.yaml')}",
        "rviz:=true", "fixed_frame:=cam_optical"], colcon_env(colcon_prefix, (rviz_prefix,)), tmp_path)
    pids, generated = [], None
    try:
        node_pid = wait_started(launch, "depth_node")
        pids.append(node_pid)
        pids.append(wait_started(launch, "rviz2"))
        assert proc_stat(node_pid)[1] == launch.process.pid
        profile = proc_environ(node_pid)[PROFILE_VARIABLE]
        assert profile == str(share / "config" / "fastdds_shm.xml") and Path(profile).is_file()

        client = RosClient(DOMAIN_ID, "launch_test_client")
        try:
            depth = answer_one_frame(client, launch, "/cam/color/image_raw", "/cam/color/camera_info",
                                     "/front/depth")
            assert (depth.height, depth.width) == (48, 64)  # target_area from the params file
            assert get_parameters(client, "/front/ppd_depth",
                                  ["model", "steps", "device", "target_area", "input_transport"]) == {
                "model": "tiny-random", "steps": 2,  # launch arguments override the params file
                "device": "cpu", "target_area": TARGET_AREA,  # arguments at their default do not
                "input_transport": "raw"}
        finally:
            client.close()

        config = yaml.safe_load((record / "config.rviz").read_text())
        topics = {d["Topic"]["Value"] for d in config["Visualization Manager"]["Displays"] if "Topic" in d}
        assert topics == {"/front/points", "/front/depth", "/front/depth/colored"}
        assert config["Visualization Manager"]["Global Options"]["Fixed Frame"] == "cam_optical"
        generated = Path((record / "args.txt").read_text().splitlines()[1])
        assert generated.is_file()
    finally:
        stop_launch(launch, pids)
    assert not generated.exists(), f"the generated RViz config {generated} outlived the launch"


def test_two_cameras_one_node_from_the_launch_file(colcon_prefix, tmp_path):
    """cameras:=front,rear: one node reads both cameras' topics and answers each under its name."""
    from ros_helpers.harness import RosClient

    share = colcon_prefix / "share" / PACKAGE
    launch = start_launch(share / "launch" / "depth.launch.py", [
        "model:=tiny-random", "steps:=1", "namespace:=robot", "cameras:=front,rear", "image:=color/image_raw",
        "camera_info:=color/camera_info", f"params_file:={params_file(tmp_path / 'params.yaml')}"],
        colcon_env(colcon_prefix), tmp_path)
    pids = []
    try:
        pids.append(wait_started(launch, "depth_node"))
        client = RosClient(DOMAIN_ID, "launch_test_client")
        try:
            for camera in ("front", "rear"):
                answer_one_frame(client, launch, f"/{camera}/color/image_raw", f"/{camera}/color/camera_info",
                                 f"/robot/{camera}/depth")
            assert get_parameters(client, "/robot/ppd_depth", ["cameras"]) == {"cameras": ["front", "rear"]}
        finally:
            client.close()
        assert len(started_pids(launch.output())) == 1  # one process, one model
    finally:
        stop_launch(launch, pids)


@pytest.fixture(scope="module")
def pip_prefix(launch_stack, tmp_path_factory) -> Path:
    """A real `pip install` (no deps) of a copy of this checkout into a fresh prefix."""
    import shutil

    root = tmp_path_factory.mktemp("pip_route")
    source, prefix = root / "source", root / "prefix"
    source.mkdir()
    for name in ("setup.py", "setup.cfg", "package.xml", "README.md", "CMakeLists.txt"):
        shutil.copy(REPO / name, source / name)
    for name in ("ppd_ros", "msg", "model", "config", "launch"):
        shutil.copytree(REPO / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pth", "*.pt", "*.onnx", "*.engine"))
    ours = Path(sys.prefix) / "bin" / "ppd"
    ours_before = ours.exists()
    # --ignore-installed: without it pip "upgrades" this venv's own (editable) ppd_ros by
    # uninstalling it, although the new one goes to another prefix
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                             "--ignore-installed", "--no-compile", "--disable-pip-version-check",
                             "--prefix", str(prefix), str(source)], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ours.exists() == ours_before, "pip install --prefix removed this venv's ppd_ros"
    return prefix


def test_pip_route_installs_what_launch_needs(pip_prefix):
    from test_colcon_route import package_prefix

    assert (pip_prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()
    for name in ("launch/depth.launch.py", "launch/depth.launch.xml", "config/fastdds_shm.xml",
                 "config/depth_node.yaml", "config/ppd.rviz", "package.xml"):
        assert (pip_prefix / "share" / PACKAGE / name).is_file(), name
    cmake = re.findall(r"^\s*ppd_ros_install_launcher\(\s*(\S+)\s+(\S+)\s+(\S+)\s*\)",
                       (REPO / "CMakeLists.txt").read_text(), re.MULTILINE)
    launchers = sorted(path.name for path in (pip_prefix / "lib" / PACKAGE).iterdir())
    assert launchers == sorted(name for name, _, _ in cmake)
    for name, module, function in cmake:
        launcher = pip_prefix / "lib" / PACKAGE / name
        assert os.access(launcher, os.X_OK) and f"from {module} import {function}" in launcher.read_text()
    colcon = Path(os.environ.get("PPD_ROS_INSTALL", REPO / "install")).resolve()
    if any(colcon.glob(f"**/share/{PACKAGE}/package.dsv")):  # both routes start the same executables
        assert launchers == sorted(p.name for p in (package_prefix(colcon) / "lib" / PACKAGE).iterdir())


def test_xml_launch_pip_route_serves_a_frame(pip_prefix, tmp_path):
    """depth.launch.xml from a pip install: the ament index finds it, the pip launcher starts the
    node with the installed profile, and `lib/ppd_ros/ppd dds-profile` prints where it is."""
    from ros_helpers.harness import RosClient

    share = pip_prefix / "share" / PACKAGE
    site_packages = next(pip_prefix.glob("lib/python*/site-packages"))
    env = launch_env([pip_prefix], [site_packages])
    profile = share / "config" / "fastdds_shm.xml"
    printed = subprocess.run([str(pip_prefix / "lib" / PACKAGE / "ppd"), "dds-profile", "--path"], env=env,
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert printed.stdout.strip() == str(profile), printed.stderr

    launch = start_launch(share / "launch" / "depth.launch.xml", [
        "model:=tiny-random", "namespace:=rear", f"params_file:={params_file(tmp_path / 'params.yaml')}"],
        env, tmp_path)
    pids = []
    try:
        node_pid = wait_started(launch, "depth_node")
        pids.append(node_pid)
        assert proc_environ(node_pid)[PROFILE_VARIABLE] == str(profile)
        assert "from ppd_ros.ros.depth_node import main" in Path(f"/proc/{node_pid}/cmdline").read_text()
        client = RosClient(DOMAIN_ID, "launch_test_client")
        try:
            answer_one_frame(client, launch, "/camera/image_raw", "/camera/camera_info", "/rear/depth")
        finally:
            client.close()
    finally:
        stop_launch(launch, pids)


def test_failed_node_fails_the_launch(colcon_prefix, tmp_path):
    """The default model without its weights downloaded: the node says so and exits 1."""
    env = dict(colcon_env(colcon_prefix), PPD_WEIGHTS_DIR=str(tmp_path))
    rc, output = run_launch(colcon_prefix / "share" / PACKAGE / "launch" / "depth.launch.py", [], env, tmp_path)
    assert rc == 1, output
    assert "run `ppd fetch-weights ppd`" in output, output
    assert "the ppd_ros depth node exited with code 1" in output
    assert not any(alive(pid) for pid in started_pids(output).values())


@pytest.mark.parametrize("launch_file, arguments, error", [
    ("depth.launch.py", ["transport:=udp"], 'Argument "transport" provided value "udp" is not valid'),
    ("depth.launch.xml", ["model:=nope"], "model='nope' is not one of ppd-da2"),
    ("depth.launch.xml", ["params_file:={tmp}/missing.yaml"], "parameter file {tmp}/missing.yaml does not exist"),
    ("depth.launch.py", ["rviz:=true"], "rviz:=true, but RViz 2 is not installed"),
])
def test_bad_argument_fails_before_anything_starts(colcon_prefix, tmp_path, launch_file, arguments, error):
    arguments = [argument.format(tmp=tmp_path) for argument in arguments]
    rc, output = run_launch(colcon_prefix / "share" / PACKAGE / "launch" / launch_file, arguments,
                            colcon_env(colcon_prefix), tmp_path)
    assert rc == 1, output
    errors = [line for line in output.splitlines() if line.startswith("[ERROR] [launch]:")]
    assert len(errors) == 1 and error.format(tmp=tmp_path) in errors[0], output
    assert "process started" not in output, output


# ------------------------------------------------------------------ arguments and config files
def declared_arguments(launch_file: Path) -> list:
    """The DeclareLaunchArgument actions at the top of a .py or .xml launch file."""
    from launch.actions import DeclareLaunchArgument
    from launch.launch_description_sources import AnyLaunchDescriptionSource

    description = AnyLaunchDescriptionSource(str(launch_file)).try_get_launch_description_without_context()
    return [entity for entity in description.entities if isinstance(entity, DeclareLaunchArgument)]


@pytest.mark.parametrize("launch_file", ["depth.launch.py", "depth.launch.xml"])
def test_launch_arguments_follow_the_parameter_table(launch_module, launch_file):
    from launch import LaunchContext
    from launch.utilities import perform_substitutions

    arguments = {argument.name: argument for argument in declared_arguments(REPO / "launch" / launch_file)}
    assert list(arguments) == ARGUMENTS
    specs = {spec.name: spec for spec in PARAMETERS}
    context = LaunchContext()
    for name, parameter in launch_module.PARAMETER_ARGUMENTS.items():
        spec = specs[parameter]
        assert perform_substitutions(context, arguments[name].default_value) == str(spec.default), name
        assert arguments[name].choices == (list(spec.choices) or None), name
    python = {argument.name: argument for argument in declared_arguments(REPO / "launch" / "depth.launch.py")}
    for name, argument in arguments.items():  # the twins agree on the rest too
        assert (perform_substitutions(context, argument.default_value), argument.choices) == (
            perform_substitutions(context, python[name].default_value), python[name].choices), name


def test_xml_hands_every_argument_to_the_python_file():
    root = ET.parse(REPO / "launch" / "depth.launch.xml").getroot()
    include, = root.iter("include")
    assert include.get("file") == "$(dirname)/depth.launch.py"
    assert {arg.get("name"): arg.get("value") for arg in include.iter("arg")} == {
        name: f"$(var {name})" for name in ARGUMENTS}


def test_parameter_overrides_only_for_arguments_off_their_default(launch_module):
    defaults = {name: str({spec.name: spec for spec in PARAMETERS}[parameter].default)
                for name, parameter in launch_module.PARAMETER_ARGUMENTS.items()}
    assert launch_module.parameter_overrides(defaults) == {}
    changed = dict(defaults, model="ppd-demo", steps="8", transport="compressed")
    assert launch_module.parameter_overrides(changed) == {
        "model": "ppd-demo", "steps": 8, "input_transport": "compressed"}
    with pytest.raises(RuntimeError, match=r"steps:='eight': parameter steps must be of type int"):
        launch_module.parameter_overrides(dict(defaults, steps="eight"))
    with pytest.raises(RuntimeError, match=r"steps:='0': parameter steps=0 must be"):
        launch_module.parameter_overrides(dict(defaults, steps="0"))


def test_rviz_config_follows_namespace_and_fixed_frame(launch_module):
    template = (REPO / "config" / "ppd.rviz").read_text()
    original = yaml.safe_load(template)
    assert original["Visualization Manager"]["Global Options"]["Fixed Frame"] == launch_module.DEFAULT_FIXED_FRAME
    for namespace, prefix in (("/", ""), ("/robot/front", "/robot/front")):
        config = yaml.safe_load(launch_module.rviz_config(template, namespace, "base_link"))
        manager = config["Visualization Manager"]
        assert manager["Global Options"]["Fixed Frame"] == "base_link"
        for before, after in zip(original["Visualization Manager"]["Displays"], manager["Displays"]):
            if "Topic" in before:
                assert after["Topic"] == dict(before["Topic"], Value=prefix + before["Topic"]["Value"])
            else:
                assert after == before


def test_rviz_shows_node_outputs_with_publisher_qos():
    config = yaml.safe_load((REPO / "config" / "ppd.rviz").read_text())
    displays = config["Visualization Manager"]["Displays"]
    by_class = {}
    for display in displays:
        by_class.setdefault(display["Class"], []).append(display)
    cloud, = by_class["rviz_default_plugins/PointCloud2"]
    images = by_class["rviz_default_plugins/Image"]
    assert cloud["Topic"]["Value"] == "/points"
    assert "/depth" in {image["Topic"]["Value"] for image in images}
    output_reliability = {spec.name: spec.default for spec in PARAMETERS}["output_reliability"]
    for display in [cloud, *images]:
        assert display["Topic"]["Value"].lstrip("/") in NODE_OUTPUTS
        assert display["Topic"]["Reliability Policy"].lower().replace(" ", "_") in ("best_effort", output_reliability)
