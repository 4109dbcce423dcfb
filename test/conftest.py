"""Shared test fixtures: the golden reference data in ../shared/golden."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

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
