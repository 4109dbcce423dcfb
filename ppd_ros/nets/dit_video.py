"""The PPVD video DiT (``DiT_Video`` of the official code, checkpoint ``ppvd.pth``).

Same skeleton as the image :class:`~ppd_ros.nets.dit.PixelDiT` (16-px blocks, semantic fusion,
2x2 unfold, 8-px blocks, final layer) with these differences:

* fixed input size (512x512 released) and a fixed 2-D sin-cos position table ``pos_embed``
  added after the patch embedding; no RoPE anywhere;
* 2048-d semantics (Pi3);
* the batch axis holds the frames of ONE window; frames 0-2 are the keyframes carried over from
  the previous window;
* from block 18 every frame's token sequence gets the 4x4-average-pooled 8-px tokens of frames
  0, 1, 2 appended (dropped again after the block);
* blocks 21-23 are each preceded by a temporal block attending across the frames at every
  8-px position.

The block indices (fusion after block depth/2-1, references from 18, temporal blocks before
21-23) are fixed as in the official code, so depth must be at least 24.
"""
from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import load_prefixed
from .dit import PixelDiT
from .layers import DiTBlock

PPVD_DIT_FULL = MappingProxyType(dict(hidden_size=1024, depth=24, num_heads=16))
"""Constructor arguments of the released video DiT (ppvd.pth)."""

CHECKPOINT_PREFIX = "dit_video."
IGNORED_CHECKPOINT_PREFIX = "sem_encoder."

VIDEO_SEMANTIC_DIM = 2048
NUM_TEMPORAL_BLOCKS = 3
TEMPORAL_FROM_BLOCK = 21  # temporal block j runs right before block 21 + j
REFERENCE_FROM_BLOCK = 18  # blocks >= 18 see the pooled tokens of the reference frames
NUM_REFERENCE_FRAMES = 3  # frames 0, 1, 2 of the window (the carried keyframes)
REFERENCE_POOL = 4  # 8-px tokens are average-pooled 4x4 for the reference tokens


def sincos_pos_table(dim: int, rows: int, cols: int) -> torch.Tensor:
    """Fixed 2-D sin-cos table (rows*cols, dim) float32, tokens row-major.

    The first half of the channels encodes the column x, the second half the row y; each half
    is ``[sin(p*w_i) | cos(p*w_i)]`` with ``w_i = 10000**(-i/(dim/4))``, computed in float64.
    """
    if dim % 4:
        raise ValueError(f"sin-cos table needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    ys, xs = torch.meshgrid(torch.arange(rows, dtype=torch.float64),
                            torch.arange(cols, dtype=torch.float64), indexing="ij")

    def encode(p: torch.Tensor) -> torch.Tensor:
        angles = p.reshape(-1, 1) * omega[None]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    return torch.cat([encode(xs), encode(ys)], dim=1).to(torch.float32)


class VideoDiT(PixelDiT):
    """Video DiT predicting the flow velocity of the depth latents of one window of frames.

    Args:
        hidden_size, depth, num_heads: transformer size (released: 1024, 24, 16). ``depth``
            must exceed :data:`TEMPORAL_FROM_BLOCK` + 2 (the three temporal blocks sit before
            blocks 21, 22, 23) and be even.
        patch_size: 8 (the 16-px / 8-px grid arithmetic is fixed).
        input_size: frame side in pixels (512 released; the position table is built for it and
            frames must have exactly this size). Must be a multiple of 64 (pooling of the
            8-px grid by 4).
        semantic_dim: width of the Pi3 tokens (2048 released; smaller only for tiny test models).
        in_channels, out_channels, mlp_ratio: as :class:`PixelDiT`.
    """

    def __init__(self, hidden_size: int, depth: int, num_heads: int, patch_size: int = 8,
                 input_size: int = 512, semantic_dim: int = VIDEO_SEMANTIC_DIM, in_channels: int = 4,
                 out_channels: int = 1, mlp_ratio: float = 4.0):
        if depth < TEMPORAL_FROM_BLOCK + NUM_TEMPORAL_BLOCKS:
            raise ValueError(f"the video DiT needs depth >= {TEMPORAL_FROM_BLOCK + NUM_TEMPORAL_BLOCKS}, "
                             f"got {depth}")
        if input_size % (8 * REFERENCE_POOL):
            raise ValueError(f"input_size must be a multiple of {8 * REFERENCE_POOL}, got {input_size}")
        super().__init__(hidden_size, depth, num_heads, patch_size=patch_size,
                         semantic_dim=semantic_dim, in_channels=in_channels,
                         out_channels=out_channels, mlp_ratio=mlp_ratio)
        self.input_size = input_size
        self.grid16 = input_size // 16
        # A frozen parameter (not a buffer) because the checkpoint stores it.
        self.pos_embed = nn.Parameter(torch.empty(1, self.grid16 ** 2, hidden_size), requires_grad=False)
        self.temporal_blocks = nn.ModuleList(
            DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(NUM_TEMPORAL_BLOCKS))
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Training init (see :meth:`PixelDiT.initialize_weights`) plus the sin-cos table."""
        if not hasattr(self, "temporal_blocks"):
            return  # called from PixelDiT.__init__ before the video parts exist; we run it after
        super().initialize_weights()
        for block in self.temporal_blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        with torch.no_grad():
            table = sincos_pos_table(self.hidden_size, self.grid16, self.grid16)
            self.pos_embed.copy_(table[None].to(self.pos_embed.device))

    def forward(self, x: torch.Tensor, semantics: torch.Tensor,
                timestep: torch.Tensor | int) -> torch.Tensor:
        """Velocity (N, 1, S, S) for the N frames of one window.

        Args:
            x: (N, 4, S, S), S = ``input_size``: noisy depth latent, then RGB in [0, 1] minus 0.5.
                N >= 3; frames 0-2 act as reference frames.
            semantics: (N, (S/16)^2, semantic_dim) Pi3 tokens, row-major over the 16-px grid.
            timestep: one raw integer timestep in [0, 1000] shared by all frames.
        """
        n, _, height, width = x.shape
        if (height, width) != (self.input_size, self.input_size):
            raise ValueError(f"the video DiT takes {self.input_size}x{self.input_size} frames, "
                             f"got {height}x{width}")
        if n < NUM_REFERENCE_FRAMES:
            raise ValueError(f"the video DiT needs at least {NUM_REFERENCE_FRAMES} frames, got {n}")
        rows = cols = self.grid16
        if semantics.shape[:2] != (n, rows * cols):
            raise ValueError(f"semantics {tuple(semantics.shape)} do not match {n} frames of "
                             f"{rows}x{cols} tokens")
        timestep = torch.as_tensor(timestep)
        if timestep.numel() != 1:
            raise ValueError("the video DiT takes one timestep shared by all frames")

        c = self.embed_timestep(timestep.reshape(()))
        tokens = self.x_embedder(x) + self.pos_embed.to(x.dtype)
        half = self.depth // 2
        for block in self.blocks[:half]:
            tokens = block(tokens, c)

        tokens = self._fuse_and_unfold(tokens, semantics, rows, cols)
        for index in range(half, self.depth):
            if index >= TEMPORAL_FROM_BLOCK:
                temporal = self.temporal_blocks[index - TEMPORAL_FROM_BLOCK]
                # attention across frames at each 8-px position: (tokens, frames, D)
                tokens = temporal(tokens.transpose(0, 1), c).transpose(0, 1)
            if index >= REFERENCE_FROM_BLOCK:
                own = tokens.shape[1]
                references = self._reference_tokens(tokens, 2 * rows, 2 * cols)
                extended = torch.cat([tokens, references.expand(n, -1, -1)], dim=1)
                tokens = self.blocks[index](extended, c)[:, :own]
            else:
                tokens = self.blocks[index](tokens, c)

        patches = self.final_layer(tokens, c)
        return self._unpatchify(patches, 2 * rows, 2 * cols)

    @staticmethod
    def _reference_tokens(tokens: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """(1, 3 * rows*cols/16, D): 8-px tokens of frames 0, 1, 2, each average-pooled 4x4,
        row-major, frames one after the other."""
        dim = tokens.shape[-1]
        grid = tokens[:NUM_REFERENCE_FRAMES].reshape(NUM_REFERENCE_FRAMES, rows, cols, dim)
        pooled = F.avg_pool2d(grid.permute(0, 3, 1, 2), REFERENCE_POOL)  # (3, D, r/4, c/4)
        return pooled.flatten(2).transpose(1, 2).reshape(1, -1, dim)


def load_ppvd(source: str | Path | Mapping[str, torch.Tensor],
              device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32,
              config: Mapping[str, object] = PPVD_DIT_FULL) -> VideoDiT:
    """Build a :class:`VideoDiT` and load it strictly from ppvd.pth (or a state dict).

    Keys must sit under ``dit_video.`` (``pos_embed`` included); an optional ``sem_encoder.*``
    part (the Pi3 weights inside the official wrapper) is ignored. Any other key, any missing
    ``dit_video.*`` key or any wrong shape raises :class:`CheckpointError` naming them.
    Returns the model in eval mode on ``device`` with ``dtype``.
    """
    return load_prefixed(lambda: VideoDiT(**config), source, CHECKPOINT_PREFIX, IGNORED_CHECKPOINT_PREFIX,
                         device, dtype)


__all__ = ["PPVD_DIT_FULL", "VideoDiT", "load_ppvd", "sincos_pos_table"]
