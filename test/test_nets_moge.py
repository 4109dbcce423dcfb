"""MoGe-2 against golden/moge2_tiny (official forward_semantics, forward and infer of PPD's copy),
the full-size manifest, and the strict loader."""
from __future__ import annotations

import pytest
import torch
from conftest import load_golden, load_manifest

from ppd_ros.nets.checkpoints import CheckpointError
from ppd_ros.nets.dinov2 import DinoV2Config
from ppd_ros.nets.moge import MoGe2Model, load_moge2, semantic_grid, token_grid
from ppd_ros.nets.moge_geometry import metric_geometry_from_outputs, normalized_view_plane_uv

WEIGHT_PREFIXES = ("encoder.", "neck.", "points_head.", "normal_head.", "mask_head.", "scale_head.")
# README 2: semantic encoders 2e-4; the raw forward outputs (magnitude ~4) 1e-4; infer depth and
# intrinsics rtol 1e-4 with the same scipy call; mask exact.
SEMANTICS_ATOL = 2e-4
FORWARD_ATOL = 1e-4
INFER_RTOL = 1e-4


@pytest.fixture(scope="module")
def golden():
    return load_golden("moge2_tiny")


@pytest.fixture(scope="module")
def tiny_backbone(golden):
    model = golden[1]["model"]
    assert "embed_dim=64, depth=4, num_heads=2" in model and "num_register_tokens=0" in model
    assert "interpolate_offset=0.1" in model and "interpolate_antialias=False" in model
    return DinoV2Config(embed_dim=64, depth=4, num_heads=2)


@pytest.fixture(scope="module")
def tiny_checkpoint(golden):
    tensors, sidecar = golden
    weights = {k: v for k, v in tensors.items() if k.startswith(WEIGHT_PREFIXES)}
    return {"model_config": sidecar["config"], "model": weights}


@pytest.fixture(scope="module")
def model(tiny_checkpoint, tiny_backbone):
    return load_moge2(tiny_checkpoint, backbone=tiny_backbone)


def call(sidecar, name):
    return next(c for c in sidecar["calls"] if c["name"] == name)


def assert_geometry_matches(geometry, tensors, prefix):
    """depth/intrinsics rtol, mask exact, invalid pixels +inf, points (before masking) rtol."""
    mask = tensors[f"{prefix}.mask"]
    assert geometry.mask.shape == mask.shape
    assert torch.equal(geometry.mask, mask)
    assert mask.any() and not mask.all()  # both branches of the mask are exercised
    torch.testing.assert_close(geometry.depth[mask], tensors[f"{prefix}.depth"][mask], rtol=INFER_RTOL, atol=0)
    assert torch.isposinf(geometry.depth[~mask]).all() and torch.isposinf(tensors[f"{prefix}.depth"][~mask]).all()
    torch.testing.assert_close(geometry.intrinsics, tensors[f"{prefix}.intrinsics"], rtol=INFER_RTOL, atol=1e-7)
    points = tensors[f"{prefix}.points_before_mask"][0]
    torch.testing.assert_close(geometry.points[mask], points[mask], rtol=INFER_RTOL, atol=1e-5)
    assert torch.isposinf(geometry.points[~mask]).all()


# --- golden reproduction ---------------------------------------------------------------------


@pytest.mark.parametrize("name, image_key", [("sem_a", "input.image_a"), ("sem_b", "input.image_b")])
def test_forward_semantics_matches_golden(golden, model, name, image_key):
    tensors, sidecar = golden
    image = tensors[image_key]
    assert list(image.shape) == call(sidecar, name)["image_shape"]
    assert semantic_grid(*image.shape[-2:]) == tuple(call(sidecar, name)["token_grid"])
    with torch.no_grad():
        out = model.forward_semantics(image)
    torch.testing.assert_close(out, tensors[f"{name}.out"], atol=SEMANTICS_ATOL, rtol=0)


def test_forward_matches_golden(golden, model):
    tensors, sidecar = golden
    image = tensors["input.image_a"]
    assert token_grid(*image.shape[-2:], 48) == tuple(call(sidecar, "fwd48")["token_grid"])
    with torch.no_grad():
        out = model(image, num_tokens=48)
    assert sorted(out) == ["mask", "metric_scale", "normal", "points"]
    for key in out:
        torch.testing.assert_close(out[key], tensors[f"fwd48.{key}"], atol=FORWARD_ATOL, rtol=0, msg=key)


@pytest.mark.parametrize("name, num_tokens", [("infer_default", None), ("infer48", 48)])
def test_infer_matches_golden(golden, model, name, num_tokens):
    tensors, sidecar = golden
    if num_tokens is None:
        assert model.default_num_tokens() == call(sidecar, name)["num_tokens_used"]
    geometry = model.infer(tensors["input.image_a"][0], num_tokens=num_tokens)
    assert_geometry_matches(geometry, tensors, name)
    torch.testing.assert_close(geometry.metric_scale, tensors[f"{name}.forward.metric_scale"][0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["infer_default", "infer48"])
def test_postprocessing_of_golden_forward_outputs(golden, name):
    """The focal/shift fit and metric scaling alone, fed the official raw outputs."""
    tensors, _ = golden
    outputs = {k: tensors[f"{name}.forward.{k}"] for k in ("points", "normal", "mask", "metric_scale")}
    geometry = metric_geometry_from_outputs(outputs)
    squeezed = type(geometry)(*(v[0] for v in geometry))
    assert_geometry_matches(squeezed, tensors, name)
    assert torch.equal(squeezed.normal[~squeezed.mask], torch.zeros_like(squeezed.normal[~squeezed.mask]))


def test_view_plane_uv_matches_golden():
    tensors, _ = load_golden("functions")
    uv = normalized_view_plane_uv(width=6, height=4, aspect_ratio=1.5, dtype=torch.float32)
    assert torch.equal(uv, tensors["uv.normalized_view_plane_uv_w6_h4"])


# --- one encoder pass for semantics and metric geometry --------------------------------------


def test_encode_once_feeds_semantics_and_heads(golden, model):
    """encode -> semantics / decode reproduce the separate goldens for their grids."""
    tensors, _ = golden
    image = tensors["input.image_a"]
    with torch.no_grad():
        encoded = model.encode(image, *token_grid(64, 96, 48))
        decoded = model.decode(encoded)
        semantic = model.semantics(model.encode(image, *semantic_grid(64, 96)))
    for key in decoded:
        torch.testing.assert_close(decoded[key], tensors[f"fwd48.{key}"], atol=FORWARD_ATOL, rtol=0, msg=key)
    torch.testing.assert_close(semantic, tensors["sem_a.out"], atol=SEMANTICS_ATOL, rtol=0)


def test_semantics_and_geometry_runs_backbone_once(golden, model):
    tensors, _ = golden
    image = tensors["input.image_a"]
    calls = []
    hook = model.encoder.backbone.patch_embed.register_forward_hook(lambda *args: calls.append(1))
    try:
        semantic, geometry = model.semantics_and_geometry(image)
    finally:
        hook.remove()
    assert len(calls) == 1
    torch.testing.assert_close(semantic, tensors["sem_a.out"], atol=SEMANTICS_ATOL, rtol=0)
    # 24 tokens at 64x96 give the semantic grid 4x6, so infer must agree exactly.
    assert token_grid(64, 96, 24) == semantic_grid(64, 96)
    separate = model.infer(image, num_tokens=24)
    for got, want in zip(geometry, separate):
        torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert geometry.mask.any()


def test_token_grid_floors():
    # PPD's copy floors: 48 tokens at aspect 1.5 -> sqrt(32)=5.66 x sqrt(72)=8.49 -> 5 x 8
    # (rounding would give 6 x 8).
    assert token_grid(64, 96, 48) == (5, 8)
    assert token_grid(64, 96, 3600) == (48, 73)


# --- full-size layout and strict loading ------------------------------------------------------


def test_full_size_layout_matches_manifest():
    index = load_manifest("index")["manifests"]["moge2_vitl_normal.json"]
    manifest = load_manifest("moge2_vitl_normal")
    with torch.device("meta"):
        full = MoGe2Model(index["model_config"])
    state = full.state_dict()
    assert {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in state.items()} == manifest
    assert sorted(name for name, _ in full.named_buffers()) == sorted(index["buffers"])
    assert full.dim_out == 1024 and len(state) == index["tensors"]
    assert sum(v.numel() for v in state.values()) == index["state_dict_elements"]


def test_load_from_file_reads_its_own_config(tmp_path, tiny_checkpoint, tiny_backbone, golden):
    path = tmp_path / "model.pt"
    torch.save(tiny_checkpoint, path)
    loaded = load_moge2(path, backbone=tiny_backbone)
    assert loaded.config == tiny_checkpoint["model_config"]
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.forward_semantics(golden[0]["input.image_a"]), golden[0]["sem_a.out"], atol=SEMANTICS_ATOL, rtol=0
        )


def test_loader_accepts_missing_mask_token(tiny_checkpoint, tiny_backbone):
    weights = dict(tiny_checkpoint["model"])
    del weights["encoder.backbone.mask_token"]
    load_moge2({**tiny_checkpoint, "model": weights}, backbone=tiny_backbone)


def test_loader_names_renamed_and_misshaped_keys(tiny_checkpoint, tiny_backbone):
    weights = dict(tiny_checkpoint["model"])
    weights["points_head.output_blocks.4.weights"] = weights.pop("points_head.output_blocks.4.weight")
    weights["scale_head.4.weight"] = torch.zeros(2, 64)
    with pytest.raises(CheckpointError) as error:
        load_moge2({**tiny_checkpoint, "model": weights}, backbone=tiny_backbone)
    message = str(error.value)
    assert "missing: points_head.output_blocks.4.weight" in message
    assert "unexpected: points_head.output_blocks.4.weights" in message
    assert "scale_head.4.weight: file (2, 64) vs model (1, 64)" in message


def test_loader_rejects_plain_state_dict_and_unknown_backbone(tiny_checkpoint):
    with pytest.raises(CheckpointError, match="model_config"):
        load_moge2(tiny_checkpoint["model"])
    with pytest.raises(ValueError, match="dinov2_tiny14_golden"):
        load_moge2(tiny_checkpoint)
