"""The Pixel-Perfect Depth image DiT (semantics-prompted DiT working in pixel space).

Blocks 0..depth/2-1 run on 16-px tokens; then the tokens are fused with L2-normalised semantic
tokens, widened 4x by an MLP and unfolded 2x2 into 8-px tokens for blocks depth/2..depth-1; the
final layer unpatchifies 8-px patches to one velocity channel.
"""
from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import load_prefixed
from .layers import DiTBlock, FinalLayer, GridRope2D, PatchEmbed, TimestepEmbedder

PPD_DIT_FULL = MappingProxyType(dict(hidden_size=1024, depth=24, num_heads=16))
"""Constructor arguments of the released image DiT (ppd.pth / ppd_moge.pth)."""

CHECKPOINT_PREFIX = "dit."
IGNORED_CHECKPOINT_PREFIX = "sem_encoder."


class PixelDiT(nn.Module):
    """Image DiT predicting the flow velocity of a depth latent.

    Args:
        hidden_size, depth, num_heads: transformer size (full model: 1024, 24, 16).
        patch_size: output patch size; only 8 is consistent with the official 16-px/8-px grids.
        semantic_dim: width of the semantic tokens fused after block depth/2-1 (1024).
        in_channels: noisy depth latent + RGB (4); out_channels: velocity (1).
        mlp_ratio: MLP width factor; rope_frequency: 2-D RoPE base (100).
    """

    def __init__(self, hidden_size: int, depth: int, num_heads: int, patch_size: int = 8,
                 semantic_dim: int = 1024, in_channels: int = 4, out_channels: int = 1,
                 mlp_ratio: float = 4.0, rope_frequency: float = 100.0):
        super().__init__()
        if patch_size != 8:
            raise ValueError("the PPD DiT grid arithmetic (16-px then 8-px tokens) needs patch_size 8")
        if depth % 2:
            raise ValueError(f"depth must be even (fusion after the first half), got {depth}")
        self.hidden_size = hidden_size
        self.depth = depth
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.semantic_dim = semantic_dim
        self.in_channels = in_channels
        self.out_channels = out_channels

        self.x_embedder = PatchEmbed(in_channels, hidden_size, 2 * patch_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.blocks = nn.ModuleList(DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        wide = 4 * hidden_size  # one 16-px token -> 2x2 tokens of width hidden_size
        self.proj_fusion = nn.Sequential(
            nn.Linear(hidden_size + semantic_dim, wide), nn.SiLU(),
            nn.Linear(wide, wide), nn.SiLU(),
            nn.Linear(wide, wide),
        )
        self.final_layer = FinalLayer(hidden_size, patch_size, out_channels)
        self._rope = GridRope2D(hidden_size // num_heads, rope_frequency)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT-style init (xavier linears, zero adaLN and output layers); for training from scratch."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        conv = self.x_embedder.proj
        nn.init.xavier_uniform_(conv.weight.view(conv.weight.shape[0], -1))
        nn.init.zeros_(conv.bias)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def embed_timestep(self, timestep: torch.Tensor | int) -> torch.Tensor:
        """Conditioning vector (1, D) for a 0-d/int timestep, (N, D) for an (N,) tensor."""
        timestep = torch.as_tensor(timestep, device=self.t_embedder.mlp[0].weight.device)
        return self.t_embedder(timestep.reshape(-1))

    def forward(self, x: torch.Tensor, semantics: torch.Tensor,
                timestep: torch.Tensor | int) -> torch.Tensor:
        """Velocity (N, 1, H, W).

        Args:
            x: (N, 4, H, W): noisy depth latent, then RGB in [0, 1] minus 0.5; H, W multiples of 16.
            semantics: (N, (H/16)*(W/16), semantic_dim) tokens, row-major over the 16-px grid.
            timestep: raw integer timestep(s) in [0, 1000]: 0-d (shared by the batch) or (N,).
        """
        n, _, height, width = x.shape
        if height % 16 or width % 16:
            raise ValueError(f"image size must be a multiple of 16, got {height}x{width}")
        rows, cols = height // 16, width // 16
        if semantics.shape[:2] != (n, rows * cols):
            raise ValueError(f"semantics {tuple(semantics.shape)} do not match {n} images of "
                             f"{rows}x{cols} tokens")

        c = self.embed_timestep(timestep)
        tokens = self.x_embedder(x)
        rope16 = self._rope.tables(rows, cols, tokens.device)
        half = self.depth // 2
        for block in self.blocks[:half]:
            tokens = block(tokens, c, rope16)

        tokens = self._fuse_and_unfold(tokens, semantics, rows, cols)
        rope8 = self._rope.tables(2 * rows, 2 * cols, tokens.device)
        for block in self.blocks[half:]:
            tokens = block(tokens, c, rope8)

        patches = self.final_layer(tokens, c)
        return self._unpatchify(patches, 2 * rows, 2 * cols)

    def _fuse_and_unfold(self, tokens: torch.Tensor, semantics: torch.Tensor,
                         rows: int, cols: int) -> torch.Tensor:
        """16-px tokens + semantics -> 8-px tokens (N, 4*rows*cols, D), row-major."""
        n, _, dim = tokens.shape
        sem = F.normalize(semantics.to(torch.float32), dim=-1).to(tokens.dtype)
        wide = self.proj_fusion(torch.cat([tokens, sem], dim=-1))
        # channel (2p+q)*D + c of token (i, j) goes to 8-px position (2i+p, 2j+q)
        wide = wide.reshape(n, rows, cols, 2, 2, dim).permute(0, 1, 3, 2, 4, 5)
        return wide.reshape(n, 4 * rows * cols, dim)

    def _unpatchify(self, patches: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """(N, rows*cols, p*p*C) -> (N, C, rows*p, cols*p); channel (r*p+s)*C+c -> pixel (r, s)."""
        n = patches.shape[0]
        p, ch = self.patch_size, self.out_channels
        img = patches.reshape(n, rows, cols, p, p, ch).permute(0, 5, 1, 3, 2, 4)
        return img.reshape(n, ch, rows * p, cols * p)


def load_ppd_dit(source: str | Path | Mapping[str, torch.Tensor],
                 device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32,
                 config: Mapping[str, object] = PPD_DIT_FULL) -> PixelDiT:
    """Build a :class:`PixelDiT` and load it strictly from ppd.pth / ppd_moge.pth (or a state dict).

    Keys must sit under ``dit.``; an optional ``sem_encoder.*`` part is ignored. Any other key,
    any missing ``dit.*`` key or any wrong shape raises :class:`CheckpointError` naming them.
    Returns the model in eval mode on ``device`` with ``dtype``.
    """
    return load_prefixed(lambda: PixelDiT(**config), source, CHECKPOINT_PREFIX, IGNORED_CHECKPOINT_PREFIX,
                         device, dtype)
