"""Checks of a node's ROS command-line arguments before rclpy sees them.

rclpy.init() answers a missing or malformed ``--params-file`` with an RCLError traceback that
names neither the problem nor, readably, the file; :func:`check_ros_args` returns one line that
does. The launch files use :func:`params_file_problem` on their ``params_file`` argument.
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

PARAMS_KEY = "ros__parameters"


class ParamsFileLoader(yaml.SafeLoader):
    """yaml's safe loader plus the ``!!python/tuple`` tag that launch_ros writes for list
    parameters in the params files it generates (rcl reads them as arrays)."""


ParamsFileLoader.add_constructor("tag:yaml.org,2002:python/tuple",
                                 lambda loader, node: list(loader.construct_sequence(node)))


def ros_args_usable(program: str, argv: list[str]) -> bool:
    """False, after printing the one-line problem, when :func:`check_ros_args` finds one (a node's
    entry point calls this before rclpy.init, whose traceback would hide which file is wrong)."""
    problem = check_ros_args(argv)
    if problem:
        print(f"{program}: {problem}", file=sys.stderr)
    return problem is None


def check_ros_args(argv: list[str]) -> str | None:
    """One-line error for the first ``--params-file PATH`` in the ``--ros-args`` sections of
    ``argv`` that is missing, unreadable or not a ROS parameter file; None when all are fine."""
    in_ros_args = False
    tokens = iter(argv)
    for token in tokens:
        if token == "--ros-args":
            in_ros_args = True
        elif token == "--":
            in_ros_args = False
        elif in_ros_args and token == "--params-file":
            path = next(tokens, None)
            if path is None:
                return "--params-file needs a file path after it"
            problem = params_file_problem(path)
            if problem:
                return problem
    return None


def params_file_problem(path: str) -> str | None:
    """One-line error when ``path`` is not a readable YAML file of node parameters
    (``<node name or /**>: {ros__parameters: {...}}``, namespaces may nest); None when it is."""
    file = Path(path).expanduser()
    if not file.exists():
        return f"parameter file {path} does not exist"
    if not file.is_file():
        return f"parameter file {path} is not a file"
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return f"parameter file {path} cannot be read: {error}"
    try:
        data = yaml.load(text, Loader=ParamsFileLoader)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        reason = getattr(error, "problem", None) or str(error).splitlines()[0]
        return f"parameter file {path} is not valid YAML{line}: {reason}"
    if data is None:
        return None  # rcl accepts an empty file
    problem = _structure_problem(data, [])
    return f"parameter file {path}: {problem}" if problem else None


def _structure_problem(node_keys, keys: list[str]) -> str | None:
    """Problem of a mapping of node (or namespace) names down to ``ros__parameters`` mappings."""
    where = f" under {'/'.join(keys)}" if keys else ""
    if not isinstance(node_keys, dict):
        return (f"expected node names{where} (e.g. `/**:`) with `{PARAMS_KEY}:` below them, "
                f"found {type(node_keys).__name__}")
    for key, value in node_keys.items():
        if key == PARAMS_KEY:
            if not isinstance(value, dict):
                return f"`{PARAMS_KEY}`{where} must hold `name: value` pairs"
            continue
        problem = _structure_problem(value, [*keys, str(key)])
        if problem:
            return problem
    return None
