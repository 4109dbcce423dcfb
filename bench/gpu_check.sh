#!/usr/bin/env bash
# The prepared GPU check of ppd_ros (ppd_ros/bench/gpu_check.py): CUDA-only tests, image model
# 512x384 / 1024x768 baseline vs fast path, PPVD 512x512 at stride 13 and 4, node overhead on the
# GPU; one table at the end. At most ~8 minutes on one H100/H200, nothing downloaded (random
# full-size weights). Needs python3 with torch and numpy; no install, no ROS.
#   bash bench/gpu_check.sh [--json results.json]    # on the GPU machine
#   bash bench/gpu_check.sh --cpu-smoke              # anywhere: tiny networks on the CPU (~2 min)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" -m ppd_ros.bench.gpu_check "$@"
