"""Static checks of launch/, config/depth_node.yaml and config/ppd.rviz (launch and launch_ros are
not installable here, so the launch files are parsed, not run): every ppd_ros executable they start
exists in both install routes, every parameter they set is declared by the depth node, every file
they reference exists, every argument they use is declared."""
from __future__ import annotations

import ast
import configparser
import importlib
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from ppd_ros.ros.params import PARAMETERS, REPORTED, declared_parameter_names

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "ppd_ros"
NODE_OUTPUTS = {"depth", "depth/camera_info", "points", "depth/colored", "depth/frame"}


# ------------------------------------------------------------------ install routes
def colcon_executables() -> dict[str, str]:
    """name -> "module:function" of the launchers CMakeLists.txt installs to lib/ppd_ros."""
    text = (REPO / "CMakeLists.txt").read_text()
    calls = re.findall(r"^\s*ppd_ros_install_launcher\(\s*(\S+)\s+(\S+)\s+(\S+)\s*\)", text, re.MULTILINE)
    return {name: f"{module}:{function}" for name, module, function in calls}


def pip_console_scripts() -> dict[str, str]:
    """name -> "module:function" of setup.cfg console_scripts."""
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    scripts = {}
    for line in parser["options.entry_points"]["console_scripts"].strip().splitlines():
        name, target = (part.strip() for part in line.split("=", 1))
        scripts[name] = target
    return scripts


def share_path(relative: str) -> Path:
    """A file under the package share directory, which is the repository root in a checkout."""
    return REPO / relative


def assert_executable_in_both_routes(executable: str) -> None:
    colcon = colcon_executables()
    assert executable in colcon, f"{executable} is not installed by CMakeLists.txt ({sorted(colcon)})"
    target = colcon[executable]
    pip_targets = set(pip_console_scripts().values())
    assert target in pip_targets, f"{executable} -> {target} has no setup.cfg console script"
    module, function = target.split(":")
    assert callable(getattr(importlib.import_module(module), function))


# ------------------------------------------------------------------ Python launch file
class PythonLaunch:
    """What a launch .py declares and uses, read from its AST."""

    def __init__(self, path: Path):
        self.tree = ast.parse(path.read_text(), filename=str(path))
        self.calls = [node for node in ast.walk(self.tree) if isinstance(node, ast.Call)]

    @staticmethod
    def name(call: ast.Call) -> str:
        return call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")

    def calls_to(self, name: str) -> list[ast.Call]:
        return [call for call in self.calls if self.name(call) == name]

    @staticmethod
    def keyword(call: ast.Call, key: str):
        for keyword in call.keywords:
            if keyword.arg == key:
                return keyword.value
        return None

    def declared_arguments(self) -> set[str]:
        return {ast.literal_eval(call.args[0]) for call in self.calls_to("DeclareLaunchArgument")}

    def used_arguments(self) -> set[str]:
        return {ast.literal_eval(call.args[0]) for call in self.calls_to("LaunchConfiguration")}

    def nodes(self) -> list[tuple[str, str, list[ast.AST]]]:
        """(package, executable, parameters list elements) of each launch_ros Node."""
        found = []
        for call in self.calls_to("Node"):
            package = ast.literal_eval(self.keyword(call, "package"))
            executable = ast.literal_eval(self.keyword(call, "executable"))
            parameters = self.keyword(call, "parameters")
            found.append((package, executable, parameters.elts if parameters is not None else []))
        return found

    def share_files(self) -> list[str]:
        """Paths built as PathJoinSubstitution([FindPackageShare("ppd_ros") or its variable, ...])."""
        share_names = {target.id for node in ast.walk(self.tree) if isinstance(node, ast.Assign)
                       and isinstance(node.value, ast.Call) and self.name(node.value) == "FindPackageShare"
                       for target in node.targets if isinstance(target, ast.Name)}
        paths = []
        for call in self.calls_to("PathJoinSubstitution"):
            first, *rest = call.args[0].elts
            is_share = (isinstance(first, ast.Name) and first.id in share_names) or (
                isinstance(first, ast.Call) and self.name(first) == "FindPackageShare")
            if is_share:
                paths.append("/".join(ast.literal_eval(part) for part in rest))
        return paths


@pytest.fixture(scope="module")
def py_launch() -> PythonLaunch:
    return PythonLaunch(REPO / "launch" / "depth.launch.py")


def test_py_launch_executables_exist_in_both_routes(py_launch):
    ours = [(package, executable) for package, executable, _ in py_launch.nodes() if package == PACKAGE]
    assert ours, "the launch file starts no ppd_ros node"
    for _, executable in ours:
        assert_executable_in_both_routes(executable)


def test_py_launch_parameters_are_declared(py_launch):
    declared = set(declared_parameter_names())
    set_names = set()
    for package, _, parameters in py_launch.nodes():
        if package != PACKAGE:
            continue
        for element in parameters:
            if isinstance(element, ast.Dict):
                set_names |= {ast.literal_eval(key) for key in element.keys}
    assert set_names, "expected the launch file to set input_transport"
    assert set_names <= declared, f"not declared by the node: {sorted(set_names - declared)}"


def test_py_launch_files_and_arguments(py_launch):
    files = py_launch.share_files()
    assert {"config/depth_node.yaml", "config/fastdds_shm.xml", "config/ppd.rviz"} <= set(files)
    for relative in files:
        assert share_path(relative).is_file(), f"launch file references missing {relative}"
    assert py_launch.used_arguments() <= py_launch.declared_arguments()
    assert {"image", "camera_info", "transport", "params_file", "namespace"} <= py_launch.declared_arguments()
    env = [ast.literal_eval(call.args[0]) for call in py_launch.calls_to("SetEnvironmentVariable")]
    assert "FASTRTPS_DEFAULT_PROFILES_FILE" in env


# ------------------------------------------------------------------ XML launch file
SHARE_PATH = re.compile(r"\$\(find-pkg-share ppd_ros\)/([^\s\"']+)")
VARIABLE = re.compile(r"\$\(var (\w+)\)")


@pytest.fixture(scope="module")
def xml_launch() -> ET.Element:
    return ET.parse(REPO / "launch" / "depth.launch.xml").getroot()


def test_xml_launch_executables_parameters_files(xml_launch):
    nodes = [node for node in xml_launch.iter("node") if node.get("pkg") == PACKAGE]
    assert nodes
    declared = set(declared_parameter_names())
    for node in nodes:
        assert_executable_in_both_routes(node.get("exec"))
        names = {param.get("name") for param in node.iter("param") if param.get("name")}
        assert names and names <= declared, f"not declared by the node: {sorted(names - declared)}"
    text = (REPO / "launch" / "depth.launch.xml").read_text()
    files = SHARE_PATH.findall(text)
    assert {"config/depth_node.yaml", "config/fastdds_shm.xml", "config/ppd.rviz"} <= set(files)
    for relative in files:
        assert share_path(relative).is_file(), f"launch file references missing {relative}"
    arguments = {arg.get("name") for arg in xml_launch.iter("arg")}
    assert set(VARIABLE.findall(text)) <= arguments
    assert [env.get("name") for env in xml_launch.iter("set_env")] == ["FASTRTPS_DEFAULT_PROFILES_FILE"]


def test_xml_and_py_launch_are_twins(xml_launch, py_launch):
    assert {arg.get("name") for arg in xml_launch.iter("arg")} == py_launch.declared_arguments()
    xml_nodes = {(node.get("pkg"), node.get("exec")) for node in xml_launch.iter("node")}
    assert xml_nodes == {(package, executable) for package, executable, _ in py_launch.nodes()}


# ------------------------------------------------------------------ config files
def test_params_yaml_documents_every_parameter_with_its_default():
    data = yaml.safe_load((REPO / "config" / "depth_node.yaml").read_text())
    values = data["/**"]["ros__parameters"]
    settable = {spec.name: spec for spec in PARAMETERS if spec.name not in REPORTED}
    assert set(values) == set(settable)
    for name, value in values.items():
        default = settable[name].default
        assert type(value) is type(default) and value == default, f"{name}: yaml {value!r}, node {default!r}"


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
