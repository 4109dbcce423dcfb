"""`ppd infer` with the tiny random model (fast, CPU)."""
from __future__ import annotations

import cv2
import numpy as np

from ppd_ros.cli import main as ppd_main

AREA = 96 * 64


def _image(height=120, width=90, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_ppd_infer_writes_npy_and_png(tmp_path):
    cv2.imwrite(str(tmp_path / "frame.png"), _image(100, 140))
    code = ppd_main(["infer", str(tmp_path), "--model", "tiny-random", "--target-area", str(AREA),
                     "--output", str(tmp_path / "out")])
    assert code == 0
    depth = np.load(tmp_path / "out" / "frame_depth_tiny-random.npy")
    assert depth.shape == (100, 140) and depth.dtype == np.float32
    colored = cv2.imread(str(tmp_path / "out" / "frame_depth_tiny-random.png"))
    assert colored.shape == (100, 140, 3)


def test_ppd_infer_without_weights_is_one_clear_line(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "frame.png"), _image())
    code = ppd_main(["infer", str(tmp_path / "frame.png"), "--weights-dir", str(tmp_path / "none")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ppd fetch-weights ppd" in err[0]
