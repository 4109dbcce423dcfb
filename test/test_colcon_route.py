"""Colcon route: the install tree made by `colcon build` (.ci/build_colcon.sh).

Checks that the generated DepthFrame message crosses two processes intact and that the install
tree has what `ros2 run` / `ros2 launch` need. The install dir is $PPD_ROS_INSTALL or
<repo>/install; without it the tests fail under CI and skip elsewhere.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "ppd_ros"
PROCESS_TIMEOUT_S = 25.0


@pytest.fixture(scope="module")
def install_dir() -> Path:
    path = Path(os.environ.get("PPD_ROS_INSTALL", REPO / "install")).resolve()
    if not any(path.glob(f"**/share/{PACKAGE}/package.dsv")):
        reason = (f"no colcon install of {PACKAGE} at {path}: run `bash .ci/build_colcon.sh` "
                  "(or set PPD_ROS_INSTALL)")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def package_prefix(install: Path) -> Path:
    """Prefix holding lib/ and share/ of ppd_ros, for the isolated or the merged layout."""
    for prefix in (install / PACKAGE, install):
        if (prefix / "share" / PACKAGE / "package.dsv").is_file():
            return prefix
    raise FileNotFoundError(f"share/{PACKAGE}/package.dsv not found under {install}")


def _apply_dsv(dsv: Path, prefix: Path, env: dict[str, str]) -> None:
    """Apply one colcon .dsv environment file (the lines `source` and `prepend-*`)."""
    for line in dsv.read_text().splitlines():
        if not line.strip():
            continue
        kind, _, rest = line.partition(";")
        if kind == "source":
            if rest.endswith(".dsv"):
                _apply_dsv(prefix / rest, prefix, env)
            continue  # the .sh twins of .dsv files describe the same settings
        name, _, values = rest.partition(";")
        if kind not in ("prepend-non-duplicate", "prepend-non-duplicate-if-exists"):
            raise ValueError(f"{dsv}: unsupported dsv operation {kind!r}")
        for value in reversed(values.split(";")):
            path = str(prefix / value) if value else str(prefix)
            if kind.endswith("-if-exists") and not Path(path).exists():
                continue
            parts = [p for p in env.get(name, "").split(os.pathsep) if p and p != path]
            env[name] = os.pathsep.join([path, *parts])


def install_environment(install: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a process using the install: what `source install/setup.sh` would add
    for ppd_ros (PYTHONPATH, LD_LIBRARY_PATH, AMENT_PREFIX_PATH, CMAKE_PREFIX_PATH, PATH)."""
    env = dict(os.environ if base is None else base)
    prefix = package_prefix(install)
    _apply_dsv(prefix / "share" / PACKAGE / "package.dsv", prefix, env)
    return env


def ros_environment(install: Path) -> dict[str, str]:
    env = install_environment(install)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(10 + os.getpid() % 90)
    env.pop("ROS_LOCALHOST_ONLY", None)
    env.pop("ROS_STATIC_PEERS", None)
    return env


PUBLISHER = r'''
import json, sys, time
import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ppd_ros.msg import DepthFrame

topic, spec_path, depth_path, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
spec = json.load(open(spec_path))
depth = np.load(depth_path)

msg = DepthFrame()
msg.header.stamp.sec, msg.header.stamp.nanosec = spec["stamp"]
msg.header.frame_id = spec["frame_id"]
msg.depth.header = msg.header
msg.depth.height, msg.depth.width = depth.shape
msg.depth.encoding = "32FC1"
msg.depth.is_bigendian = 0
msg.depth.step = depth.shape[1] * 4
msg.depth.data = depth.astype("<f4").tobytes()
info = msg.camera_info
info.header = msg.header
info.height, info.width = depth.shape
info.distortion_model = "plumb_bob"
info.d = spec["d"]
info.k = spec["k"]
info.p = spec["p"]
for name in ("is_metric", "metric_source", "scale", "shift", "fit_residual", "model", "steps",
             "inference_time", "latency", "dropped_frames", "skipped_frames"):
    setattr(msg, name, spec[name])

rclpy.init()
node = rclpy.create_node("colcon_route_publisher")
pub = node.create_publisher(DepthFrame, topic, QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    pub.publish(msg)
    rclpy.spin_once(node, timeout_sec=0.1)
node.destroy_node()
rclpy.shutdown()
'''

SUBSCRIBER = r'''
import json, sys, time
import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ppd_ros.msg import DepthFrame

topic, out_json, out_depth, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
rclpy.init()
node = rclpy.create_node("colcon_route_subscriber")
received = []
node.create_subscription(DepthFrame, topic, received.append,
                         QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
deadline = time.monotonic() + seconds
while not received and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.1)
if not received:
    sys.exit("no DepthFrame received within %.0f s" % seconds)
m = received[0]
d = m.depth
np.save(out_depth, np.frombuffer(bytes(d.data), dtype="<f4" if not d.is_bigendian else ">f4")
        .reshape(d.height, d.width))
json.dump({
    "type": type(m).__module__ + "." + type(m).__name__,
    "stamp": [m.header.stamp.sec, m.header.stamp.nanosec], "frame_id": m.header.frame_id,
    "depth_header": [d.header.stamp.sec, d.header.stamp.nanosec, d.header.frame_id],
    "depth_shape": [d.height, d.width], "encoding": d.encoding, "step": d.step,
    "info_shape": [m.camera_info.height, m.camera_info.width],
    "distortion_model": m.camera_info.distortion_model,
    "d": list(m.camera_info.d), "k": list(m.camera_info.k), "p": list(m.camera_info.p),
    **{name: getattr(m, name) for name in (
        "is_metric", "metric_source", "scale", "shift", "fit_residual", "model", "steps",
        "inference_time", "latency", "dropped_frames", "skipped_frames")},
}, open(out_json, "w"))
node.destroy_node()
rclpy.shutdown()
'''


def test_depth_frame_crosses_two_processes(install_dir: Path, tmp_path: Path):
    rng = np.random.default_rng(7)
    depth = (rng.random((48, 64)) * 20.0 + 0.1).astype(np.float32)
    depth[0, :5] = np.nan  # REP 117: no depth
    spec = {
        "stamp": [1_700_000_123, 456_789_000], "frame_id": "camera_optical_frame",
        "d": [0.1, -0.05, 0.001, 0.002, 0.0],
        "k": [50.5, 0.0, 31.5, 0.0, 51.0, 23.5, 0.0, 0.0, 1.0],
        "p": [50.5, 0.0, 31.5, 0.0, 0.0, 51.0, 23.5, 0.0, 0.0, 0.0, 1.0, 0.0],
        "is_metric": True, "metric_source": "sparse", "scale": 1.25, "shift": -0.375,
        "fit_residual": float("nan"), "model": "tiny-random", "steps": 4,
        "inference_time": 0.0123, "latency": 0.0456,
        "dropped_frames": 4_000_000_000, "skipped_frames": 3,
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    np.save(tmp_path / "depth_sent.npy", depth)
    for name, source in (("publisher.py", PUBLISHER), ("subscriber.py", SUBSCRIBER)):
        (tmp_path / name).write_text(source)

    env = ros_environment(install_dir)
    topic = f"/colcon_route_{uuid.uuid4().hex[:8]}/depth_frame"
    # cwd and script dir are tmp_path, so `ppd_ros` can only come from the install.
    subscriber = subprocess.Popen(
        [sys.executable, "subscriber.py", topic, "received.json", "depth_received.npy",
         str(PROCESS_TIMEOUT_S - 5)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    publisher = subprocess.Popen(
        [sys.executable, "publisher.py", topic, "spec.json", "depth_sent.npy",
         str(PROCESS_TIMEOUT_S)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        sub_out, _ = subscriber.communicate(timeout=PROCESS_TIMEOUT_S)
    finally:
        subscriber.kill()
        publisher.kill()
        pub_out, _ = publisher.communicate(timeout=10)
    assert subscriber.returncode == 0, f"subscriber:\n{sub_out}\npublisher:\n{pub_out}"

    got = json.loads((tmp_path / "received.json").read_text())
    assert got["type"] == "ppd_ros.msg._depth_frame.DepthFrame"
    assert got["stamp"] == spec["stamp"] and got["frame_id"] == spec["frame_id"]
    assert got["depth_header"] == [*spec["stamp"], spec["frame_id"]]
    assert got["depth_shape"] == [48, 64] and got["info_shape"] == [48, 64]
    assert got["encoding"] == "32FC1" and got["step"] == 64 * 4
    np.testing.assert_array_equal(np.load(tmp_path / "depth_received.npy"), depth)  # NaN == NaN here
    assert got["distortion_model"] == "plumb_bob"
    assert got["d"] == spec["d"] and got["k"] == spec["k"] and got["p"] == spec["p"]
    for name in ("is_metric", "metric_source", "model", "steps", "dropped_frames", "skipped_frames"):
        assert got[name] == spec[name], name
    for name in ("scale", "shift", "inference_time", "latency"):  # float32 on the wire
        assert got[name] == float(np.float32(spec[name])), name
    assert math.isnan(got["fit_residual"])


def test_install_tree_layout(install_dir: Path):
    prefix = package_prefix(install_dir)
    share = prefix / "share" / PACKAGE
    assert (share / "package.xml").is_file()
    assert (share / "launch").is_dir() and (share / "config").is_dir()
    assert (share / "model").is_dir()
    assert (share / "msg" / "DepthFrame.msg").is_file()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()
    for launcher in ("depth_node", "ppd"):
        path = prefix / "lib" / PACKAGE / launcher
        assert path.is_file() and os.access(path, os.X_OK), path
        assert path.read_text().startswith("#!/usr/bin/env python3\n")


def _run_in_install(install: Path, tmp_path: Path, code: str, *args: str) -> dict:
    """Run `code` in a fresh interpreter with the install's environment; its last stdout line
    is JSON. cwd and the script's dir are tmp_path, so `ppd_ros` can only come from the install."""
    probe = tmp_path / "probe.py"
    probe.write_text(code)
    result = subprocess.run([sys.executable, str(probe), *args], cwd=tmp_path,
                            env=install_environment(install), capture_output=True, text=True,
                            timeout=PROCESS_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_installed_python_package_imports(install_dir: Path, tmp_path: Path):
    """Generated ppd_ros.msg and our own sources import from the install's site-packages."""
    found = _run_in_install(install_dir, tmp_path, (
        "import json\n"
        "import ppd_ros, ppd_ros.msg, ppd_ros.nets\n"
        "from ppd_ros.msg import DepthFrame\n"
        "DepthFrame()\n"
        "print(json.dumps({'ppd_ros': ppd_ros.__file__, 'msg': ppd_ros.msg.__file__,\n"
        "                  'nets': ppd_ros.nets.__file__}))\n"))
    lib = package_prefix(install_dir) / "lib"  # not resolved: --symlink-install links to sources
    for key in ("ppd_ros", "msg", "nets"):
        assert Path(found[key]).is_relative_to(lib), found


def test_launcher_targets_exist(install_dir: Path, tmp_path: Path):
    """Each lib/ppd_ros launcher's `from <module> import <function>` resolves in the install."""
    targets = []
    for name in ("depth_node", "ppd"):
        text = (package_prefix(install_dir) / "lib" / PACKAGE / name).read_text()
        line = next(row for row in text.splitlines() if row.startswith("from "))
        _, module, _, function = line.split()
        targets.append((module, function))
    found = _run_in_install(install_dir, tmp_path, (
        "import importlib, json, sys\n"
        "found = {}\n"
        "for module, function in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        found[module + ':' + function] = callable(\n"
        "            getattr(importlib.import_module(module), function, None))\n"
        "    except ImportError as error:\n"
        "        found[module + ':' + function] = repr(error)\n"
        "print(json.dumps(found))\n"), json.dumps(targets))
    assert all(value is True for value in found.values()), found
