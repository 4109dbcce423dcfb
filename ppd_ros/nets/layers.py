"""Transformer building blocks shared by the PPD image DiT, the video DiT and Pi3.

Module and parameter names follow the official checkpoints (``t_embedder.mlp.0``, ``attn.qkv``,
``attn.q_norm``, ``adaLN_modulation.1``, ...), so state-dict keys load without renaming.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TIMESTEP_FEATURES = 256


def timestep_features(timesteps: torch.Tensor, dim: int = TIMESTEP_FEATURES,
                      max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features ``[cos | sin]`` (N, dim) of 1-D timesteps, always in float32.

    Frequencies are ``exp(-ln(max_period) * i / (dim/2))``. Timesteps are used raw (0..1000).
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    args = timesteps.reshape(-1, 1).to(torch.float32) * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Timestep -> (N, hidden) vector: float32 sinusoidal features, Linear, SiLU, Linear."""

    def __init__(self, hidden_size: int, feature_size: int = TIMESTEP_FEATURES):
        super().__init__()
        self.feature_size = feature_size
        self.mlp = nn.Sequential(
            nn.Linear(feature_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        """``timesteps``: 0-d (gives one row, broadcast by the caller) or (N,) tensor."""
        features = timestep_features(timesteps, self.feature_size)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


# ---------------------------------------------------------------------------------------------
# 2-D rotary position embedding
# ---------------------------------------------------------------------------------------------

def grid_positions(rows: int, cols: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Integer (y, x) positions (rows*cols, 2) of a token grid, row-major."""
    ys = torch.arange(rows, device=device)
    xs = torch.arange(cols, device=device)
    return torch.cartesian_prod(ys, xs)


def rope_2d_tables(positions: torch.Tensor, head_dim: int, frequency: float = 100.0,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (..., N, head_dim) for 2-D RoPE from integer (y, x) positions (..., N, 2).

    The first half of the head dimension is rotated by y, the second half by x; within each half
    of size d the inverse frequencies are ``1 / frequency**(2i/d)`` and the angle table is
    duplicated (``[a | a]``) for the rotate-half pairing. Computed in float32.
    """
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head dim divisible by 4, got {head_dim}")
    half = head_dim // 2
    inv_freq = 1.0 / (frequency ** (
        torch.arange(0, half, 2, dtype=torch.float32, device=positions.device) / half))
    angles = []
    for axis in (0, 1):  # y then x
        a = positions[..., axis].to(torch.float32)[..., None] * inv_freq
        angles.append(torch.cat([a, a], dim=-1))
    angle = torch.cat(angles, dim=-1)
    return torch.cos(angle), torch.sin(angle)


def apply_rope_2d(tokens: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``tokens`` (..., N, head_dim) with tables from :func:`rope_2d_tables`.

    Each half [u1 | u2] of the head (y half, x half) is paired rotate-half style:
    ``out = v * cos + [-u2 | u1] * sin``.
    """
    head_dim = tokens.shape[-1]
    quarter = head_dim // 4
    v = tokens.unflatten(-1, (2, 2, quarter))  # (..., half y/x, quarter u1/u2, quarter)
    rotated = torch.stack([-v[..., 1, :], v[..., 0, :]], dim=-2).flatten(-3)
    return tokens * cos.to(tokens.dtype) + rotated * sin.to(tokens.dtype)


def rope_2d(tokens: torch.Tensor, positions: torch.Tensor, frequency: float = 100.0) -> torch.Tensor:
    """2-D RoPE of ``tokens`` (B, heads, N, head_dim) at integer (y, x) ``positions`` (B, N, 2)."""
    cos, sin = rope_2d_tables(positions, tokens.shape[-1], frequency)
    return apply_rope_2d(tokens, cos[:, None], sin[:, None])


class GridRope2D:
    """Caches float32 2-D RoPE cos/sin tables (1, 1, rows*cols, head_dim) per grid and device.

    Not a module: the tables are derived data and never part of a state dict. They stay float32
    (cast where applied) because under autocast q/k leave their LayerNorm in float32.
    """

    def __init__(self, head_dim: int, frequency: float = 100.0, max_entries: int = 8):
        self.head_dim = head_dim
        self.frequency = frequency
        self.max_entries = max_entries
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(self, rows: int, cols: int, device: torch.device,
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.compiler.is_compiling():  # torch.compile / ONNX export trace: no Python-side cache
            cos, sin = rope_2d_tables(grid_positions(rows, cols, device), self.head_dim, self.frequency)
            return cos[None, None], sin[None, None]
        key = (rows, cols, str(device))
        found = self._tables.get(key)
        if found is None:
            cos, sin = rope_2d_tables(grid_positions(rows, cols, device), self.head_dim, self.frequency)
            found = (cos[None, None], sin[None, None])
            if len(self._tables) >= self.max_entries:
                self._tables.pop(next(iter(self._tables)))
            self._tables[key] = found
        return found


# ---------------------------------------------------------------------------------------------
# Attention, MLP, DiT block, final layer
# ---------------------------------------------------------------------------------------------

class Attention(nn.Module):
    """Multi-head self-attention with q/k LayerNorm (eps 1e-5) and optional 2-D RoPE (SDPA)."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=1e-5) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-5) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``x`` (B, N, dim); ``rope`` = (cos, sin) broadcastable to (B, heads, N, head_dim)."""
        b, n, dim = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q = apply_rope_2d(q, *rope)
            k = apply_rope_2d(k, *rope)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, dim))


class Mlp(nn.Module):
    """Linear -> GELU (tanh approximation) -> Linear."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation ``x * (1 + scale) + shift`` with per-sample (B, D) shift/scale."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block conditioned on a vector c (B or 1, D)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        shift_attn, scale_attn, gate_attn, shift_mlp, scale_mlp, gate_mlp = (
            self.adaLN_modulation(c).chunk(6, dim=-1))
        x = x + gate_attn.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_attn, scale_attn), rope)
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """adaLN (shift, scale) + non-affine LayerNorm + Linear to patch*patch*out_channels."""

    def __init__(self, dim: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class PatchEmbed(nn.Module):
    """Patchify (B, C, H, W) -> tokens (B, (H/p)*(W/p), dim), row-major: a stride-p convolution.

    Below float32 (bf16 weights or autocast) it runs as one matmul over the flattened patches (the
    same numbers): oneDNN's bf16 convolution with 16x16 kernels returns wrong values on
    AVX512-BF16/AMX CPUs (torch 2.13: error 2.2 on outputs of magnitude 2.3). float32 keeps the
    convolution, whose result does not depend on the batch size (the matmul's does, in the last bits)."""

    def __init__(self, in_channels: int, dim: int, patch: int):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        autocast = x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type)
        if x.dtype == torch.float32 and not autocast:
            return self.proj(x).flatten(2).transpose(1, 2)
        n, channels, height, width = x.shape
        p = self.patch
        patches = (x.reshape(n, channels, height // p, p, width // p, p).permute(0, 2, 4, 1, 3, 5)
                   .reshape(n, (height // p) * (width // p), channels * p * p))
        return F.linear(patches, self.proj.weight.reshape(self.proj.out_channels, -1), self.proj.bias)
