#!/usr/bin/env bash
# ROS 2 Jazzy's launch, launch_xml, launch_yaml, launch_ros (pure Python, not on PyPI) from
# ../shared/ros_launch into the active virtualenv, plus composition_interfaces (srv/, which
# launch_ros.actions imports) built with plain cmake into the venv, so the launch files can be run
# for real in tests (test/test_launch_files.py). Needs the venv and the rosidl/cmake wheels that
# .ci/build_colcon.sh installs. Without ../shared/ros_launch it says so and does nothing (the launch
# tests then skip). Idempotent: a second run only checks.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sources="$repo/../shared/ros_launch"
if [[ -z "${VIRTUAL_ENV:-}" ]]; then
  echo "install_ros_launch.sh: activate the virtualenv first (VIRTUAL_ENV is not set)" >&2
  exit 2
fi
python="$VIRTUAL_ENV/bin/python"
if [[ ! -d "$sources" ]]; then
  echo "install_ros_launch.sh: $sources not found: ROS 2 launch not installed, launch tests will skip"
  exit 0
fi

# Versions as released for Jazzy (see ../shared/ros_launch/README.md).
wanted='{"launch": "3.4.3", "launch_xml": "3.4.3", "launch_yaml": "3.4.3", "launch_ros": "0.26.6",
         "osrf_pycommon": "2.0.2"}'
installed() {  # every distribution at its wanted version, and the launch stack imports
  AMENT_PREFIX_PATH="$VIRTUAL_ENV" "$python" - "$wanted" <<'PY' 2>/dev/null
import json, sys
from importlib.metadata import version
wanted = json.loads(sys.argv[1])
assert all(version(name) == ver for name, ver in wanted.items())
import composition_interfaces.srv, launch_ros.actions, launch_xml, launch_yaml  # noqa: F401
from launch.frontend.parse_substitution import parse_substitution
parse_substitution("$(var x)")  # needs share/launch/frontend/grammar.lark in the ament index
PY
}
if installed; then
  exit 0
fi
start_s=$(date +%s)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log="$work/log"

# ../shared is read-only in CI and pip builds in the source tree: build from copies.
cp -r "$sources"/{launch,launch_xml,launch_yaml,launch_ros} "$work"/
mkdir -p "$work/launch/share/launch/frontend"
cp "$repo/.ci/launch_grammar.lark" "$work/launch/share/launch/frontend/grammar.lark"
# --no-deps: launch_ros asks for `ament_index_python`, which the ROS wheels ship as
# ros-ament-index-python. The other requirements are already in the venv (pyyaml; lark-parser
# with the rosidl wheels; importlib.metadata is in the standard library) except osrf-pycommon.
if ! "$python" -m pip install --quiet --disable-pip-version-check --no-deps \
    "$work/launch" "$work/launch_xml" "$work/launch_yaml" "$work/launch_ros" \
    osrf-pycommon==2.0.2 >"$log" 2>&1; then
  cat "$log" >&2
  echo "install_ros_launch.sh: pip install of the launch packages FAILED" >&2
  exit 1
fi

# composition_interfaces: plain cmake with the venv as prefix, so its Python module and libraries
# land in the venv and import with no environment set (ROS_PIP_FACTS.md). The /opt/python include
# links are made by .ci/build_colcon.sh.
numpy_include_link=$("$python" - <<'PY'
import sys
tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
ver = f"{sys.version_info[0]}.{sys.version_info[1]}"
print(f"/opt/python/{tag}-{tag}/lib/python{ver}/site-packages/numpy/_core/include")
PY
)
build="$work/composition_interfaces"
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
if ! { "$VIRTUAL_ENV/bin/cmake" -S "$sources/composition_interfaces" -B "$build" \
         -DCMAKE_PREFIX_PATH="$VIRTUAL_ENV" -DCMAKE_INSTALL_PREFIX="$VIRTUAL_ENV" \
         -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$python" \
         -DPython3_NumPy_INCLUDE_DIR="$numpy_include_link" &&
       "$VIRTUAL_ENV/bin/cmake" --build "$build" -j "$(nproc)" &&
       "$VIRTUAL_ENV/bin/cmake" --install "$build"; } >"$log" 2>&1; then
  tail -n 60 "$log" >&2
  echo "install_ros_launch.sh: building composition_interfaces FAILED" >&2
  exit 1
fi

if ! installed; then
  echo "install_ros_launch.sh: installed, but the launch stack does not import:" >&2
  "$python" -c "import composition_interfaces.srv, launch_ros.actions, launch_xml" >&2 || true
  exit 1
fi
echo "install_ros_launch.sh: installed ROS 2 launch into $VIRTUAL_ENV in $(( $(date +%s) - start_s )) s"
