"""Pieces of the torch fast path: precision, attention-kernel preference, pinned uploads, CUDA
graphs per input size, and a report of which attention kernel ran.

Why these: on a GPU the PPD frame is matmuls and attention (bf16 tensor cores, flash/cuDNN
attention) plus many small kernels whose launch gaps CUDA graphs remove; the sampling loop itself
never waits for the device (see :func:`ppd_ros.nets.flow.sample_depth`).
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Callable, Hashable, Sequence

import numpy as np
import torch

from ppd_ros.backends.base import PRECISIONS, PREPROCESS_MODES, SDPA_BACKENDS

# aten op of each SDPA implementation -> short name (the op the dispatcher picked is what ran)
SDPA_KERNEL_OPS = {
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_efficient_attention": "efficient",
    "aten::_scaled_dot_product_attention_math": "math",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "cpu-flash",
    "aten::_scaled_dot_product_fused_attention_overrideable": "overrideable",
}


def resolve_precision(precision: str, device: torch.device) -> tuple[torch.dtype, bool]:
    """(weight dtype, bf16 autocast on) of a ``precision`` option on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return {"fp32": (torch.float32, False), "bf16": (torch.bfloat16, False),
            "bf16-autocast": (torch.float32, True)}[precision]


def resolve_preprocess(mode: str, device: torch.device) -> str:
    """``cv2`` or ``device`` for a ``preprocess`` option on ``device``."""
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"preprocess must be one of {', '.join(PREPROCESS_MODES)}, got {mode!r}")
    if mode == "auto":
        return "device" if device.type == "cuda" else "cv2"
    return mode


def sdpa_preference(backend: str):
    """Context in which ``backend`` is the first SDPA kernel tried (``auto``: torch's own order)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if backend not in SDPA_BACKENDS:
        raise ValueError(f"sdpa_backend must be one of {', '.join(SDPA_BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return contextlib.nullcontext()
    fused = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION}
    if backend == "math":
        return sdpa_kernel([SDPBackend.MATH])
    order = [fused[backend]] + [kind for name, kind in fused.items() if name != backend] + [SDPBackend.MATH]
    try:
        return sdpa_kernel(order, set_priority=True)
    except TypeError:  # set_priority came with torch 2.6
        raise ValueError(f"sdpa_backend {backend!r} needs torch >= 2.6 (this is {torch.__version__}); "
                         "use auto") from None


@contextlib.contextmanager
def run_context(device: torch.device, autocast: bool, sdpa_backend: str = "auto", autocast_cache: bool = True):
    """Inference mode, bf16 autocast when asked, the attention-kernel preference.
    ``autocast_cache`` False under CUDA-graph capture (cached casts must not outlive a capture)."""
    with torch.inference_mode(), \
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast, cache_enabled=autocast_cache), \
            sdpa_preference(sdpa_backend):
        yield


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compiled(module: torch.nn.Module, enabled: bool):
    """``torch.compile(module)`` for fixed shapes (a new input size compiles once), or the module."""
    return torch.compile(module, dynamic=False) if enabled else module


class HostStaging:
    """uint8 frame batches -> device: one pinned host buffer per batch shape, non-blocking copy.

    A buffer is refilled by the next upload of its shape, so the caller must have waited for the
    previous copy by then (the backends synchronise at the end of every call).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self._buffers: dict[tuple[int, ...], torch.Tensor] = {}

    def upload(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """(N, H, W, 3) uint8 on the device."""
        shape = (len(frames), *frames[0].shape)
        if self.device.type != "cuda":
            return torch.from_numpy(np.stack(frames)).to(self.device)
        buffer = self._buffers.get(shape)
        if buffer is None:
            if len(self._buffers) >= 4:
                self._buffers.pop(next(iter(self._buffers)))
            buffer = self._buffers[shape] = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
        host = buffer.numpy()
        for i, frame in enumerate(frames):
            host[i] = frame
        return buffer.to(self.device, non_blocking=True)


class CudaGraphCall:
    """``fn(*inputs)`` captured once as a CUDA graph for fixed input shapes.

    Warm-up runs (compilation, cuBLAS/cuDNN handles, every cached table) happen on a side stream
    before the capture, as CUDA graphs require. A call copies the inputs into the static ones,
    replays the graph and returns the static outputs: copy them before the next call.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], example_inputs: Sequence[torch.Tensor], warmup: int = 2):
        self.inputs = [x.detach().clone() for x in example_inputs]
        device = self.inputs[0].device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                fn(*self.inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = fn(*self.inputs)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        for static, value in zip(self.inputs, inputs):
            if static.data_ptr() != value.data_ptr():
                static.copy_(value)
        self.graph.replay()
        return self.outputs


class GraphCache:
    """CUDA graphs by key (steps, input shape), the least recently used dropped beyond ``size``."""

    def __init__(self, size: int = 4):
        self.size = size
        self.captures = 0
        self._graphs: OrderedDict[Hashable, CudaGraphCall] = OrderedDict()

    def __len__(self) -> int:
        return len(self._graphs)

    def get(self, key: Hashable, fn: Callable[..., torch.Tensor], example_inputs: Sequence[torch.Tensor]
            ) -> CudaGraphCall:
        call = self._graphs.get(key)
        if call is None:
            while len(self._graphs) >= self.size:
                self._graphs.popitem(last=False)
            call = self._graphs[key] = CudaGraphCall(fn, example_inputs)
            self.captures += 1
        self._graphs.move_to_end(key)
        return call


def sdpa_kernels_used(fn: Callable[[], object]) -> dict[str, int]:
    """Run ``fn()`` under the torch profiler: {SDPA implementation: calls} of the attention
    kernels that ran (``flash``, ``cudnn``, ``efficient``, ``math``, ``cpu-flash``), plus, on CUDA,
    ``kernel:<name>`` entries for the device kernels whose names say attention."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as profiler:
        fn()
    found: dict[str, int] = {}
    for event in profiler.key_averages():
        name = SDPA_KERNEL_OPS.get(event.key)
        if name is None and getattr(event, "device_type", None) == torch.autograd.DeviceType.CUDA:
            lowered = event.key.lower()
            if any(word in lowered for word in ("fmha", "flash", "sdpa", "attention", "attn")):
                name = "kernel:" + event.key[:80]
        if name is not None:
            found[name] = found.get(name, 0) + event.count
    return found
