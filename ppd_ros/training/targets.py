"""Training targets and losses of Pixel-Perfect Depth (official normalisation and gradient loss).

The DiT learns a normalised log-depth in [-1, 0.5]: per sample, log(depth + 1) is mapped so that
its 2 % / 98 % quantiles over valid pixels nearer than 80 m land on -0.5 / 0.5; values beyond are
clamped asymmetrically (down to -1, up to 0.5).
"""
from __future__ import annotations

import torch

from ppd_ros.constants import MAX_DEPTH_M

CLIP_DEPTH_M = MAX_DEPTH_M  # the official targets' cap
LOW_QUANTILE = 0.02
HIGH_QUANTILE = 0.98
MIN_RANGE = 1e-6
GRADIENT_SCALES = 4  # strides 1, 2, 4, 8


def normalise_depth_target(depth: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Official GT normalisation: (target (B, 1, H, W) in [-1, 0.5], mask as bool).

    Args:
        depth: (B, 1, H, W) metres (any value where ``mask`` is false).
        mask: (B, 1, H, W) valid pixels.

    The quantiles use the pixels with ``mask & depth < 80`` (linear interpolation); every pixel is
    normalised, valid or not. A sample whose quantiles are closer than 1e-6 gets hi = lo + 1e-6.
    Raises ``ValueError`` naming the sample when it has no valid pixel nearer than 80 m.
    """
    mask = mask.bool()
    clip_mask = mask & (depth < CLIP_DEPTH_M)
    log_depth = torch.log(depth + 1.0)
    lows, highs = [], []
    for i in range(depth.shape[0]):
        values = log_depth[i][clip_mask[i]]
        if values.numel() == 0:
            raise ValueError(f"sample {i} of the batch has no valid depth below {CLIP_DEPTH_M} m")
        lows.append(torch.quantile(values, LOW_QUANTILE))
        highs.append(torch.quantile(values, HIGH_QUANTILE))
    low = torch.stack(lows)
    high = torch.stack(highs)
    high = torch.where(high - low < MIN_RANGE, low + MIN_RANGE, high)
    low, high = low.view(-1, 1, 1, 1), high.view(-1, 1, 1, 1)
    normalised = torch.clamp((log_depth - low) / (high - low), -0.5, 1.0)
    return normalised - 0.5, mask


def gradient_matching_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked gradient-matching loss of (B, H, W) maps (float mask).

    The residual r = mask * (prediction - target); the L1 norm of its horizontal and vertical
    finite differences where both neighbours are valid, summed over the batch and divided by the
    number of valid pixels of the batch.
    """
    residual = mask * (prediction - target)
    pair_x = mask[:, :, 1:] * mask[:, :, :-1]
    pair_y = mask[:, 1:, :] * mask[:, :-1, :]
    grad_x = pair_x * (residual[:, :, 1:] - residual[:, :, :-1]).abs()
    grad_y = pair_y * (residual[:, 1:, :] - residual[:, :-1, :]).abs()
    return (grad_x.sum() + grad_y.sum()) / mask.sum()


def multi_scale_gradient_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                              scales: int = GRADIENT_SCALES) -> torch.Tensor:
    """Plain sum of :func:`gradient_matching_loss` on every 2**s-th pixel, s = 0..scales-1."""
    total = prediction.new_zeros(())
    for scale in range(scales):
        step = 2**scale
        total = total + gradient_matching_loss(prediction[:, ::step, ::step], target[:, ::step, ::step],
                                               mask[:, ::step, ::step])
    return total


__all__ = ["CLIP_DEPTH_M", "gradient_matching_loss", "multi_scale_gradient_loss", "normalise_depth_target"]
