"""DINOv2 vision transformer (patch 14), the backbone of the DA2, MoGe-2 and Pi3 semantic encoders.

Parameter names equal the official DINOv2 state-dict keys (``cls_token``, ``pos_embed``,
``mask_token``, ``register_tokens``, ``patch_embed.proj``, ``blocks.<i>.{norm1,attn.qkv,attn.proj,
ls1.gamma,norm2,mlp.fc1,mlp.fc2,ls2.gamma}``, ``norm``), so a checkpoint loads after stripping its
prefix (``pretrained.`` for DA2, ``encoder.backbone.`` for MoGe-2, ``encoder.`` for Pi3).

The three users resize the learned 37x37 position table differently; the rule is a constructor
option (``pos_resize``), see :data:`POS_RESIZE_RULES`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def resize_pos_grid_scaled_bicubic(grid: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """DA2 / MoGe-2 rule: plain bicubic (a=-0.75, no antialias) called with the scale factor
    ((rows+0.1)/G, (cols+0.1)/G) instead of a target size.

    The factor (not the size) fixes the sampling positions: output index o reads source
    coordinate (o + 0.5) * G / (rows + 0.1) - 0.5. ``grid`` is (1, E, G, G) float32.
    """
    g_rows, g_cols = grid.shape[-2:]
    resized = F.interpolate(
        grid,
        scale_factor=((rows + 0.1) / g_rows, (cols + 0.1) / g_cols),
        mode="bicubic",
        align_corners=False,
        antialias=False,
    )
    if resized.shape[-2:] != (rows, cols):  # floor(G * (n+0.1)/G) must give n back
        raise RuntimeError(f"position table resized to {tuple(resized.shape[-2:])}, wanted {(rows, cols)}")
    return resized


def resize_pos_grid_antialiased_bicubic(grid: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Pi3 rule: antialiased bicubic (PIL-style, a=-0.5) to the target size, no offset.

    ``grid`` is (1, E, G, G) float32.
    """
    return F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False, antialias=True)


# Position-table resize rules by name: "scaled_bicubic" (DA2, MoGe-2), "antialiased_bicubic" (Pi3).
POS_RESIZE_RULES: dict[str, Callable[[torch.Tensor, int, int], torch.Tensor]] = {
    "scaled_bicubic": resize_pos_grid_scaled_bicubic,
    "antialiased_bicubic": resize_pos_grid_antialiased_bicubic,
}


def resize_position_table(pos_embed: torch.Tensor, rows: int, cols: int, rule: str) -> torch.Tensor:
    """The learned table ``pos_embed`` (1, 1 + G*G, E) for a rows x cols grid, float32: the cls
    row, then the G x G grid resized by ``rule`` (a name in :data:`POS_RESIZE_RULES`); a G x G
    grid uses the table as stored."""
    table = pos_embed.float()
    grid_side = int(round((table.shape[1] - 1) ** 0.5))
    if rows == grid_side and cols == grid_side:
        return table
    grid = table[:, 1:].reshape(1, grid_side, grid_side, -1).permute(0, 3, 1, 2)
    patches = POS_RESIZE_RULES[rule](grid, rows, cols).permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
    return torch.cat([table[:, :1], patches], dim=1)


@dataclass(frozen=True)
class DinoV2Config:
    """Constructor arguments of :class:`DinoV2ViT` (see there)."""

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int = 14
    mlp_ratio: float = 4.0
    num_register_tokens: int = 0
    pos_grid: int = 37
    pos_resize: str = "scaled_bicubic"
    with_mask_token: bool = True


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` convolution; tokens row-major over the patch grid."""

    def __init__(self, embed_dim: int, patch_size: int, in_channels: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"image {height}x{width} is not a multiple of the patch size {self.patch_size}")
        return self.proj(images).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention (fused qkv with bias, no q/k norm, no RoPE) via SDPA."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, head_dim)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    """Linear -> exact (erf) GELU -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel learned scale ``gamma``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-LN transformer block with LayerScale on both residual branches."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class LayerOutput(NamedTuple):
    """One block's output after the final LayerNorm: patch tokens (B, rows*cols, E), cls (B, E)."""

    patch_tokens: torch.Tensor
    cls_token: torch.Tensor


class DinoV2ViT(nn.Module):
    """DINOv2 ViT: [cls | registers | patches] tokens, pre-LN blocks, final LayerNorm.

    Args:
        embed_dim, depth, num_heads, patch_size, mlp_ratio: transformer size (ViT-L/14:
            1024, 24, 16, 14, 4).
        num_register_tokens: 0 for DA2 / MoGe-2, 4 for Pi3. Registers are inserted after the
            position table was added (they get no position code).
        pos_grid: side of the learned square position table (37 = 518 px / 14).
        pos_resize: name in :data:`POS_RESIZE_RULES`, how the table is resized to other grids
            (an exactly ``pos_grid`` x ``pos_grid`` grid uses the table as stored).
        with_mask_token: keep the (unused at inference) ``mask_token`` parameter so the
            state dict matches checkpoints that store it (DA2, MoGe-2; Pi3 deletes it).
    """

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        patch_size: int = 14,
        mlp_ratio: float = 4.0,
        num_register_tokens: int = 0,
        pos_grid: int = 37,
        pos_resize: str = "scaled_bicubic",
        with_mask_token: bool = True,
    ) -> None:
        super().__init__()
        if pos_resize not in POS_RESIZE_RULES:
            raise ValueError(f"unknown pos_resize {pos_resize!r}; known: {sorted(POS_RESIZE_RULES)}")
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.pos_grid = pos_grid
        self.num_register_tokens = num_register_tokens
        self.pos_resize = pos_resize

        # Parameter registration order follows the official state dict.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pos_grid * pos_grid, embed_dim))
        if num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        if with_mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.patch_embed = PatchEmbed(embed_dim, patch_size)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    @classmethod
    def from_config(cls, config: DinoV2Config) -> "DinoV2ViT":
        """Build from a :class:`DinoV2Config`."""
        return cls(**asdict(config))

    def position_table(self, rows: int, cols: int) -> torch.Tensor:
        """The (1, 1 + rows*cols, E) table added to [cls | patches], cls row first, float32."""
        return resize_position_table(self.pos_embed, rows, cols, self.pos_resize)

    def embed(self, images: torch.Tensor, position_table: torch.Tensor | None = None) -> torch.Tensor:
        """Input tokens (B, 1 + registers + rows*cols, E) for images (B, 3, 14*rows, 14*cols).

        ``position_table``: :meth:`position_table` for this grid, when the caller made it (the
        ONNX graph takes it as an input, so the graph needs no resize rule); None: made here.
        """
        rows, cols = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        patches = self.patch_embed(images)
        cls = self.cls_token.expand(patches.shape[0], -1, -1).to(patches.dtype)
        tokens = torch.cat([cls, patches], dim=1)
        if position_table is None:
            position_table = self.position_table(rows, cols)
        tokens = tokens + position_table.to(tokens.dtype)
        if self.num_register_tokens:
            registers = self.register_tokens.expand(tokens.shape[0], -1, -1).to(tokens.dtype)
            tokens = torch.cat([tokens[:, :1], registers, tokens[:, 1:]], dim=1)
        return tokens

    def patch_tokens(self, images: torch.Tensor, position_table: torch.Tensor | None = None) -> torch.Tensor:
        """Final-LayerNorm'd patch tokens (B, rows*cols, E), cls and registers dropped."""
        tokens = self.embed(images, position_table)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens[:, 1 + self.num_register_tokens:])

    def intermediate_layers(self, images: torch.Tensor, layers: Sequence[int]) -> list[LayerOutput]:
        """Outputs of the blocks with the given 0-based indices, each passed through the final
        LayerNorm, in the order given (MoGe-2 uses [5, 11, 17, 23]). Later blocks are not run."""
        wanted = [i if i >= 0 else len(self.blocks) + i for i in layers]
        if any(not 0 <= i < len(self.blocks) for i in wanted):
            raise ValueError(f"layers {list(layers)} out of range for {len(self.blocks)} blocks")
        tokens = self.embed(images)
        captured: dict[int, torch.Tensor] = {}
        for index, block in enumerate(self.blocks[: max(wanted) + 1]):
            tokens = block(tokens)
            if index in wanted:
                captured[index] = tokens
        outputs = []
        for index in wanted:
            normed = self.norm(captured[index])
            outputs.append(LayerOutput(normed[:, 1 + self.num_register_tokens:], normed[:, 0]))
        return outputs


__all__ = [
    "DinoV2Config",
    "DinoV2ViT",
    "LayerOutput",
    "POS_RESIZE_RULES",
    "resize_pos_grid_scaled_bicubic",
    "resize_pos_grid_antialiased_bicubic",
    "resize_position_table",
]
