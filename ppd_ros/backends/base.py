"""The seam between the frame pipeline and whatever runs the networks.

A :class:`DepthBackend` turns RGB frames into relative depth. Image models answer each frame at
once (:meth:`DepthBackend.predict_batch`); video models keep a causal stream per camera and answer
a frame once its window ran (:meth:`DepthBackend.push` / ``flush`` / ``reset``). Both give the
same :class:`DepthOutput`, so nothing after the model needs to know which kind ran.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Protocol, Sequence

import numpy as np
import torch

from ppd_ros.model_specs import ModelSpec
from ppd_ros.parameters import DEFAULT_ONNX_PROVIDERS, PRECISIONS, PREPROCESS_MODES, SDPA_BACKENDS  # noqa: F401


@dataclass
class DepthOutput:
    """One frame's model result.

    ``relative``: (h, w) float32 relative normalised log-depth on the inference grid, on the
    backend's device. ``metric_depth``/``metric_mask``/``intrinsics``: the MoGe-2 metric geometry on
    the same grid (metric models only; intrinsics normalised, MoGe convention). ``model_seconds``:
    model wall time charged to this frame (a batch or window shares its time equally).
    ``latency_frames``: frames pushed after this one before it came out (streams; 0 otherwise).
    """

    tag: Any
    relative: torch.Tensor
    input_size: tuple[int, int]  # (H, W) of the frame as given
    model_seconds: float
    metric_depth: torch.Tensor | None = None
    metric_mask: torch.Tensor | None = None
    intrinsics: torch.Tensor | None = None
    latency_frames: int = 0

    @property
    def size(self) -> tuple[int, int]:
        """(h, w) of the inference grid."""
        return int(self.relative.shape[0]), int(self.relative.shape[1])




@dataclass(frozen=True)
class BackendOptions:
    """How to run a model. ``target_area`` None = the model's native area (image models);
    ``video_stride``: new frames per PPVD window (1..13); ``video_channel_order``: ``rgb`` (the
    released training data and image path) or ``bgr`` (what the official video demo feeds).

    Torch speed options (README "Performance"):
    ``precision``: ``auto`` (bf16 on CUDA, fp32 on CPU), ``fp32``, ``bf16`` (bf16 weights and
    activations; latent and Euler update stay fp32) or ``bf16-autocast`` (fp32 weights under bf16
    autocast, as the official code). ``preprocess``: ``auto`` (``device`` on CUDA, ``cv2`` on CPU),
    ``cv2`` (host resize, the reference) or ``device`` (upload uint8, resize on the device; within
    one grey level of cv2). ``compile``: torch.compile the networks (each new input size compiles
    once). ``cuda_graphs``: capture encoder + sampler as one CUDA graph per input size and steps
    (image models on CUDA). ``sdpa_backend``: attention kernel preference: ``auto`` (torch's
    choice), ``cudnn``, ``flash``, ``efficient`` or ``math`` (tried first, the others after it).

    ONNX Runtime options: ``onnx_providers``: execution providers in order of preference
    (``tensorrt``, ``cuda``, ``cpu`` or full ONNX Runtime names); missing ones are skipped with
    one warning. ``onnx_dir``: folder of ``ppd export-onnx`` (None: ``<weights dir>/onnx/<model>``).
    """

    device: str = "auto"
    steps: int = 4
    target_area: int | None = None
    seed: int = 0
    weights_dir: str | None = None
    video_stride: int = 13
    video_channel_order: str = "rgb"
    precision: str = "auto"
    preprocess: str = "auto"
    compile: bool = False
    cuda_graphs: bool = False
    sdpa_backend: str = "auto"
    onnx_providers: tuple[str, ...] = DEFAULT_ONNX_PROVIDERS
    onnx_dir: str | None = None


class DepthBackend(Protocol):
    """What the pipeline needs from a model runner (torch, ONNX Runtime, ...)."""

    spec: ModelSpec
    device: torch.device
    steps: int
    streaming: bool  # True: push/flush/reset (video); False: predict_batch (image)

    def inference_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the grid an (height, width) frame is inferred at."""

    def predict_batch(self, frames: Sequence[np.ndarray], tags: Sequence[Any]) -> list[DepthOutput]:
        """Image models: (H, W, 3) uint8 RGB frames of one size -> one output each, in order."""

    def push(self, frame: np.ndarray, tag: Any, stream: Hashable = 0) -> list[DepthOutput]:
        """Add a frame to ``stream``; returns the outputs that became ready (in push order)."""

    def flush(self, stream: Hashable = 0) -> list[DepthOutput]:
        """Run ``stream``'s pending frames now and return them."""

    def reset(self, stream: Hashable = 0, reason: str = "requested") -> list[DepthOutput]:
        """Flush ``stream`` (returned) and restart it: the next frame starts a new sequence."""

    def pending(self, stream: Hashable = 0) -> int:
        """Frames pushed to ``stream`` and not yet returned."""


def batch_size_of(frames: Sequence[np.ndarray], tags: Sequence[Any]) -> tuple[int, int]:
    """(height, width) of a ``predict_batch`` batch: uint8 RGB frames of one size, one tag each;
    ``ValueError`` otherwise."""
    if len(frames) != len(tags) or not frames:
        raise ValueError(f"need one tag per frame and at least one frame, got {len(frames)} / {len(tags)}")
    sizes = {tuple(frame.shape) for frame in frames}
    shape = next(iter(sizes))
    if len(sizes) != 1 or len(shape) != 3 or shape[2] != 3 or any(f.dtype != np.uint8 for f in frames):
        raise ValueError(f"expected uint8 RGB frames (H, W, 3) of one size, got {sorted(sizes)}")
    return shape[0], shape[1]


class ImageModelStream:
    """The stream half of the protocol for image models, which answer every frame at once: ``push``
    is a batch of one, and there is never anything pending to flush or reset."""

    streaming = False

    def push(self, frame: np.ndarray, tag: Any, stream: Hashable = 0) -> list[DepthOutput]:
        return self.predict_batch([frame], [tag])

    def flush(self, stream: Hashable = 0) -> list[DepthOutput]:
        return []

    def reset(self, stream: Hashable = 0, reason: str = "requested") -> list[DepthOutput]:
        return []

    def pending(self, stream: Hashable = 0) -> int:
        return 0
