"""`ppd bench cloud` says why its Open3D baseline is skipped and how to fix it (issue 13 item 10)."""
from __future__ import annotations

import ctypes
import importlib.util

import pytest

from ppd_ros.bench.cloud import open3d_unavailable_reason
from ppd_ros.cli import main as ppd_main


def test_missing_libusb_names_the_system_package():
    # The real loader error open3d's wheel hits on a machine without libusb (the same text).
    try:
        ctypes.CDLL("libusb-1.0.so.0")
    except OSError as error:
        reason = open3d_unavailable_reason(error)
    else:
        pytest.skip("libusb-1.0.so.0 is installed here")
    assert "cannot load libusb-1.0.so.0" in reason and "sudo apt install libusb-1.0-0" in reason


@pytest.mark.skipif(importlib.util.find_spec("open3d") is not None, reason="open3d is installed here")
def test_skip_line_says_why_and_the_fix(capsys):
    assert ppd_main(["bench", "cloud", "--sizes", "64x48", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "baseline: SKIPPED - open3d is not importable (No module named 'open3d'); " \
           "install it with pip install \".[bench]\" (open3d-cpu)" in out
