"""Streaming video depth (PPVD) for the node and the tools: frames in, each frame's depth out once.

``VideoDepthEstimator.create("ppvd").push(rgb, tag)`` feeds one frame to a causal
:class:`~ppd_ros.video.VideoDepthStream` and returns the frames whose window has run, in order,
each with the tag it was pushed with (the node passes the original message header).

Output depth is relative normalised log-depth, like the image engine, but at the INPUT
resolution: the stream works at 512x512 (the released model's fixed size) and resizes the result
back with NEAREST, so no depth between surfaces is invented. Metric alignment applies to it
unchanged (``ppd_ros.metric.alignment``).

Latency: a frame waits for the S new frames of its window: at most S - 1 later frames in steady
state, S + 2 at start-up (the first window needs 3 + S frames); :meth:`flush` emits the pending
frames at once. A change of input size flushes and restarts the stream inside :meth:`push`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ppd_ros.engine import randomize_, resolve_device
from ppd_ros.nets.dinov2 import DinoV2Config
from ppd_ros.nets.dit_video import PPVD_DIT_FULL, VideoDiT, load_ppvd, sincos_pos_table
from ppd_ros.nets.pi3 import PI3_FULL, Pi3Config, Pi3Semantics, load_pi3
from ppd_ros.video import OVERLAP, STRIDE, VideoDepthStream
from ppd_ros.weights import WeightsMissingError, weights_path

# name -> (video DiT weights, Pi3 weights) of model/weights.yaml; None = tiny random weights.
VIDEO_MODELS: dict[str, tuple[str, str] | None] = {
    "ppvd": ("ppvd", "pi3"),
    "tiny-random-video": None,
}
VIDEO_MODEL_NAMES = tuple(VIDEO_MODELS)

TINY_VIDEO_SIZE = 64  # working size of the tiny model (the released one is 512)
TINY_PI3 = Pi3Config(
    encoder=DinoV2Config(embed_dim=32, depth=1, num_heads=2, num_register_tokens=4,
                         pos_resize="antialiased_bicubic", with_mask_token=False),
    decoder_depth=2, decoder_heads=2)
TINY_VIDEO_DIT = dict(hidden_size=32, depth=24, num_heads=2, input_size=TINY_VIDEO_SIZE,
                      semantic_dim=2 * TINY_PI3.encoder.embed_dim)


@dataclass
class VideoDepthResult:
    """One emitted frame.

    ``depth``: relative normalised log-depth (H, W) float32 at the size the frame was pushed at.
    ``latency_frames``: frames pushed after this one before its depth came out;
    ``latency_seconds``: wall time from its push to its emission.
    """

    tag: Any
    depth: np.ndarray
    index: int  # position since the last reset
    latency_frames: int
    latency_seconds: float

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of ``depth`` (= the pushed frame's size)."""
        return int(self.depth.shape[0]), int(self.depth.shape[1])


@dataclass
class WindowThroughput:
    """Windows run since creation and the wall time they took (model + resize back)."""

    windows: int = 0
    seconds: float = 0.0
    frames: int = 0  # frames emitted by those windows
    last_window_seconds: float = float("nan")

    @property
    def seconds_per_window(self) -> float:
        return self.seconds / self.windows if self.windows else float("nan")

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class _Pending:
    index: int
    pushed_at: float


def tiny_random_video_models(seed: int = 0) -> tuple[Pi3Semantics, VideoDiT]:
    """Small seeded random Pi3 + video DiT (64x64 windows): plumbing and tests only."""
    pi3 = randomize_(Pi3Semantics(TINY_PI3), seed=seed + 1).eval()
    dit = randomize_(VideoDiT(**TINY_VIDEO_DIT), seed=seed + 2).eval()
    with torch.no_grad():  # keep the fixed sin-cos position table (randomize_ overwrote it)
        dit.pos_embed.copy_(sincos_pos_table(dit.hidden_size, dit.grid16, dit.grid16)[None])
    return pi3, dit


def load_video_models(model: str, weights_dir: str | Path | None, device: torch.device,
                      dtype: torch.dtype, seed: int = 0) -> tuple[Pi3Semantics, VideoDiT]:
    """(Pi3 semantics, video DiT) of a :data:`VIDEO_MODELS` name on ``device``.

    Raises ``ValueError`` for an unknown name and :class:`WeightsMissingError` naming every
    missing file with its ``ppd fetch-weights NAME`` command before anything is loaded.
    """
    if model not in VIDEO_MODELS:
        raise ValueError(f"unknown video model {model!r}; choose one of: {', '.join(VIDEO_MODEL_NAMES)}")
    files = VIDEO_MODELS[model]
    if files is None:
        pi3, dit = tiny_random_video_models(seed)
        return pi3.to(device), dit.to(device)
    paths, missing = {}, []
    for name in files:
        try:
            paths[name] = weights_path(name, weights_dir)
        except WeightsMissingError as error:
            missing.append(str(error))
    if missing:
        raise WeightsMissingError("; ".join(missing))
    dit_name, pi3_name = files
    dit = load_ppvd(paths[dit_name], device=device, dtype=dtype, config=PPVD_DIT_FULL)
    pi3 = load_pi3(paths[pi3_name], device=device, dtype=dtype, config=PI3_FULL)
    return pi3, dit


class VideoDepthEstimator:
    """Causal PPVD depth over a frame stream (ROS-free).

    Args:
        semantics: Pi3 semantics module; dit: the video DiT (its ``input_size`` is the window size).
        model_name: for reports. device: where the models run.
        stride: S, new frames per window (1..13). 13 = the official windows (latency up to 12
            frames); smaller S = lower latency, 13/S times the compute per frame.
        steps: Euler steps per window. seed: the shared initial noise of every window.
    """

    def __init__(self, semantics: torch.nn.Module, dit: VideoDiT, model_name: str,
                 device: str | torch.device = "auto", stride: int = STRIDE, steps: int = 4,
                 seed: int = 0):
        if steps <= 0:
            raise ValueError(f"steps must be positive, got {steps}")
        self.device = resolve_device(device)
        self.semantics = semantics.eval().to(self.device)
        self.dit = dit.eval().to(self.device)
        self.model_name = model_name
        self.steps = int(steps)
        self.seed = seed
        self._stream = VideoDepthStream(self.semantics, self.dit, stride=stride, steps=self.steps,
                                        noise=seed)
        self.throughput = WindowThroughput()
        self.resets: dict[str, int] = {}
        self.last_reset_reason: str | None = None
        self._input_size: tuple[int, int] | None = None
        self._pending: dict[int, _Pending] = {}
        self._received = 0

    @classmethod
    def create(cls, model: str = "ppvd", weights_dir: str | Path | None = None,
               device: str | torch.device = "auto", stride: int = STRIDE, steps: int = 4,
               seed: int = 0) -> "VideoDepthEstimator":
        """Build a named model (:data:`VIDEO_MODEL_NAMES`). Official weights in bf16 on CUDA
        (run under bf16 autocast), fp32 on CPU. Raises ``ValueError`` (unknown name, bad stride
        or steps) and :class:`WeightsMissingError` naming ``ppd fetch-weights ppvd`` / ``pi3``."""
        if not 1 <= stride <= STRIDE:
            raise ValueError(f"stride must be in 1..{STRIDE}, got {stride}")
        if steps <= 0:
            raise ValueError(f"steps must be positive, got {steps}")
        device = resolve_device(device)
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        semantics, dit = load_video_models(model, weights_dir, device, dtype, seed)
        return cls(semantics, dit, model, device, stride, steps, seed)

    # -- properties --------------------------------------------------------------------------
    @property
    def stride(self) -> int:
        return self._stream.stride

    @property
    def window_size(self) -> int:
        """Side of the square frames the model works at (512 released)."""
        return int(self.dit.input_size)

    @property
    def pending(self) -> int:
        """Frames pushed and not yet emitted."""
        return len(self._pending)

    @property
    def max_latency_frames(self) -> int:
        """Most frames a frame waits for in steady state (S - 1); S + 2 during start-up."""
        return self.stride - 1

    @property
    def startup_latency_frames(self) -> int:
        """Frames the first frame after a (re)start waits for: the first window needs S + 3."""
        return self.stride + OVERLAP - 1

    @property
    def window_throughput(self) -> WindowThroughput:
        return self.throughput

    # -- stream ------------------------------------------------------------------------------
    def push(self, rgb: np.ndarray, tag: Any = None) -> list[VideoDepthResult]:
        """Add one RGB frame (H, W, 3) uint8 with its ``tag``; returns the frames emitted now
        (in push order, each exactly once). A frame of a new size first flushes the pending
        frames (returned first) and restarts the stream (reason ``"size change"``)."""
        frame = np.asarray(rgb)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected one uint8 RGB image (H, W, 3), got {frame.shape} {frame.dtype}")
        if frame.shape[0] < 1 or frame.shape[1] < 1:
            raise ValueError(f"empty image {frame.shape}")
        size = (int(frame.shape[0]), int(frame.shape[1]))
        out: list[VideoDepthResult] = []
        if self._input_size is not None and size != self._input_size:
            out += self.reset("size change")
        self._input_size = size
        tensor = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device)
        tensor = tensor.permute(2, 0, 1).float() / 255.0
        self._pending[self._received] = _Pending(self._received, time.perf_counter())
        self._received += 1
        out += self._run(lambda: self._stream.push(tensor, tag))
        return out

    def flush(self) -> list[VideoDepthResult]:
        """Run the pending frames now (window padded with the last frame) and return them."""
        return self._run(self._stream.flush)

    def reset(self, reason: str = "requested", flush: bool = True) -> list[VideoDepthResult]:
        """Restart the stream (time gap, camera change, service call, size change): the next
        frame starts a new sequence with a new scale. With ``flush`` (default) the pending frames
        are run first and returned, so nothing pushed is lost; otherwise they are dropped."""
        out = self.flush() if flush else []
        self._stream.reset()
        self._pending.clear()
        self._received = 0
        self._input_size = None
        self.resets[reason] = self.resets.get(reason, 0) + 1
        self.last_reset_reason = reason
        return out

    # -- internals ---------------------------------------------------------------------------
    def _run(self, call) -> list[VideoDepthResult]:
        windows_before = self._stream.windows_run
        start = time.perf_counter()
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")
        with torch.inference_mode(), autocast:
            emitted = call()
        now = time.perf_counter()
        if self._stream.windows_run > windows_before:
            self.throughput.windows += self._stream.windows_run - windows_before
            self.throughput.seconds += now - start
            self.throughput.frames += len(emitted)
            self.throughput.last_window_seconds = now - start
        newest = self._received - 1
        results = []
        for item in emitted:
            pending = self._pending.pop(item.index)
            depth = torch.nn.functional.interpolate(item.depth[None, None], size=self._input_size,
                                                    mode="nearest")[0, 0].numpy()
            results.append(VideoDepthResult(item.tag, depth, item.index, newest - item.index,
                                            now - pending.pushed_at))
        return results


__all__ = [
    "TINY_PI3", "TINY_VIDEO_DIT", "TINY_VIDEO_SIZE", "VIDEO_MODELS", "VIDEO_MODEL_NAMES",
    "VideoDepthEstimator", "VideoDepthResult", "WindowThroughput", "load_video_models",
    "tiny_random_video_models",
]
