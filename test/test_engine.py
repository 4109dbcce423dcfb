"""The inference API and `ppd infer` with the tiny random model (fast, CPU)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from ppd_ros.cli import main as ppd_main
from ppd_ros.engine import DepthEstimator, full_size_modules
from ppd_ros.preprocess import inference_size
from ppd_ros.weights import WeightsMissingError

AREA = 96 * 64


@pytest.fixture(scope="module")
def estimator():
    return DepthEstimator.create("tiny-random", device="cpu", steps=2, target_area=AREA, seed=3)


def _image(height=120, width=90, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_predict_shape_geometry_and_determinism(estimator):
    rgb = _image()
    first = estimator.predict(rgb)
    assert first.size == inference_size(120, 90, AREA) and first.input_size == (120, 90)
    assert first.depth.shape == first.size and first.depth.dtype == torch.float32
    assert torch.isfinite(first.depth).all() and first.depth.std() > 0
    assert first.model == "tiny-random" and first.steps == 2 and first.seconds > 0
    # Seeded noise: the same image gives the same depth; another image another depth.
    assert torch.equal(estimator.predict(rgb).depth, first.depth)
    assert not torch.equal(estimator.predict(_image(seed=1)).depth, first.depth)


def test_batch_equals_single_and_torch_input(estimator):
    images = np.stack([_image(seed=s) for s in range(2)])
    batch, size, metric = estimator.predict_batch(images)
    assert metric is None and not estimator.is_metric
    assert batch.shape == (2, *size)
    single = estimator.predict(torch.from_numpy(images[1])).depth
    torch.testing.assert_close(batch[1], single, atol=1e-5, rtol=0)


def test_bad_requests_are_clear(tmp_path, estimator):
    with pytest.raises(ValueError, match="unknown model"):
        DepthEstimator.create("ppd-large")
    with pytest.raises(ValueError, match="steps must be positive"):
        DepthEstimator.create("tiny-random", steps=0)
    with pytest.raises(WeightsMissingError, match="ppd fetch-weights"):
        DepthEstimator.create("ppd-da2", weights_dir=tmp_path)
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        estimator.predict_batch(np.zeros((1, 10, 10, 3), np.float32))


def test_full_size_modules_build_on_meta_device():
    dit, encoder = full_size_modules("meta")
    assert sum(p.numel() for p in dit.parameters()) == 499_842_112
    assert all(p.device.type == "meta" for p in encoder.parameters())


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


def test_moge2_variant_gives_semantics_and_metric_depth_from_one_pass():
    """ppd-moge2 plumbing with the golden tiny MoGe-2 weights and a tiny random DiT."""
    from conftest import load_golden

    from ppd_ros.engine import TINY_DIT, randomize_
    from ppd_ros.nets.dinov2 import DinoV2Config
    from ppd_ros.nets.dit import PixelDiT
    from ppd_ros.nets.moge import load_moge2

    tensors, sidecar = load_golden("moge2_tiny")
    weights = {k: v for k, v in tensors.items() if k.startswith(("encoder.", "neck.", "points_head.", "normal_head.", "mask_head.", "scale_head."))}
    moge = load_moge2({"model_config": sidecar["config"], "model": weights},
                      backbone=DinoV2Config(embed_dim=64, depth=4, num_heads=2))
    calls = []
    moge.encoder.backbone.blocks[0].register_forward_hook(lambda *args: calls.append(1))
    dit = randomize_(PixelDiT(**{**TINY_DIT, "semantic_dim": sidecar["config"]["encoder"]["dim_out"]}), seed=1)
    estimator = DepthEstimator(dit, moge, "ppd-moge2", "cpu", steps=2, target_area=AREA)
    assert estimator.is_metric
    prediction = estimator.predict(_image())
    assert len(calls) == 1  # one backbone pass serves semantics and metric depth
    metric = prediction.metric
    assert metric.depth.shape == prediction.size and metric.mask.shape == prediction.size
    assert metric.intrinsics.shape == (3, 3)
    assert torch.isfinite(metric.depth[metric.mask]).all() and (metric.depth[metric.mask] > 0).all()
