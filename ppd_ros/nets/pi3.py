"""Pi3's semantic path as PPVD uses it (``Pi3.forward_semantics``), checkpoint ``pi3.safetensors``.

Frames (N, 3, H, W) of ONE clip -> bilinear resize to the 14-px grid that equals the DiT's 16-px
grid -> ImageNet normalisation -> DINOv2 ViT/14 with 4 registers (antialiased position-table
resize) -> decoder of alternating frame-wise / global attention blocks with 2-D RoPE ->
concatenation of the last two decoder blocks' patch tokens: (N, (H//16)*(W//16), 2 * D).

Only the encoder, the decoder, ``register_token`` and the mean/std buffers are built; the point,
confidence and camera decoders/heads of the released file are never used (see :func:`load_pi3`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import load_strict, read_state_dict
from .dinov2 import DinoV2Config, DinoV2ViT, LayerScale, Mlp
from .layers import Attention, grid_positions, rope_2d_tables

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DIT_GRID_PX = 16
NUM_DECODER_REGISTERS = 5
ROPE_FREQUENCY = 100.0

# Top-level modules of Pi3() that forward_semantics never touches; load_pi3 accepts and drops them.
UNUSED_PI3_PARTS = ("point_decoder", "point_head", "conf_decoder", "conf_head",
                    "camera_decoder", "camera_head")

PI3_ENCODER = DinoV2Config(embed_dim=1024, depth=24, num_heads=16, num_register_tokens=4,
                           pos_resize="antialiased_bicubic", with_mask_token=False)


@dataclass(frozen=True)
class Pi3Config:
    """Sizes of :class:`Pi3Semantics` (default: the released Pi3, ViT-L encoder, 36-block decoder).

    The decoder width must equal the encoder width (Pi3 has no projection between them).
    """

    encoder: DinoV2Config = field(default_factory=lambda: PI3_ENCODER)
    decoder_depth: int = 36
    decoder_heads: int = 16
    mlp_ratio: float = 4.0


PI3_FULL = Pi3Config()


class Pi3DecoderBlock(nn.Module):
    """Pre-LN block (eps 1e-6): q/k-LayerNorm attention with 2-D RoPE, exact-GELU MLP,
    LayerScale on both branches."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qk_norm=True)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rope))
        return x + self.ls2(self.mlp(self.norm2(x)))


class Pi3Semantics(nn.Module):
    """Pi3 semantic tokens of one clip: frames (N, 3, H, W) in [0, 1] -> (N, (H//16)*(W//16), 2D).

    All N frames form ONE sequence: the odd decoder blocks attend over the tokens of all frames,
    so a frame's tokens depend on the other frames passed with it.
    """

    def __init__(self, config: Pi3Config = PI3_FULL) -> None:
        super().__init__()
        dim = config.encoder.embed_dim
        self.config = config
        self.register_token = nn.Parameter(torch.zeros(1, 1, NUM_DECODER_REGISTERS, dim))
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.encoder = DinoV2ViT(**asdict(config.encoder))
        self.decoder = nn.ModuleList(
            Pi3DecoderBlock(dim, config.decoder_heads, config.mlp_ratio)
            for _ in range(config.decoder_depth))
        if config.decoder_depth < 2 or config.decoder_depth % 2:
            raise ValueError(f"decoder depth must be even and >= 2, got {config.decoder_depth}")

    @property
    def out_dim(self) -> int:
        """Width of the output tokens (2 x decoder width; 2048 released)."""
        return 2 * self.config.encoder.embed_dim

    def vit_input(self, frames: torch.Tensor) -> torch.Tensor:
        """Bilinear resize to (H//16*14, W//16*14), then ImageNet normalisation."""
        rows, cols = frames.shape[-2] // DIT_GRID_PX, frames.shape[-1] // DIT_GRID_PX
        if rows < 1 or cols < 1:
            raise ValueError(f"frames {tuple(frames.shape[-2:])} are smaller than one {DIT_GRID_PX}-px token")
        patch = self.encoder.patch_size
        resized = F.interpolate(frames, size=(rows * patch, cols * patch), mode="bilinear",
                                align_corners=False, antialias=False)
        return (resized - self.image_mean.to(resized.dtype)) / self.image_std.to(resized.dtype)

    def _rope_tables(self, rows: int, cols: int, device: torch.device,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin (tokens_per_frame, head_dim): registers at (0, 0), patch (r, c) at (r+1, c+1)."""
        patches = grid_positions(rows, cols, device) + 1
        registers = torch.zeros(NUM_DECODER_REGISTERS, 2, dtype=patches.dtype, device=device)
        head_dim = self.config.encoder.embed_dim // self.config.decoder_heads
        return rope_2d_tables(torch.cat([registers, patches]), head_dim, ROPE_FREQUENCY)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Semantic tokens (N, rows*cols, 2D) of the clip ``frames`` (N, 3, H, W), RGB in [0, 1]."""
        n = frames.shape[0]
        rows, cols = frames.shape[-2] // DIT_GRID_PX, frames.shape[-1] // DIT_GRID_PX
        hidden = self.encoder.patch_tokens(self.vit_input(frames))
        registers = self.register_token.reshape(1, NUM_DECODER_REGISTERS, -1).to(hidden.dtype)
        hidden = torch.cat([registers.expand(n, -1, -1), hidden], dim=1)
        per_frame = hidden.shape[1]

        cos, sin = self._rope_tables(rows, cols, hidden.device)
        frame_rope = (cos[None, None], sin[None, None])
        clip_rope = (cos.repeat(n, 1)[None, None], sin.repeat(n, 1)[None, None])

        last_two = []
        for index, block in enumerate(self.decoder):
            if index % 2 == 0:  # attention within each frame
                hidden = block(hidden.reshape(n, per_frame, -1), frame_rope)
            else:  # attention over all tokens of all frames
                hidden = block(hidden.reshape(1, n * per_frame, -1), clip_rope)
            if index >= len(self.decoder) - 2:
                last_two.append(hidden.reshape(n, per_frame, -1))
        return torch.cat(last_two, dim=-1)[:, NUM_DECODER_REGISTERS:]


def load_pi3(source: str | Path | Mapping[str, torch.Tensor],
             device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float32,
             config: Pi3Config = PI3_FULL) -> Pi3Semantics:
    """Build :class:`Pi3Semantics` and load it from ``pi3.safetensors`` (a path or its state dict).

    Every key of the model (encoder, decoder, ``register_token``, ``image_mean``/``image_std``)
    must be present with the right shape. Keys of the unused heads (:data:`UNUSED_PI3_PARTS`)
    are accepted and dropped; any other key is unexpected. Raises :class:`CheckpointError`
    naming every mismatch. Returns the model in eval mode on ``device`` / ``dtype``.
    """
    name = str(source) if isinstance(source, (str, Path)) else "Pi3 state dict"
    state = read_state_dict(source) if isinstance(source, (str, Path)) else dict(source)
    used = {k: v for k, v in state.items() if k.split(".", 1)[0] not in UNUSED_PI3_PARTS}
    with torch.device("meta"):
        model = Pi3Semantics(config)
    model = model.to(dtype).to_empty(device=device)
    load_strict(model, used, source=name)
    return model.eval()


__all__ = ["PI3_ENCODER", "PI3_FULL", "Pi3Config", "Pi3DecoderBlock", "Pi3Semantics",
           "UNUSED_PI3_PARTS", "load_pi3"]
