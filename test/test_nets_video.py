"""PPVD video DiT and Pi3 semantic path against the official goldens and manifests."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from conftest import load_golden, load_manifest

from ppd_ros.nets.checkpoints import CheckpointError
from ppd_ros.nets.dinov2 import DinoV2Config
from ppd_ros.nets.dit_video import PPVD_DIT_FULL, VideoDiT, load_ppvd, sincos_pos_table
from ppd_ros.nets.pi3 import PI3_FULL, UNUSED_PI3_PARTS, Pi3Config, Pi3Semantics, load_pi3

VIDEO_TINY = dict(hidden_size=64, depth=24, num_heads=4, patch_size=8)
PI3_TINY = Pi3Config(
    encoder=DinoV2Config(embed_dim=64, depth=2, num_heads=2, num_register_tokens=4,
                         pos_resize="antialiased_bicubic", with_mask_token=False),
    decoder_depth=4, decoder_heads=4)
DIT_ATOL = 1e-4
PI3_ATOL = 2e-4


# --- video DiT -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def video_golden():
    return load_golden("dit_video_tiny")


@pytest.fixture(scope="module")
def video_state(video_golden):
    tensors, _ = video_golden
    return {k: v for k, v in tensors.items() if k.startswith("dit_video.")}


@pytest.fixture(scope="module")
def video_inputs(video_golden):
    """Inputs regenerated with the sidecar's recipe, checked against its sha256 values."""
    tensors, sidecar = video_golden
    recipe = sidecar["inputs"]
    n = recipe["N"]
    rs = np.random.RandomState(4005)
    noise = rs.standard_normal((n, 1, 512, 512)).astype(np.float32)
    image = rs.uniform(0.0, 1.0, (n, 3, 512, 512)).astype(np.float32)
    semantics = rs.standard_normal((n, 1024, 2048)).astype(np.float32)
    x = np.concatenate([noise, image - np.float32(0.5)], axis=1)
    assert hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest() == recipe["sha256_x_float32_bytes"]
    assert (hashlib.sha256(np.ascontiguousarray(semantics).tobytes()).hexdigest()
            == recipe["sha256_semantics_float32_bytes"])
    x, semantics = torch.from_numpy(x), torch.from_numpy(semantics)
    assert torch.equal(x[:, :, :2, :8], tensors["input.x_head"])
    assert torch.equal(semantics[:, :2, :8], tensors["input.semantics_head"])
    return x, semantics


@pytest.fixture(scope="module")
def tiny_video_dit(video_state):
    return load_ppvd(video_state, config=VIDEO_TINY)


def test_sincos_table_equals_stored_table(video_state):
    table = sincos_pos_table(64, 32, 32)
    torch.testing.assert_close(table[None], video_state["dit_video.pos_embed"], atol=1e-7, rtol=0)


def test_video_dit_tiny_matches_golden(video_golden, video_inputs, tiny_video_dit):
    tensors, _ = video_golden
    x, semantics = video_inputs
    captured = {}
    hook = tiny_video_dit.temporal_blocks[0].register_forward_hook(
        lambda module, args, out: captured.__setitem__("temporal0", out[:16].clone()))
    try:
        with torch.no_grad():
            out = tiny_video_dit(x, semantics, tensors["timestep"])
    finally:
        hook.remove()
    torch.testing.assert_close(captured["temporal0"], tensors["debug.temporal0_out.t16"],
                               atol=DIT_ATOL, rtol=0)
    assert out.shape == tensors["out"].shape
    torch.testing.assert_close(out, tensors["out"], atol=DIT_ATOL, rtol=0)


def test_video_dit_rejects_bad_inputs(tiny_video_dit):
    x = torch.zeros(3, 4, 512, 512)
    sem = torch.zeros(3, 1024, 2048)
    with pytest.raises(ValueError, match="512x512"):
        tiny_video_dit(x[..., :496, :], sem, 500)
    with pytest.raises(ValueError, match="at least 3 frames"):
        tiny_video_dit(x[:2], sem[:2], 500)
    with pytest.raises(ValueError, match="semantics"):
        tiny_video_dit(x, sem[:, :-1], 500)
    with pytest.raises(ValueError, match="one timestep"):
        tiny_video_dit(x, sem, torch.tensor([500, 500, 500]))


def test_full_size_video_dit_on_meta_matches_manifest():
    manifest = load_manifest("ppvd_dit_video")
    assert len(manifest) == 395
    with torch.device("meta"):
        model = VideoDiT(**PPVD_DIT_FULL)
    state = {f"dit_video.{k}": v for k, v in model.state_dict().items()}
    assert sorted(state) == sorted(manifest)
    for key, (shape, dtype) in manifest.items():
        assert list(state[key].shape) == shape, key
        assert str(state[key].dtype) == f"torch.{dtype}", key
    assert not model.pos_embed.requires_grad


def test_load_ppvd_accepts_sem_encoder_part_and_file(tmp_path, video_state):
    state = dict(video_state)
    state["sem_encoder.encoder.cls_token"] = torch.zeros(1, 1, 8)
    path = tmp_path / "ppvd.pth"
    torch.save(state, path)
    model = load_ppvd(path, config=VIDEO_TINY)
    assert not model.training
    torch.testing.assert_close(model.final_layer.linear.weight,
                               video_state["dit_video.final_layer.linear.weight"], atol=0, rtol=0)


def test_load_ppvd_names_mismatches(video_state):
    missing = {k: v for k, v in video_state.items() if k != "dit_video.temporal_blocks.2.mlp.fc2.bias"}
    with pytest.raises(CheckpointError, match=r"temporal_blocks\.2\.mlp\.fc2\.bias"):
        load_ppvd(missing, config=VIDEO_TINY)
    no_table = {k: v for k, v in video_state.items() if k != "dit_video.pos_embed"}
    with pytest.raises(CheckpointError, match=r"pos_embed"):
        load_ppvd(no_table, config=VIDEO_TINY)
    stray = dict(video_state)
    stray["dit.blocks.0.attn.qkv.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"dit\.blocks\.0\.attn\.qkv\.weight"):
        load_ppvd(stray, config=VIDEO_TINY)
    shape = dict(video_state)
    shape["dit_video.proj_fusion.0.weight"] = shape["dit_video.proj_fusion.0.weight"][:, :1088]
    with pytest.raises(CheckpointError, match=r"proj_fusion\.0\.weight"):
        load_ppvd(shape, config=VIDEO_TINY)


# --- Pi3 semantics ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pi3_golden():
    return load_golden("pi3_semantics_tiny")


@pytest.fixture(scope="module")
def pi3_state(pi3_golden):
    tensors, _ = pi3_golden
    return {k: v for k, v in tensors.items() if not k.startswith(("case_", "debug."))}


@pytest.fixture(scope="module")
def tiny_pi3(pi3_state):
    return load_pi3(pi3_state, config=PI3_TINY)


def test_pi3_tiny_case_a_matches_golden(pi3_golden, tiny_pi3):
    tensors, _ = pi3_golden
    captured = {}
    hooks = [block.register_forward_hook(lambda module, args, out, i=i: captured.__setitem__(i, out))
             for i, block in enumerate(tiny_pi3.decoder)]
    try:
        with torch.no_grad():
            out = tiny_pi3(tensors["case_a.frames"])
    finally:
        for hook in hooks:
            hook.remove()
    torch.testing.assert_close(tiny_pi3.encoder.position_table(4, 6), tensors["case_a.pos_embed_used"],
                               atol=1e-6, rtol=0)
    for i in range(4):
        torch.testing.assert_close(captured[i], tensors[f"debug.case_a.decoder{i}_out"],
                                   atol=PI3_ATOL, rtol=0)
    assert out.shape == (3, 24, 128)
    torch.testing.assert_close(out, tensors["case_a.out"], atol=PI3_ATOL, rtol=0)


def test_pi3_tiny_case_b_matches_golden(pi3_golden, tiny_pi3):
    tensors, _ = pi3_golden
    with torch.no_grad():
        out = tiny_pi3(tensors["case_b.frames"].float() / 255)
    torch.testing.assert_close(tiny_pi3.encoder.position_table(32, 32), tensors["case_b.pos_embed_used"],
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(out, tensors["case_b.out"], atol=PI3_ATOL, rtol=0)


def test_pi3_treats_batch_as_one_clip(pi3_golden, tiny_pi3):
    tensors, _ = pi3_golden
    frames = tensors["case_a.frames"]
    with torch.no_grad():
        together = tiny_pi3(frames)
        alone = tiny_pi3(frames[:1])
    assert (together[0] - alone[0]).abs().max() > 1e-3


def _manifest_meta_state(manifest: dict) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, dtype=getattr(torch, dtype), device="meta")
            for k, (shape, dtype) in manifest.items()}


def test_full_size_pi3_on_meta_matches_manifest_minus_unused_heads():
    manifest = load_manifest("pi3")
    assert len(manifest) == 1210
    used = {k: v for k, v in manifest.items() if k.split(".", 1)[0] not in UNUSED_PI3_PARTS}
    assert len(manifest) - len(used) == 216
    with torch.device("meta"):
        model = Pi3Semantics(PI3_FULL)
    state = model.state_dict()
    assert sorted(state) == sorted(used)
    for key, (shape, dtype) in used.items():
        assert list(state[key].shape) == shape, key
        assert str(state[key].dtype) == f"torch.{dtype}", key
    assert model.out_dim == 2048


def test_load_pi3_accepts_released_layout_on_meta():
    model = load_pi3(_manifest_meta_state(load_manifest("pi3")), device="meta")
    assert model.register_token.shape == (1, 1, 5, 1024)
    assert len(model.decoder) == 36


def test_load_pi3_names_mismatches(pi3_state):
    stray = dict(pi3_state)
    stray["track_head.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"track_head\.weight"):
        load_pi3(stray, config=PI3_TINY)
    missing = {k: v for k, v in pi3_state.items() if k != "decoder.3.ls2.gamma"}
    with pytest.raises(CheckpointError, match=r"decoder\.3\.ls2\.gamma"):
        load_pi3(missing, config=PI3_TINY)
    no_buffer = {k: v for k, v in pi3_state.items() if k != "image_std"}
    with pytest.raises(CheckpointError, match=r"image_std"):
        load_pi3(no_buffer, config=PI3_TINY)
    with_mask = dict(pi3_state)
    with_mask["encoder.mask_token"] = torch.zeros(1, 64)
    with pytest.raises(CheckpointError, match=r"encoder\.mask_token"):
        load_pi3(with_mask, config=PI3_TINY)


def test_load_pi3_from_safetensors_file_with_unused_heads(tmp_path, pi3_state, pi3_golden):
    from safetensors.torch import save_file

    tensors, _ = pi3_golden
    state = {k: v.contiguous() for k, v in pi3_state.items()}
    state["point_head.proj.weight"] = torch.zeros(2, 2)
    state["camera_decoder.blocks.0.norm1.weight"] = torch.zeros(4)
    path = tmp_path / "pi3.safetensors"
    save_file(state, str(path))
    model = load_pi3(path, config=PI3_TINY)
    with torch.no_grad():
        out = model(tensors["case_a.frames"])
    torch.testing.assert_close(out, tensors["case_a.out"], atol=PI3_ATOL, rtol=0)
