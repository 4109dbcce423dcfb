"""Depth-Anything-V2 semantic encoder as PPD uses it: DINOv2 ViT-L/14 patch tokens on the
DiT's 16-px token grid.

Checkpoint: the released ``depth_anything_v2_vitl.pth`` (``pretrained.*`` = the ViT,
``depth_head.*`` = DA2's DPT head, which PPD does not use).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ppd_ros.nets.checkpoints import CheckpointError, load_strict, read_state_dict, select_prefix
from ppd_ros.nets.dinov2 import DinoV2Config, DinoV2ViT

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# DINOv2 ViT-L/14 as stored in depth_anything_v2_vitl.pth (no registers, DA2 table resize).
DA2_VITL = DinoV2Config(embed_dim=1024, depth=24, num_heads=16, pos_resize="scaled_bicubic")

# The DiT's token grid is 16 px; the ViT sees the image shrunk so its 14-px grid has the same size.
DIT_GRID_PX = 16


class DA2SemanticEncoder(nn.Module):
    """Image (B, 3, H, W) RGB in [0, 1] -> DINOv2 patch tokens (B, (H//16)*(W//16), E), row-major.

    ImageNet normalisation, then bicubic resize (align_corners False, no antialias) to
    (H//16*14, W//16*14), then the ViT's final-LayerNorm'd patch tokens. No further
    normalisation (the DiT L2-normalises them).

    The ViT child is named ``pretrained`` so that the state dict equals the official
    ``DepthAnythingV2`` one (``pretrained.*``), also inside PPD's wrapper (``sem_encoder.pretrained.*``).
    """

    def __init__(self, config: DinoV2Config = DA2_VITL) -> None:
        super().__init__()
        self.pretrained = DinoV2ViT.from_config(config)

    @property
    def embed_dim(self) -> int:
        return self.pretrained.embed_dim

    def vit_input(self, image: torch.Tensor) -> torch.Tensor:
        """The normalised, resized image (B, 3, H//16*14, W//16*14) that enters the patch embedding."""
        rows, cols = image.shape[-2] // DIT_GRID_PX, image.shape[-1] // DIT_GRID_PX
        if rows < 1 or cols < 1:
            raise ValueError(f"image {tuple(image.shape[-2:])} is smaller than one {DIT_GRID_PX}-px token")
        # per channel with Python scalars: no constant tensor to copy to the device on every call
        # (nor inside a CUDA graph capture)
        channels = [(image[:, c] - mean) / std for c, (mean, std) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD))]
        normalised = torch.stack(channels, dim=1)
        patch = self.pretrained.patch_size
        return F.interpolate(
            normalised, size=(rows * patch, cols * patch), mode="bicubic", align_corners=False, antialias=False
        )

    def forward(self, image: torch.Tensor, position_table: torch.Tensor | None = None) -> torch.Tensor:
        """``position_table``: see :meth:`DinoV2ViT.embed` (None: made from the learned table).

        Normalisation and resize run in the image's dtype; the ViT in its weights' dtype (bf16
        weights need no autocast)."""
        vit_input = self.vit_input(image).to(self.pretrained.patch_embed.proj.weight.dtype)
        return self.pretrained.patch_tokens(vit_input, position_table)


def load_da2_semantic_encoder(
    source: str | Path | Mapping[str, torch.Tensor],
    config: DinoV2Config = DA2_VITL,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> DA2SemanticEncoder:
    """Build the encoder and load ``depth_anything_v2_vitl.pth`` (a path or its state dict).

    Every ``pretrained.*`` key of the model must be present with the right shape
    (``pretrained.mask_token`` is unused and may be absent); ``depth_head.*`` is ignored; any
    other key is an error. Raises :class:`CheckpointError` naming each mismatch. Returns the
    encoder in eval mode on ``device`` / ``dtype``.
    """
    state = read_state_dict(source) if isinstance(source, (str, Path)) else dict(source)
    name = str(source) if isinstance(source, (str, Path)) else "DA2 state dict"
    stray = sorted(k for k in state if not k.startswith(("pretrained.", "depth_head.")))
    if stray:
        raise CheckpointError(f"{name}: {len(stray)} unexpected keys outside pretrained.*/depth_head.*: "
                              + ", ".join(stray))
    vit_state = {"pretrained." + k: v for k, v in select_prefix(state, "pretrained.").items()}

    # Build without allocating or initialising twice: meta skeleton, then uninitialised storage
    # that load_strict overwrites (it checks every key first).
    with torch.device("meta"):
        encoder = DA2SemanticEncoder(config)
    encoder = encoder.to_empty(device=device).to(dtype)
    if "pretrained.mask_token" not in vit_state:
        with torch.no_grad():
            encoder.pretrained.mask_token.zero_()
    load_strict(encoder, vit_state, source=name, ignore_missing=["pretrained.mask_token"])
    return encoder.eval()


__all__ = ["DA2_VITL", "DA2SemanticEncoder", "IMAGENET_MEAN", "IMAGENET_STD", "load_da2_semantic_encoder"]
