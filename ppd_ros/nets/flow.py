"""Rectified-flow schedule, Euler sampler and training helpers of Pixel-Perfect Depth.

Time runs over integers 0..T (T = 1000): x_t = (1 - t/T) x0 + (t/T) noise; the network predicts
the velocity v = noise - x0.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch

NUM_TRAIN_TIMESTEPS = 1000


def _as_time(t: torch.Tensor | int | float, like: torch.Tensor) -> torch.Tensor:
    """t as a tensor on ``like``'s device, shaped to broadcast per sample over ``like``."""
    t = torch.as_tensor(t, device=like.device)
    if t.ndim == 0:
        return t
    return t.reshape(t.shape[0], *([1] * (like.ndim - 1)))


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
    """Forward process x_t = (1 - t/T) x0 + (t/T) noise; ``t`` scalar or one per sample."""
    t = _as_time(t, x0)
    return (1 - t / NUM_TRAIN_TIMESTEPS) * x0 + (t / NUM_TRAIN_TIMESTEPS) * noise


def convert_from_velocity(velocity: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int,
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, xT) estimates from a velocity prediction at time ``t``."""
    t = _as_time(t, x_t)
    x0 = x_t - (t / NUM_TRAIN_TIMESTEPS) * velocity
    x_noise = x_t + (1 - t / NUM_TRAIN_TIMESTEPS) * velocity
    return x0, x_noise


def euler_step(velocity: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int,
               s: torch.Tensor | int) -> torch.Tensor:
    """Euler step of the flow from time ``t`` to time ``s`` (scalars or one per sample).

    Re-noises the (x0, xT) estimates at s clamped to [0, T]; where s < 0 the x0 estimate itself
    is returned (the end of sampling).
    """
    x0, x_noise = convert_from_velocity(velocity, x_t, t)
    s = _as_time(s, x_t)
    stepped = add_noise(x0, x_noise, s.clamp(0, NUM_TRAIN_TIMESTEPS))
    return torch.where(s < 0, x0, stepped)


def sampling_timesteps(steps: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Integer timesteps (steps,) int32 of a k-step sampler: 4 -> [1000, 750, 500, 249].

    float32 ``arange(T, -1, -(T+1)/k)`` rounded half-to-even, as the official ``Timesteps``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    grid = torch.arange(NUM_TRAIN_TIMESTEPS, -1, -(NUM_TRAIN_TIMESTEPS + 1) / steps,
                        dtype=torch.float32, device=device)
    return grid.round().to(torch.int32)


@functools.lru_cache(maxsize=64)
def _schedule_on(steps: int, device: torch.device) -> torch.Tensor:
    """(steps + 1,) int32 on ``device``: :func:`sampling_timesteps`, then -1 (the end of sampling).

    Made once per (steps, device) and kept, so the sampling loop only indexes a device tensor:
    no host copy or synchronisation per step, and a CUDA graph can capture the loop.
    """
    end = torch.full((1,), -1, dtype=torch.int32)
    return torch.cat([sampling_timesteps(steps), end]).to(device)


@torch.no_grad()
def sample_depth(dit: Callable[..., torch.Tensor], image01: torch.Tensor, semantics: torch.Tensor,
                 steps: int = 4, noise: torch.Tensor | torch.Generator | None = None,
                 ) -> torch.Tensor:
    """Relative depth (N, 1, H, W) by Euler sampling of the DiT; returns latent + 0.5.

    Args:
        dit: the :class:`~ppd_ros.nets.dit.PixelDiT` (called as ``dit(x, semantics, t)``).
        image01: (N, 3, H, W) RGB in [0, 1], H, W multiples of 16.
        semantics: (N, (H/16)*(W/16), C) tokens, computed once by the caller and reused each step.
        steps: number of Euler steps (official default 4).
        noise: initial latent (N, 1, H, W), a ``torch.Generator`` to draw it, or None (global RNG).

    The latent and the Euler update are kept in float32; the DiT input is cast to the DiT's
    parameter dtype (so a bf16 model works with or without autocast).
    """
    n, _, height, width = image01.shape
    device = image01.device
    if isinstance(noise, torch.Tensor):
        latent = noise.to(device=device, dtype=torch.float32)
        if latent.shape != (n, 1, height, width):
            raise ValueError(f"noise {tuple(latent.shape)} must be {(n, 1, height, width)}")
    else:
        latent = torch.randn((n, 1, height, width), generator=noise, dtype=torch.float32,
                             device=noise.device if isinstance(noise, torch.Generator) else device
                             ).to(device)
    params = next(iter(dit.parameters()), None) if isinstance(dit, torch.nn.Module) else None
    model_dtype = params.dtype if params is not None else torch.float32
    condition = image01.to(torch.float32) - 0.5

    timesteps = _schedule_on(steps, device)
    for i in range(steps):  # nothing in here waits for the device or copies from the host
        t, s = timesteps[i], timesteps[i + 1]
        x = torch.cat([latent, condition], dim=1).to(model_dtype)
        velocity = dit(x, semantics, t).to(torch.float32)
        latent = euler_step(velocity, latent, t, s)
    return latent + 0.5


def draw_training_timesteps(batch: int, generator: torch.Generator | None = None,
                            device: torch.device | str | None = None) -> torch.Tensor:
    """Logit-normal training timesteps (batch,) int64: round(T * sigmoid(N(0, 1)))."""
    z = torch.randn(batch, generator=generator,
                    device=generator.device if generator is not None else device)
    return torch.round(NUM_TRAIN_TIMESTEPS * torch.sigmoid(z)).to(torch.int64).to(device or z.device)


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Training target of the velocity prediction: noise - x0."""
    return noise - x0
