"""The package's import structure, read from the source with ``ast`` so it cannot creep back:
rclpy and ROS messages only under ppd_ros/ros/, no import cycles between modules, no library
module imports the CLI, lower layers never import upper ones, ros/params.py needs no torch."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ppd_ros"
ROS_MODULES = ("rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "lifecycle_msgs", "std_srvs", "rcl_interfaces",
               "builtin_interfaces", "launch", "launch_ros")
# Layers from the bottom; a module may import its own layer and those below (ppd_ros/__init__ aside).
LAYERS = [
    {"constants", "paths", "device", "model_specs", "parameters", "weights", "nets"},
    {"geometry", "metric", "preprocess", "colormap", "video", "msg_decode", "synthetic"},
    {"backends"},
    {"pipeline"},
    {"evaluation", "training", "bench", "arguments"},
    {"ros", "cli", "msg"},  # msg: the interfaces colcon generates from msg/
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level) of every import statement in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    found = []
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.append((base, id(node) in top_level))
    return found


def sources() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "ppd_ros" or len(parts) < 2:
        return None
    for index, layer in enumerate(LAYERS):
        if parts[1] in layer:
            return index
    raise AssertionError(f"{module}: add its top-level name {parts[1]!r} to a layer in LAYERS")


def test_rclpy_and_ros_messages_only_under_ros():
    offenders = [(name, target) for name, path in sources().items() if not name.startswith("ppd_ros.ros")
                 for target, _ in imports(path)
                 if target.split(".")[0] in ROS_MODULES or target == "ppd_ros.msg" or target.startswith("ppd_ros.msg.")]
    assert offenders == []


def test_no_library_module_imports_the_cli():
    offenders = [name for name, path in sources().items() if name != "ppd_ros.cli"
                 and any(target == "ppd_ros.cli" or target.startswith("ppd_ros.cli.") for target, _ in imports(path))]
    assert offenders == []


def test_lower_layers_never_import_upper_ones():
    offenders = []
    for name, path in sources().items():
        own = layer_of(name)
        for target, _ in imports(path):
            other = layer_of(target) if target.startswith("ppd_ros.") else None
            if own is not None and other is not None and other > own:
                offenders.append(f"{name} -> {target}")
    assert offenders == []


def test_no_import_cycles_between_modules():
    modules = sources()
    graph = {name: {target for target, _ in imports(path) if target in modules and target != name}
             for name, path in modules.items()}
    # a package's __init__ importing its own submodules is not a cycle through its users
    for name in graph:
        graph[name] = {t for t in graph[name] if not (name.startswith(t + ".") and modules[t].name == "__init__.py")}
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for target in graph[node]:
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_params_and_specs_import_without_torch():
    import subprocess

    code = ("import sys, ppd_ros.ros.params, ppd_ros.parameters, ppd_ros.model_specs; "
            "bad = [m for m in ('torch', 'cv2', 'rclpy') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stdout + result.stderr
