"""Benchmark loaders on a few samples written here in each dataset's evaluation layout, the
protocol against an independent numpy computation, and `ppd eval-benchmark` end to end."""
from __future__ import annotations

import argparse
import json
import math

import cv2
import numpy as np
import pytest

from ppd_ros.evaluation.benchmarks import DATASETS, PUBLISHED, add_arguments, evaluate_relative, iter_samples, run

RNG = np.random.default_rng(0)


def rgb_image(height, width):
    return RNG.integers(0, 255, (height, width, 3), dtype=np.uint8)


def write_rgb(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def write_png16(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array.astype(np.uint16))


@pytest.fixture()
def nyu_root(tmp_path):
    depths = []
    for scene, number in (("kitchen_0004", "0001"), ("office_0005", "0009")):
        folder = tmp_path / "test" / scene
        write_rgb(folder / f"rgb_{number}.png", rgb_image(480, 640))
        depth_mm = RNG.integers(500, 9000, (480, 640)).astype(np.uint16)
        depth_mm[100, 100] = 0  # missing
        depth_mm[200, 200] = 12000  # beyond the 10 m cap
        write_png16(folder / f"depth_{number}.png", depth_mm)
        write_png16(folder / f"filled_{number}.png", np.maximum(depth_mm, 1))
        depths.append(depth_mm)
    return tmp_path, depths


def test_nyu_loader_decodes_millimetres_and_applies_eigen_crop(nyu_root):
    root, depths = nyu_root
    samples = list(iter_samples(DATASETS["nyuv2"], root))
    assert [s.name for s in samples] == ["test/kitchen_0004/rgb_0001.png", "test/office_0005/rgb_0009.png"]
    sample = samples[0]
    np.testing.assert_allclose(sample.gt, depths[0] / 1000.0, rtol=1e-6)
    assert sample.rgb.shape == (480, 640, 3)
    assert not sample.valid[44, 300] and sample.valid[45, 300] and sample.valid[470, 300] and not sample.valid[471, 300]
    assert not sample.valid[300, 40] and sample.valid[300, 41] and sample.valid[300, 600] and not sample.valid[300, 601]
    assert not sample.valid[100, 100] and not sample.valid[200, 200]
    assert sample.valid.sum() == 426 * 560 - 2


def test_kitti_loader_crops_decodes_and_skips_missing_gt(tmp_path):
    rgb = rgb_image(375, 1242)
    depth = np.zeros((375, 1242), np.uint16)
    depth[300, 621] = int(12.5 * 256)
    depth[370, 700] = int(90 * 256)  # beyond 80 m
    write_rgb(tmp_path / "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png", rgb)
    write_png16(tmp_path / "2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png", depth)
    split = tmp_path / "eigen_test_files_with_gt.txt"
    split.write_text(
        "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png "
        "2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png 721.5377\n"
        "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000070.png None 721.5377\n")
    with pytest.raises(ValueError, match="split-file"):
        list(iter_samples(DATASETS["kitti"], tmp_path))
    (sample,) = list(iter_samples(DATASETS["kitti"], tmp_path, str(split)))
    assert sample.rgb.shape == (352, 1216, 3) and sample.gt.shape == (352, 1216)
    top, left = 375 - 352, (1242 - 1216) // 2
    np.testing.assert_array_equal(sample.rgb, rgb[top:, left:left + 1216])
    assert sample.gt[300 - top, 621 - left] == pytest.approx(12.5)
    assert sample.valid.sum() == 1  # the 90 m point is out of range, zeros are missing
    eigen_rows = (int(0.3324324 * 352), int(0.91351351 * 352))
    assert eigen_rows[0] <= 300 - top < eigen_rows[1]


def test_eth3d_loader_reads_raw_float_depth(tmp_path):
    rgb = rgb_image(40, 60)
    depth = RNG.uniform(1, 30, (40, 60)).astype("<f4")
    depth[5, 5] = np.inf
    write_rgb(tmp_path / "rgb/office/images/dslr_images/DSC_0219.JPG", rgb)
    depth_path = tmp_path / "depth/office_dslr_depth/office/ground_truth_depth/dslr_images/DSC_0219.JPG"
    depth_path.parent.mkdir(parents=True)
    depth.tofile(depth_path)
    (sample,) = list(iter_samples(DATASETS["eth3d"], tmp_path))
    assert not sample.valid[5, 5] and sample.valid.sum() == 40 * 60 - 1
    np.testing.assert_array_equal(sample.gt[sample.valid], depth[np.isfinite(depth)])


def test_scannet_loader_resizes_colour_to_depth(tmp_path):
    write_rgb(tmp_path / "scene0406_02/color/000300.jpg", rgb_image(97, 130))
    depth = RNG.integers(0, 12000, (48, 64)).astype(np.uint16)
    write_png16(tmp_path / "scene0406_02/depth/000300.png", depth)
    (sample,) = list(iter_samples(DATASETS["scannet"], tmp_path))
    assert sample.rgb.shape == (48, 64, 3)
    expected_valid = (depth > 1) & (depth < 10000)  # 1e-3 m < d < 10 m
    np.testing.assert_array_equal(sample.valid, expected_valid)


def test_diode_loader_uses_mask_file_and_range(tmp_path):
    folder = tmp_path / "indoors/scene_00021/scan_00189"
    write_rgb(folder / "00021_00189_indoors_200_010.png", rgb_image(24, 32))
    depth = RNG.uniform(0.1, 20, (24, 32, 1)).astype(np.float32)
    mask = RNG.random((24, 32)) > 0.3
    np.save(folder / "00021_00189_indoors_200_010_depth.npy", depth)
    np.save(folder / "00021_00189_indoors_200_010_depth_mask.npy", mask.astype(np.float32))
    (sample,) = list(iter_samples(DATASETS["diode"], tmp_path))
    np.testing.assert_array_equal(sample.valid, mask & (depth[..., 0] > 0.6))


def test_protocol_matches_independent_log_space_fit(nyu_root):
    root, _ = nyu_root
    dataset = DATASETS["nyuv2"]
    sample = next(iter_samples(dataset, root))
    exact = (np.log1p(sample.gt) - 0.3) / 2.0
    abs_rel, d1 = evaluate_relative(exact, sample, dataset)
    assert abs_rel < 1e-4 and d1 == 1.0
    noisy = exact + RNG.normal(0, 0.05, exact.shape)
    slope, intercept = np.polyfit(noisy[sample.valid], np.log1p(sample.gt[sample.valid]), 1)
    depth = np.clip(np.expm1(slope * noisy + intercept), 1e-3, 10.0)[sample.valid]
    gt = sample.gt[sample.valid]
    abs_rel, d1 = evaluate_relative(noisy, sample, dataset)
    assert abs_rel == pytest.approx(np.mean(np.abs(depth - gt) / gt), rel=1e-3)
    assert d1 == pytest.approx(np.mean(np.maximum(depth / gt, gt / depth) < 1.25), abs=1e-4)


def test_eval_benchmark_command(nyu_root, tmp_path, capsys):
    root, _ = nyu_root
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "out"
    args = parser.parse_args(["nyuv2", "--data-root", str(root), "--model", "tiny-random", "--device", "cpu",
                              "--steps", "1", "--target-area", str(32 * 32), "--output", str(out)])
    assert run(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 2 and math.isfinite(summary["abs_rel_percent"])
    assert len((out / "samples.csv").read_text().strip().splitlines()) == 3
    printed = capsys.readouterr().out
    assert "not depth quality" in printed and "AbsRel" in printed
    assert f"AbsRel {PUBLISHED['ppd-da2']['nyuv2'][0]:.1f} %" in printed  # the reference table is shown
    assert set(PUBLISHED["ppd-da2"]) == set(DATASETS)
