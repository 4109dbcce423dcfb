"""ppd_ros.ros.cli_args.check_ros_args on real parameter files, checked against rcl itself: it
reports exactly the files that make rclpy.init() fail, with one line naming the file; and
`ppd dds-profile`, which prints where the Fast DDS profile is installed."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ppd_ros.cli import main as ppd_main
from ppd_ros.paths import share_dir
from ppd_ros.ros.cli_args import check_ros_args

GOOD = {
    "wildcard.yaml": "/**:\n  ros__parameters:\n    model: tiny-random\n    steps: 2\n",
    "nested_namespace.yaml": "front:\n  ppd_depth:\n    ros__parameters:\n      steps: 2\n",
    "nested_values.yaml": "/**:\n  ros__parameters:\n    qos:\n      depth: 2\n",
    "empty.yaml": "",
}
BAD = {  # file name -> (content, what the message says)
    "broken.yaml": ("/**:\n  ros__parameters: [\n", "is not valid YAML at line"),
    "no_params_key.yaml": ("/**:\n  model: tiny-random\n", "found str"),
    "params_not_mapping.yaml": ("/**:\n  ros__parameters: 3\n", "must hold `name: value` pairs"),
    "params_empty.yaml": ("/**:\n  ros__parameters:\n", "must hold `name: value` pairs"),
    "top_level_list.yaml": ("- 1\n", "found list"),
}


def ros_args(path) -> list[str]:
    # no -p before --params-file: rcl then accepts some malformed files (its parser keeps state)
    return ["ppd-depth-node", "--ros-args", "--params-file", str(path), "-p", "steps:=2"]


def rcl_accepts(argv: list[str]) -> bool:
    import rclpy

    context = rclpy.Context()
    try:
        rclpy.init(args=argv, context=context)
    except Exception:  # rclpy's RCLError: the traceback users saw
        return False
    context.try_shutdown()
    return True


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    written = {}
    for name, content in {**GOOD, **{name: text for name, (text, _) in BAD.items()}}.items():
        written[name] = tmp_path / name
        written[name].write_text(content)
    return written


def test_good_files_pass(files):
    for name in GOOD:
        assert check_ros_args(ros_args(files[name])) is None, name


def test_bad_files_give_one_line_naming_the_file(files, tmp_path):
    cases = {name: (files[name], needle) for name, (_, needle) in BAD.items()}
    cases["missing"] = (tmp_path / "missing.yaml", "does not exist")
    cases["directory"] = (tmp_path, "is not a file")
    for name, (path, needle) in cases.items():
        message = check_ros_args(ros_args(path))
        assert message and needle in message and str(path) in message and "\n" not in message, (name, message)


def test_only_params_files_inside_ros_args_are_checked(files, tmp_path):
    missing = tmp_path / "missing.yaml"
    # outside --ros-args (before it, or after its closing --) the flag is the program's own
    assert check_ros_args(["node", "--params-file", str(missing), "--ros-args", "-p", "a:=1"]) is None
    assert check_ros_args(["node", "--ros-args", "--", "--params-file", str(missing)]) is None
    # every --params-file is checked, in every --ros-args section
    assert str(missing) in check_ros_args(["node", "--ros-args", "--params-file", str(files["wildcard.yaml"]),
                                           "--", "x", "--ros-args", "--params-file", str(missing)])
    assert check_ros_args(["node", "--ros-args", "--params-file"]) == "--params-file needs a file path after it"
    assert check_ros_args(["node"]) is None


def test_agrees_with_rcl(files, tmp_path):
    """check_ros_args rejects exactly the files rclpy.init() rejects (with a traceback)."""
    pytest.importorskip("rclpy")
    paths = [*files.values(), tmp_path / "missing.yaml"]
    for path in paths:
        argv = ros_args(path)
        assert (check_ros_args(argv) is None) == rcl_accepts(argv), path


def test_dds_profile_prints_the_installed_profile_and_an_export_line(capsys, tmp_path):
    profile = share_dir() / "config" / "fastdds_shm.xml"
    assert ppd_main(["dds-profile", "--path"]) == 0
    assert capsys.readouterr().out == f"{profile}\n"
    assert ppd_main(["dds-profile"]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert lines[-1] == f"export FASTRTPS_DEFAULT_PROFILES_FILE={profile}"
    assert "EVERY process that publishes or subscribes big images, the camera driver's included" in lines[1]
    # the output is meant for `eval "$(ppd dds-profile)"`
    (tmp_path / "printed.sh").write_text(printed)
    env = {key: value for key, value in os.environ.items() if key != "FASTRTPS_DEFAULT_PROFILES_FILE"}
    script = f'eval "$(cat {tmp_path}/printed.sh)"; printf %s "$FASTRTPS_DEFAULT_PROFILES_FILE"'
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=30)
    assert result.stdout == str(profile) and profile.is_file(), result.stderr
