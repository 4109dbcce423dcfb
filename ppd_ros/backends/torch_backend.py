"""The torch backend: PPD image models and the causal PPVD stream on CPU or CUDA."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

import numpy as np
import torch

from ppd_ros.backends.base import BackendOptions, DepthOutput
from ppd_ros.backends.torch_networks import load_image_networks, load_video_networks
from ppd_ros.device import resolve_device
from ppd_ros.model_specs import ModelSpec
from ppd_ros.nets.flow import sample_depth
from ppd_ros.nets.moge import MoGe2Model
from ppd_ros.preprocess import inference_size, resize_for_inference
from ppd_ros.video import OVERLAP, STRIDE, VideoDepthStream


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TorchImageBackend:
    """PPD on single frames: resize to the inference area, semantic tokens once, Euler sampling.

    Every frame of a batch starts from the same seeded noise, so a frame's depth does not depend
    on what else is in its batch.
    """

    streaming = False

    def __init__(self, dit: torch.nn.Module, encoder: torch.nn.Module, spec: ModelSpec,
                 options: BackendOptions = BackendOptions()):
        if options.steps <= 0:
            raise ValueError(f"steps must be positive, got {options.steps}")
        target_area = spec.native_area if options.target_area is None else int(options.target_area)
        if target_area < 16 * 16:
            raise ValueError(f"target_area must be at least 256 pixels, got {target_area}")
        self.spec = spec
        self.device = resolve_device(options.device)
        self.dit = dit.eval().to(self.device)
        self.encoder = encoder.eval().to(self.device)
        self.steps = int(options.steps)
        self.target_area = target_area
        self.seed = options.seed

    @property
    def is_metric(self) -> bool:
        return isinstance(self.encoder, MoGe2Model)

    def inference_size(self, height: int, width: int) -> tuple[int, int]:
        return inference_size(height, width, self.target_area)

    def _noise(self, batch: int, height: int, width: int) -> torch.Tensor:
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        noise = torch.randn((1, 1, height, width), generator=generator)
        return noise.expand(batch, -1, -1, -1).to(self.device)

    @torch.inference_mode()
    def predict_batch(self, frames: Sequence[np.ndarray], tags: Sequence[Any]) -> list[DepthOutput]:
        if len(frames) != len(tags) or not frames:
            raise ValueError(f"need one tag per frame and at least one frame, got {len(frames)} / {len(tags)}")
        sizes = {tuple(frame.shape) for frame in frames}
        shape = next(iter(sizes))
        if len(sizes) != 1 or len(shape) != 3 or shape[2] != 3 or any(f.dtype != np.uint8 for f in frames):
            raise ValueError(f"expected uint8 RGB frames (H, W, 3) of one size, got {sorted(sizes)}")
        start = time.perf_counter()
        height, width = shape[:2]
        h, w = self.inference_size(height, width)
        resized = np.stack([resize_for_inference(frame, self.target_area) for frame in frames])
        image01 = torch.from_numpy(resized).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        with _autocast(self.device):
            if self.is_metric:
                semantics, geometry = self.encoder.semantics_and_geometry(image01)
            else:
                semantics, geometry = self.encoder(image01), None
            depth = sample_depth(self.dit, image01, semantics, steps=self.steps,
                                 noise=self._noise(len(frames), h, w))
        depth = depth[:, 0].float()
        _synchronize(self.device)
        share = (time.perf_counter() - start) / len(frames)
        outputs = []
        for i, tag in enumerate(tags):
            output = DepthOutput(tag, depth[i], (height, width), share)
            if geometry is not None:
                output.metric_depth, output.metric_mask = geometry.depth[i].float(), geometry.mask[i]
                output.intrinsics = geometry.intrinsics[i].float()
            outputs.append(output)
        return outputs

    def push(self, frame: np.ndarray, tag: Any, stream: Hashable = 0) -> list[DepthOutput]:
        return self.predict_batch([frame], [tag])

    def flush(self, stream: Hashable = 0) -> list[DepthOutput]:
        return []

    def reset(self, stream: Hashable = 0, reason: str = "requested") -> list[DepthOutput]:
        return []

    def pending(self, stream: Hashable = 0) -> int:
        return 0


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
        self.spec = spec
        self.device = resolve_device(options.device)
        self.semantics = semantics.eval().to(self.device)
        self.dit = dit.eval().to(self.device)
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
            state = _Stream(VideoDepthStream(self.semantics, self.dit, stride=self.stride, steps=self.steps,
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
        with torch.inference_mode(), _autocast(self.device):
            emitted = call()
        _synchronize(self.device)
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
    """The torch backend of a spec: bf16 weights on CUDA (run under bf16 autocast), fp32 on CPU."""
    device = resolve_device(options.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if spec.mode == "video":
        semantics, dit = load_video_networks(spec, options.weights_dir, device, dtype, options.seed)
        return TorchVideoBackend(semantics, dit, spec, options)
    dit, encoder = load_image_networks(spec, options.weights_dir, device, dtype)
    return TorchImageBackend(dit, encoder, spec, options)
