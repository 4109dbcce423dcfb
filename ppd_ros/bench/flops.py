"""Analytic floating-point operation counts of the PPD image model (matmuls, convolutions and
attention; 2 FLOP per multiply-add), the numerator of the benchmarks' TFLOP/s and MFU.

Counted like ``torch.utils.flop_counter.FlopCounterMode`` (every Linear and patch convolution,
QK^T and AV of attention; biases, norms, activations and resizes are not counted), so the two
agree exactly (tested). Read from the module's sizes, so it works on meta-device networks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def _linear(rows: int, features_in: int, features_out: int) -> int:
    return 2 * rows * features_in * features_out


def _attention(batch: int, tokens: int, width: int) -> int:
    """QK^T and AV over all heads: 2 * (2 * N * N * head_dim) * heads."""
    return 2 * 2 * batch * tokens * tokens * width


def _transformer_block(batch: int, tokens: int, width: int, mlp_hidden: int) -> int:
    """qkv, attention, output projection, MLP (2 layers)."""
    rows = batch * tokens
    return (_linear(rows, width, 3 * width) + _attention(batch, tokens, width) + _linear(rows, width, width)
            + _linear(rows, width, mlp_hidden) + _linear(rows, mlp_hidden, width))


def dit_flops(dit: torch.nn.Module, height: int, width: int, batch: int = 1) -> int:
    """One evaluation of a :class:`~ppd_ros.nets.dit.PixelDiT` on (batch, 4, height, width) with one
    timestep shared by the batch (as the sampler calls it)."""
    d = dit.hidden_size
    mlp_hidden = dit.blocks[0].mlp.fc1.out_features
    coarse = (height // 16) * (width // 16)
    fine = 4 * coarse
    timestep = dit.t_embedder.mlp[0].in_features
    total = _linear(1, timestep, d) + _linear(1, d, d)  # timestep embedding, one row
    total += 2 * batch * coarse * d * dit.in_channels * 16 * 16  # 16-px patch convolution
    half = dit.depth // 2
    for tokens in [coarse] * half + [fine] * (dit.depth - half):
        total += _linear(1, d, 6 * d) + _transformer_block(batch, tokens, d, mlp_hidden)
    wide = 4 * d
    total += (_linear(batch * coarse, d + dit.semantic_dim, wide) + _linear(batch * coarse, wide, wide)
              + _linear(batch * coarse, wide, wide))  # fusion MLP
    final = dit.final_layer.linear.out_features
    total += _linear(1, d, 2 * d) + _linear(batch * fine, d, final)
    return total


def vit_flops(vit: torch.nn.Module, rows: int, cols: int, batch: int = 1) -> int:
    """A :class:`~ppd_ros.nets.dinov2.DinoV2ViT` forward over a rows x cols patch grid."""
    e = vit.embed_dim
    mlp_hidden = vit.blocks[0].mlp.fc1.out_features
    tokens = 1 + vit.num_register_tokens + rows * cols
    patch = vit.patch_size
    total = 2 * batch * rows * cols * e * 3 * patch * patch
    return total + len(vit.blocks) * _transformer_block(batch, tokens, e, mlp_hidden)


@dataclass(frozen=True)
class FrameFlops:
    """FLOP of one batch through the image model: encoder once, DiT ``steps`` times."""

    encoder: int
    dit_step: int
    steps: int

    @property
    def total(self) -> int:
        return self.encoder + self.steps * self.dit_step


def image_model_flops(dit: torch.nn.Module, encoder: torch.nn.Module, height: int, width: int, steps: int,
                      batch: int = 1) -> FrameFlops:
    """FLOP of PPD with a DA2-style encoder (its ViT sees the 16-px grid as a 14-px grid)."""
    vit = encoder.pretrained
    return FrameFlops(vit_flops(vit, height // 16, width // 16, batch), dit_flops(dit, height, width, batch), steps)
