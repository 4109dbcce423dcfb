"""Where the package's shared files (model/, config/, launch/) live in each install route.

- source checkout / `pip install -e .`: the repository root (it holds package.xml);
- colcon: ``<prefix>/share/ppd_ros`` with the package at ``<prefix>/lib/pythonX.Y/site-packages``;
- `pip install .`: ``<sys.prefix>/share/ppd_ros`` (setup.cfg data_files).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def share_dir() -> Path:
    """The directory that holds ``model/``, ``config/`` and ``launch/``."""
    candidates = [_PACKAGE_DIR.parent]  # source checkout
    if len(_PACKAGE_DIR.parents) > 3:  # colcon: <prefix>/lib/pythonX.Y/site-packages/ppd_ros
        candidates.append(_PACKAGE_DIR.parents[3] / "share" / "ppd_ros")
    candidates.append(Path(sys.prefix) / "share" / "ppd_ros")  # pip install
    for candidate in candidates:
        if (candidate / "model" / "weights.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        "ppd_ros share files (model/weights.yaml) not found in: " + ", ".join(map(str, candidates))
    )


def default_weights_dir() -> Path:
    """``$PPD_WEIGHTS_DIR``, else ``$XDG_CACHE_HOME/ppd_ros/weights`` (``~/.cache/...``)."""
    if os.environ.get("PPD_WEIGHTS_DIR"):
        return Path(os.environ["PPD_WEIGHTS_DIR"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "ppd_ros" / "weights"
