"""Shared test fixtures: the golden reference data in ../shared/golden."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Test modules that start ROS 2 processes and talk over DDS: every user of the cross-process harness
# (ros_helpers) plus these. `pytest -m "not ros"` is the fast loop without them.
ROS_PROCESS_MODULES = {"test_colcon_route", "test_demo"}


def pytest_collection_modifyitems(items):
    uses_harness: dict[Path, bool] = {}
    for item in items:
        path = Path(item.fspath)
        if path not in uses_harness:
            uses_harness[path] = "ros_helpers" in path.read_text() or path.stem in ROS_PROCESS_MODULES
        if uses_harness[path]:
            item.add_marker(pytest.mark.ros)


REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(os.environ.get("PPD_GOLDEN", REPO.parent / "shared" / "golden"))


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not (GOLDEN / "index.json").is_file():
        pytest.fail(f"golden data not found at {GOLDEN} (set PPD_GOLDEN)")
    return GOLDEN


def load_golden(name: str):
    """(tensors, sidecar) of ``golden/<name>.safetensors`` and ``golden/<name>.json``."""
    from safetensors.torch import load_file

    tensors = load_file(str(GOLDEN / f"{name}.safetensors"))
    sidecar = json.loads((GOLDEN / f"{name}.json").read_text())
    return tensors, sidecar


def load_manifest(name: str) -> dict:
    """``golden/manifests/<name>.json``."""
    return json.loads((GOLDEN / "manifests" / f"{name}.json").read_text())
