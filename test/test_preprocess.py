"""Inference-size rule against golden/resize_sizes.json (official resize_keep_aspect)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from ppd_ros.preprocess import inference_size, resize_for_inference, resize_interpolation

CV2_FLAGS = {"INTER_AREA": cv2.INTER_AREA, "INTER_CUBIC": cv2.INTER_CUBIC}


@pytest.fixture(scope="module")
def size_rows(golden_dir):
    return json.loads((golden_dir / "resize_sizes.json").read_text())["rows"]


def test_inference_size_matches_golden(size_rows):
    assert len(size_rows) == 22
    for row in size_rows:
        assert inference_size(row["in_h"], row["in_w"]) == (row["out_h"], row["out_w"]), row


def test_interpolation_choice_matches_golden(size_rows):
    for row in size_rows:
        assert resize_interpolation(row["in_h"], row["in_w"]) == CV2_FLAGS[row["cv2_interpolation"]], row


def test_round_half_to_even():
    # side*s/16 = 2.5 exactly (s = 1 with area 40*40): half-to-even gives 2 -> 32, not 3 -> 48.
    assert inference_size(40, 40, target_area=40 * 40) == (32, 32)
    # 3.5 rounds up to 4 -> 64.
    assert inference_size(56, 56, target_area=56 * 56) == (64, 64)
    # Never below one token.
    assert inference_size(1, 1000, target_area=1000) == (16, 992)  # 62.5 -> 62


@pytest.mark.parametrize("in_hw", [(480, 640), (37, 53), (1080, 1920)])
def test_resize_for_inference_uses_rule(in_hw):
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, size=(*in_hw, 3), dtype=np.uint8)
    out = resize_for_inference(rgb)
    out_h, out_w = inference_size(*in_hw)
    assert out.shape == (out_h, out_w, 3) and out.dtype == np.uint8
    flag = resize_interpolation(*in_hw)
    np.testing.assert_array_equal(out, cv2.resize(rgb, (out_w, out_h), interpolation=flag))
    other = cv2.INTER_CUBIC if flag == cv2.INTER_AREA else cv2.INTER_AREA
    assert not np.array_equal(out, cv2.resize(rgb, (out_w, out_h), interpolation=other))


def test_resize_rejects_non_rgb():
    with pytest.raises(ValueError):
        resize_for_inference(np.zeros((10, 10), np.uint8))
