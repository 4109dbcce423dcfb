"""The torch backend: PPD image models and the causal PPVD stream on CPU or CUDA.

CPU defaults are the reference computation (fp32, cv2 resize). The CUDA fast path (options in
:class:`~ppd_ros.backends.base.BackendOptions`): bf16 weights, attention through SDPA, a sampling
loop that never waits for the device, uint8 upload and resize on the device, optional
torch.compile and one CUDA graph per input size.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

import numpy as np
import torch

from ppd_ros.backends.base import BackendOptions, DepthOutput, ImageModelStream, batch_size_of
from ppd_ros.backends.torch_fast import (GraphCache, HostStaging, compiled, resolve_precision, resolve_preprocess,
                                         run_context, sdpa_preference, synchronize)
from ppd_ros.backends.torch_networks import load_image_networks, load_video_networks
from ppd_ros.device import resolve_device
from ppd_ros.model_specs import ModelSpec
from ppd_ros.nets.flow import sample_depth
from ppd_ros.nets.moge import MoGe2Model
from ppd_ros.preprocess import inference_size, resize_for_inference, resize_on_device
from ppd_ros.video import OVERLAP, STRIDE, VideoDepthStream


class TorchImageBackend(ImageModelStream):
    """PPD on single frames: resize to the inference area, semantic tokens once, Euler sampling.

    Every frame of a batch starts from the same seeded noise, so a frame's depth does not depend
    on what else is in its batch. The networks are moved to the device and cast to the weight
    dtype of ``options.precision`` in place.
    """

    def __init__(self, dit: torch.nn.Module, encoder: torch.nn.Module, spec: ModelSpec,
                 options: BackendOptions = BackendOptions()):
        if options.steps <= 0:
            raise ValueError(f"steps must be positive, got {options.steps}")
        target_area = spec.native_area if options.target_area is None else int(options.target_area)
        if target_area < 16 * 16:
            raise ValueError(f"target_area must be at least 256 pixels, got {target_area}")
        self.spec = spec
        self.options = options
        self.device = resolve_device(options.device)
        self.weight_dtype, self.autocast = resolve_precision(options.precision, self.device)
        self.preprocess_mode = resolve_preprocess(options.preprocess, self.device)
        sdpa_preference(options.sdpa_backend)  # validates the name
        if options.cuda_graphs and self.device.type != "cuda":
            raise ValueError(f"cuda_graphs needs a CUDA device, got {self.device}")
        self.dit = dit.eval().to(device=self.device, dtype=self.weight_dtype)
        self.encoder = encoder.eval().to(device=self.device, dtype=self.weight_dtype)
        self.steps = int(options.steps)
        self.target_area = target_area
        self.seed = options.seed
        self._dit_fn = compiled(self.dit, options.compile)
        # MoGe-2's metric fit runs on the host (scipy): only the DA2-style encoder is compiled
        self._encoder_fn = compiled(self.encoder, options.compile and not self.is_metric)
        self._staging = HostStaging(self.device)
        self._noise_cache: dict[tuple[int, int, int], torch.Tensor] = {}
        self.graphs = GraphCache()

    @property
    def is_metric(self) -> bool:
        return isinstance(self.encoder, MoGe2Model)

    def inference_size(self, height: int, width: int) -> tuple[int, int]:
        return inference_size(height, width, self.target_area)

    def _context(self):
        return run_context(self.device, self.autocast, self.options.sdpa_backend,
                           autocast_cache=not self.options.cuda_graphs)

    def _noise(self, batch: int, height: int, width: int) -> torch.Tensor:
        """The seeded initial latent (batch, 1, h, w) on the device, made once per shape."""
        key = (batch, height, width)
        noise = self._noise_cache.get(key)
        if noise is None:
            generator = torch.Generator(device="cpu").manual_seed(self.seed)
            noise = torch.randn((1, 1, height, width), generator=generator)
            noise = noise.expand(batch, -1, -1, -1).contiguous().to(self.device)
            if len(self._noise_cache) >= 8:
                self._noise_cache.pop(next(iter(self._noise_cache)))
            self._noise_cache[key] = noise
        return noise

    # -- stages (predict_batch runs them in this order; ppd bench model times them one by one) --
    def prepare(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 RGB frames of one size -> (N, 3, h, w) float32 in [0, 1] on the device."""
        if self.preprocess_mode == "device":
            return resize_on_device(self._staging.upload(frames), self.target_area)
        resized = np.stack([resize_for_inference(frame, self.target_area) for frame in frames])
        return torch.from_numpy(resized).to(self.device).permute(0, 3, 1, 2).float() / 255.0

    def encode(self, image01: torch.Tensor):
        """(semantic tokens, MoGe-2 metric geometry or None) of prepared images."""
        with self._context():
            if self.is_metric:
                return self.encoder.semantics_and_geometry(image01)
            return self._encoder_fn(image01), None

    def sample(self, image01: torch.Tensor, semantics: torch.Tensor, dit=None) -> torch.Tensor:
        """Relative depth (N, h, w) float32 by Euler sampling. ``dit``: call this instead of the
        backend's DiT (the bench wraps it to time each step)."""
        n, _, height, width = image01.shape
        with self._context():
            depth = sample_depth(dit if dit is not None else self._dit_fn, image01, semantics, steps=self.steps,
                                 noise=self._noise(n, height, width))
        return depth[:, 0].float()

    def _infer(self, image01: torch.Tensor):
        """(depth (N, h, w), geometry or None): encoder then sampler, eager or graph replay."""
        if not self.options.cuda_graphs:
            semantics, geometry = self.encode(image01)
            return self.sample(image01, semantics), geometry
        key = (self.steps, *image01.shape)
        if self.is_metric:  # the encoder and its host-side metric fit stay outside the graph
            semantics, geometry = self.encode(image01)
            call = self.graphs.get(key, self.sample, (image01, semantics))
            return call(image01, semantics).clone(), geometry
        call = self.graphs.get(key, lambda image: self.sample(image, self.encode(image)[0]), (image01,))
        return call(image01).clone(), None

    def predict_batch(self, frames: Sequence[np.ndarray], tags: Sequence[Any]) -> list[DepthOutput]:
        height, width = batch_size_of(frames, tags)
        start = time.perf_counter()
        depth, geometry = self._infer(self.prepare(frames))
        synchronize(self.device)
        share = (time.perf_counter() - start) / len(frames)
        outputs = []
        for i, tag in enumerate(tags):
            output = DepthOutput(tag, depth[i], (height, width), share)
            if geometry is not None:
                output.metric_depth, output.metric_mask = geometry.depth[i].float(), geometry.mask[i]
                output.intrinsics = geometry.intrinsics[i].float()
            outputs.append(output)
        return outputs


@dataclass
class WindowThroughput:
    """Windows run since creation and the wall time they took."""

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
class _Stream:
    """One camera's PPVD stream and the frames in it."""

    stream: VideoDepthStream
    pushed_at: dict[int, float] = field(default_factory=dict)  # index -> perf_counter at push
    input_size: tuple[int, int] | None = None
    received: int = 0
    resets: dict[str, int] = field(default_factory=dict)


class TorchVideoBackend:
    """Causal PPVD depth, one stream per key (camera), all on one copy of the networks.

    Frames are resized to the model's square window (512x512 released) and come back as relative
    depth on that grid once their window ran: at most S - 1 frames later in steady state, S + 2
    at start-up (S = ``video_stride``). A frame of a new size flushes and restarts its stream.
    """

    streaming = True

    def __init__(self, semantics: torch.nn.Module, dit: torch.nn.Module, spec: ModelSpec,
                 options: BackendOptions = BackendOptions()):
        if options.steps <= 0:
            raise ValueError(f"steps must be positive, got {options.steps}")
        if not 1 <= options.video_stride <= STRIDE:
            raise ValueError(f"video stride must be in 1..{STRIDE}, got {options.video_stride}")
        if options.video_channel_order not in ("rgb", "bgr"):
            raise ValueError(f"video channel order must be rgb or bgr, got {options.video_channel_order!r}")
        if options.cuda_graphs:
            raise ValueError("cuda_graphs is for image models: a PPVD window (16 frames) is large enough "
                             "that launch gaps do not matter")
        self.spec = spec
        self.options = options
        self.device = resolve_device(options.device)
        self.weight_dtype, self.autocast = resolve_precision(options.precision, self.device)
        sdpa_preference(options.sdpa_backend)  # validates the name
        self.semantics = semantics.eval().to(device=self.device, dtype=self.weight_dtype)
        self.dit = dit.eval().to(device=self.device, dtype=self.weight_dtype)
        self._semantics_fn = compiled(self.semantics, options.compile)
        self._dit_fn = compiled(self.dit, options.compile)
        self._steps = int(options.steps)
        self.stride = int(options.video_stride)
        self.seed = options.seed
        self.channel_order = options.video_channel_order
        self.throughput = WindowThroughput()
        self._streams: dict[Hashable, _Stream] = {}

    @property
    def steps(self) -> int:
        return self._steps

    @steps.setter
    def steps(self, steps: int) -> None:
        """Euler steps per window, from the next window on (every stream)."""
        self._steps = int(steps)
        for state in self._streams.values():
            state.stream.steps = self._steps

    @property
    def window_size(self) -> int:
        """Side of the square frames the model works at."""
        return int(self.dit.input_size)

    @property
    def max_latency_frames(self) -> int:
        """Most frames a frame waits for in steady state (S - 1); S + 2 during start-up."""
        return self.stride - 1

    @property
    def startup_latency_frames(self) -> int:
        return self.stride + OVERLAP - 1

    def inference_size(self, height: int, width: int) -> tuple[int, int]:
        return self.window_size, self.window_size

    def resets(self, stream: Hashable = 0) -> dict[str, int]:
        """Why and how often ``stream`` restarted."""
        state = self._streams.get(stream)
        return dict(state.resets) if state is not None else {}

    def _state(self, stream: Hashable) -> _Stream:
        state = self._streams.get(stream)
        if state is None:
            state = _Stream(VideoDepthStream(self._semantics_fn, self._dit_fn, stride=self.stride, steps=self.steps,
                                             noise=self.seed))
            self._streams[stream] = state
        return state

    def predict_batch(self, frames, tags) -> list[DepthOutput]:
        raise TypeError(f"{self.spec.name} is a video model: push frames to a stream instead")

    def push(self, frame: np.ndarray, tag: Any, stream: Hashable = 0) -> list[DepthOutput]:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8 or 0 in frame.shape:
            raise ValueError(f"expected one uint8 RGB image (H, W, 3), got {frame.shape} {frame.dtype}")
        state = self._state(stream)
        size = (int(frame.shape[0]), int(frame.shape[1]))
        out: list[DepthOutput] = []
        if state.input_size is not None and size != state.input_size:
            out += self.reset(stream, "size_change")
        state.input_size = size
        if self.channel_order == "bgr":
            frame = frame[..., ::-1]
        tensor = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device).permute(2, 0, 1).float() / 255.0
        state.pushed_at[state.received] = time.perf_counter()
        state.received += 1
        return out + self._run(state, lambda: state.stream.push(tensor, tag))

    def flush(self, stream: Hashable = 0) -> list[DepthOutput]:
        state = self._streams.get(stream)
        return self._run(state, state.stream.flush) if state is not None else []

    def reset(self, stream: Hashable = 0, reason: str = "requested") -> list[DepthOutput]:
        out = self.flush(stream)
        state = self._state(stream)
        state.stream.reset()
        state.pushed_at.clear()
        state.received = 0
        state.input_size = None
        state.resets[reason] = state.resets.get(reason, 0) + 1
        return out

    def pending(self, stream: Hashable = 0) -> int:
        state = self._streams.get(stream)
        return len(state.pushed_at) if state is not None else 0

    def _run(self, state: _Stream, call) -> list[DepthOutput]:
        windows_before = state.stream.windows_run
        start = time.perf_counter()
        with run_context(self.device, self.autocast, self.options.sdpa_backend):
            emitted = call()
        synchronize(self.device)
        now = time.perf_counter()
        if not emitted:
            return []
        if state.stream.windows_run > windows_before:
            self.throughput.windows += state.stream.windows_run - windows_before
            self.throughput.seconds += now - start
            self.throughput.frames += len(emitted)
            self.throughput.last_window_seconds = now - start
        share = (now - start) / len(emitted)
        newest = state.received - 1
        outputs = []
        for item in emitted:
            state.pushed_at.pop(item.index)
            outputs.append(DepthOutput(item.tag, item.depth.to(self.device), state.input_size, share,
                                       latency_frames=newest - item.index))
        return outputs


def create_torch_backend(spec: ModelSpec, options: BackendOptions = BackendOptions()):
    """The torch backend of a spec, weights loaded in the dtype of ``options.precision`` (``auto``:
    bf16 on CUDA, fp32 on CPU)."""
    device = resolve_device(options.device)
    dtype, _ = resolve_precision(options.precision, device)
    if spec.mode == "video":
        semantics, dit = load_video_networks(spec, options.weights_dir, device, dtype, options.seed)
        return TorchVideoBackend(semantics, dit, spec, options)
    dit, encoder = load_image_networks(spec, options.weights_dir, device, dtype)
    return TorchImageBackend(dit, encoder, spec, options)
