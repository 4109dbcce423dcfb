"""DINOv2 ViT and the DA2 semantic encoder against golden/dinov2_tiny (official forward_semantics)
and the full-size DA2 manifests."""
from __future__ import annotations

import pytest
import torch
from conftest import load_golden, load_manifest

from ppd_ros.nets.checkpoints import CheckpointError
from ppd_ros.nets.dinov2 import DinoV2Config, DinoV2ViT
from ppd_ros.nets.semantics import DA2_VITL, DA2SemanticEncoder, load_da2_semantic_encoder

CASES = ["case_a", "case_b", "case_c", "case_d", "case_e"]
# Smooth inputs: float32-vs-float64 spread of the official code is ~3e-6 there (README 5), so a
# tighter bound is safe and catches subtler mistakes (tanh GELU moves them by 6e-5). Photos and
# noise keep the README's 2e-4 (float32 bicubic resize noise up to ~1e-4).
ATOL = {"case_a": 2e-5, "case_b": 2e-5, "case_c": 2e-4, "case_d": 2e-4, "case_e": 2e-4}


@pytest.fixture(scope="module")
def golden():
    tensors, sidecar = load_golden("dinov2_tiny")
    return tensors, sidecar


@pytest.fixture(scope="module")
def tiny_config(golden):
    # The sidecar's model string: embed_dim=64, depth=2, num_heads=2, no registers, offset 0.1.
    model = golden[1]["model"]
    assert "embed_dim=64, depth=2, num_heads=2" in model and "num_register_tokens=0" in model
    assert "interpolate_offset=0.1" in model and "interpolate_antialias=False" in model
    return DinoV2Config(embed_dim=64, depth=2, num_heads=2)


@pytest.fixture(scope="module")
def tiny_weights(golden):
    return {k: v for k, v in golden[0].items() if k.startswith("pretrained.")}


@pytest.fixture(scope="module")
def tiny_encoder(tiny_weights, tiny_config):
    return load_da2_semantic_encoder(tiny_weights, tiny_config)


def call_image(tensors, case):
    image = tensors[f"{case}.image"]
    return image.float() / 255 if image.dtype == torch.uint8 else image


def meta_state(manifest: dict) -> dict[str, torch.Tensor]:
    """A state dict with the manifest's keys and shapes, holding no memory (meta tensors)."""
    return {k: torch.empty(shape, dtype=getattr(torch, dtype), device="meta") for k, (shape, dtype) in manifest.items()}


@pytest.mark.parametrize("case", CASES)
def test_tiny_forward_semantics_matches_golden(golden, tiny_encoder, case):
    tensors, sidecar = golden
    call = next(c for c in sidecar["calls"] if c["name"] == case)
    image = call_image(tensors, case)
    assert list(image.shape) == call["input_shape"]
    rows, cols = call["patch_grid"]
    with torch.no_grad():
        vit_input = tiny_encoder.vit_input(image)
        out = tiny_encoder(image)
        table = tiny_encoder.pretrained.position_table(rows, cols)
    assert list(vit_input.shape[-2:]) == call["resized_to"]
    if f"{case}.vit_input" in tensors:
        torch.testing.assert_close(vit_input, tensors[f"{case}.vit_input"], atol=1e-5, rtol=0)
    torch.testing.assert_close(table, tensors[f"{case}.pos_embed_used"], atol=1e-5, rtol=0)
    assert out.shape == tensors[f"{case}.out"].shape
    torch.testing.assert_close(out, tensors[f"{case}.out"], atol=ATOL[case], rtol=0)


def test_37x37_grid_uses_stored_table(tiny_encoder):
    table = tiny_encoder.pretrained.position_table(37, 37)
    assert torch.equal(table, tiny_encoder.pretrained.pos_embed)


def test_position_rule_is_scale_factor_with_offset(tiny_encoder):
    # Resizing to the target size (no 0.1 offset) must give a different table: guards the rule.
    vit = tiny_encoder.pretrained
    grid = vit.pos_embed[:, 1:].reshape(1, 37, 37, -1).permute(0, 3, 1, 2)
    by_size = torch.nn.functional.interpolate(grid, size=(4, 6), mode="bicubic", align_corners=False)
    by_size = by_size.permute(0, 2, 3, 1).reshape(1, 24, -1)
    assert (vit.position_table(4, 6)[:, 1:] - by_size).abs().max() > 0.1


def test_pi3_position_rule_matches_golden():
    # Pi3's encoder: 4 registers, no mask token, antialiased bicubic table resize to size.
    tensors, sidecar = load_golden("pi3_semantics_tiny")
    weights = {k[len("encoder."):]: v for k, v in tensors.items() if k.startswith("encoder.")}
    vit = DinoV2ViT(64, 2, 2, num_register_tokens=4, pos_resize="antialiased_bicubic", with_mask_token=False)
    vit.load_state_dict(weights, strict=True)
    for call in sidecar["calls"]:
        rows, cols = call["patch_grid"]
        with torch.no_grad():
            table = vit.position_table(rows, cols)
        torch.testing.assert_close(table, tensors[f"{call['name']}.pos_embed_used"], atol=1e-5, rtol=0)
    # Token layout [cls | registers | patches]; registers carry no position code.
    with torch.no_grad():
        tokens = vit.embed(torch.rand(1, 3, 56, 84))
    assert tokens.shape == (1, 1 + 4 + 24, 64)
    assert torch.equal(tokens[0, 1:5], vit.register_tokens[0])
    with torch.no_grad():
        assert vit.patch_tokens(torch.rand(2, 3, 56, 84)).shape == (2, 24, 64)


def test_intermediate_layers(golden, tiny_encoder):
    tensors, _ = golden
    vit = tiny_encoder.pretrained
    with torch.no_grad():
        vit_input = tiny_encoder.vit_input(call_image(tensors, "case_a"))
        outputs = vit.intermediate_layers(vit_input, [1, 0])
        # Independent: run the blocks by hand.
        tokens = vit.embed(vit_input)
        after0 = vit.blocks[0](tokens)
        after1 = vit.blocks[1](after0)
    assert [o.patch_tokens.shape for o in outputs] == [(1, 24, 64), (1, 24, 64)]
    assert outputs[0].cls_token.shape == (1, 64)
    # The last block's normed patch tokens are the golden forward_semantics output.
    torch.testing.assert_close(outputs[0].patch_tokens, tensors["case_a.out"], atol=2e-4, rtol=0)
    torch.testing.assert_close(outputs[0].cls_token, vit.norm(after1)[:, 0])
    torch.testing.assert_close(outputs[1].patch_tokens, vit.norm(after0)[:, 1:])
    torch.testing.assert_close(outputs[1].cls_token, vit.norm(after0)[:, 0])
    with pytest.raises(ValueError):
        vit.intermediate_layers(vit_input, [2])


def test_full_size_encoder_matches_ppd_class_manifest():
    manifest = load_manifest("da2_vitl_ppd_class")
    with torch.device("meta"):
        encoder = DA2SemanticEncoder(DA2_VITL)
    ours = {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in encoder.state_dict().items()}
    assert ours == manifest
    assert list(ours) == list(manifest)  # same order, too
    assert sum(v.numel() for v in encoder.state_dict().values()) == 304_368_640


def test_loader_accepts_released_checkpoint_layout():
    # Full-size released layout (pretrained.* + depth_head.*) as meta tensors: checks every key
    # and shape without allocating 1.3 GB.
    released = load_manifest("da2_vitl_checkpoint")
    assert sum(k.startswith("depth_head.") for k in released) == 64
    encoder = load_da2_semantic_encoder(meta_state(released), device="meta")
    assert isinstance(encoder, DA2SemanticEncoder) and not encoder.training
    # And without the unused mask token.
    no_mask = {k: v for k, v in meta_state(released).items() if k != "pretrained.mask_token"}
    load_da2_semantic_encoder(no_mask, device="meta")


def test_loader_ignores_depth_head_on_real_weights(golden, tiny_weights, tiny_config):
    # Tiny ViT weights plus the released depth_head keys (any content: they are ignored).
    released = load_manifest("da2_vitl_checkpoint")
    state = dict(tiny_weights)
    state.update({k: torch.zeros(1) for k in released if k.startswith("depth_head.")})
    encoder = load_da2_semantic_encoder(state, tiny_config)
    tensors, _ = golden
    with torch.no_grad():
        out = encoder(call_image(tensors, "case_a"))
    torch.testing.assert_close(out, tensors["case_a.out"], atol=2e-4, rtol=0)


@pytest.mark.parametrize(
    "change, named",
    [
        ("drop", "pretrained.blocks.17.attn.qkv.weight"),
        ("reshape", "pretrained.pos_embed"),
        ("add", "pretrained.blocks.24.norm1.weight"),
        ("add", "model.head.weight"),
    ],
)
def test_loader_rejects_mismatch_naming_key(change, named):
    state = meta_state(load_manifest("da2_vitl_checkpoint"))
    if change == "drop":
        del state[named]
    elif change == "reshape":
        state[named] = torch.empty(1, 1025, 1024, device="meta")
    else:
        state[named] = torch.empty(1024, device="meta")
    with pytest.raises(CheckpointError, match=named.replace(".", r"\.")):
        load_da2_semantic_encoder(state, device="meta")


def test_loader_rejects_tiny_weights_for_full_size(tiny_weights):
    with pytest.raises(CheckpointError, match="pretrained.blocks.2.norm1.weight"):
        load_da2_semantic_encoder(tiny_weights, device="meta")


def test_loader_reads_file(tmp_path, tiny_weights, tiny_config, golden):
    path = tmp_path / "depth_anything_v2_vitl.pth"
    torch.save(tiny_weights, path)
    encoder = load_da2_semantic_encoder(path, tiny_config)
    tensors, _ = golden
    with torch.no_grad():
        torch.testing.assert_close(encoder(call_image(tensors, "case_b")), tensors["case_b.out"], atol=2e-4, rtol=0)
