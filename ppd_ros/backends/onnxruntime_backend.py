"""The ONNX Runtime backend: PPD image models from the graphs of ``ppd export-onnx``.

Providers come from an ordered preference list (TensorRT, CUDA, CPU by default): those this
onnxruntime build has are used in that order, the missing ones are skipped with one warning
line, and none usable is an error. Only the CPU provider could be run where this was written;
the TensorRT and CUDA provider options follow the ONNX Runtime documentation (README "ONNX").

Per frame: the same cv2 resize as the torch backend, the encoder graph once, then the Euler loop
of :func:`ppd_ros.nets.flow.sample_depth` calling the DiT graph once per step, from the same
seeded noise as the torch backend. Outputs are CPU tensors (``device`` is the CPU).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ppd_ros.backends.base import BackendOptions, DepthOutput, ImageModelStream, batch_size_of
from ppd_ros.backends.onnx_layout import default_onnx_dir, read_metadata
from ppd_ros.model_specs import ModelSpec
from ppd_ros.nets.dinov2 import resize_position_table
from ppd_ros.nets.flow import sample_depth
from ppd_ros.preprocess import inference_size, resize_for_inference

LOG = logging.getLogger(__name__)

PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def provider_name(name: str) -> str:
    """Full ONNX Runtime name of a provider (``tensorrt``, ``cuda``, ``cpu`` or a full name)."""
    if name.lower() in PROVIDER_NAMES:
        return PROVIDER_NAMES[name.lower()]
    if name.endswith("ExecutionProvider"):
        return name
    raise ValueError(f"unknown ONNX Runtime provider {name!r}; use {', '.join(PROVIDER_NAMES)} "
                     "or a full name such as CUDAExecutionProvider")


def select_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """The requested providers this build has, in the requested order.

    Requested-but-missing ones are skipped with one warning line; ``ValueError`` when none is left.
    """
    wanted = list(dict.fromkeys(provider_name(name) for name in requested))
    if not wanted:
        raise ValueError("no ONNX Runtime provider requested")
    chosen = [name for name in wanted if name in available]
    missing = [name for name in wanted if name not in available]
    if not chosen:
        raise ValueError(f"none of the requested ONNX Runtime providers ({', '.join(wanted)}) is in this "
                         f"onnxruntime build (available: {', '.join(available)}); for GPUs install "
                         "onnxruntime-gpu (README: ONNX Runtime)")
    if missing:
        LOG.warning("onnxruntime: requested providers not available, skipped: %s (using %s)",
                    ", ".join(missing), ", ".join(chosen))
    return chosen


def provider_options(name: str, device_id: int, cache_dir: Path) -> dict[str, Any]:
    """Documented options of each provider: the GPU index; TensorRT with fp16 kernels and an engine
    cache (an engine is built per input shape, minutes the first time, then read back)."""
    if name == "TensorrtExecutionProvider":
        return {"device_id": device_id, "trt_fp16_enable": True, "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache_dir)}
    if name == "CUDAExecutionProvider":
        return {"device_id": device_id}
    return {}


def _device_id(device: str) -> int:
    """GPU index of a device option (``cuda:1`` -> 1; anything else -> 0)."""
    return int(device.split(":", 1)[1]) if device.startswith("cuda:") else 0


class OnnxDiT:
    """The DiT graph called like the torch DiT: ``dit(x, semantics, timestep) -> velocity``."""

    def __init__(self, session):
        self.session = session

    def __call__(self, x: torch.Tensor, semantics: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        feeds = {"x": x.float().numpy(), "semantics": semantics.float().numpy(),
                 "timestep": timestep.to(torch.int32).numpy()}
        return torch.from_numpy(self.session.run(["velocity"], feeds)[0])


class OnnxImageBackend(ImageModelStream):
    """PPD image model on ONNX Runtime (see the module docstring)."""


    def __init__(self, spec: ModelSpec, options: BackendOptions = BackendOptions(),
                 model_dir: str | Path | None = None):
        try:
            import onnxruntime
        except ImportError as error:
            raise ValueError(f"backend onnxruntime needs the onnxruntime package ({error}): "
                             "pip install 'ppd_ros[onnx]' (onnxruntime-gpu on GPU machines)") from error
        if spec.mode != "image":
            raise ValueError(f"{spec.name} is a video model: the onnxruntime backend runs image models "
                             "(use backend torch)")
        if spec.is_metric:
            raise ValueError(f"{spec.name} is not exported to ONNX (MoGe-2's metric fit runs on the host): "
                             "use backend torch")
        if options.steps <= 0:
            raise ValueError(f"steps must be positive, got {options.steps}")
        target_area = spec.native_area if options.target_area is None else int(options.target_area)
        if target_area < 16 * 16:
            raise ValueError(f"target_area must be at least 256 pixels, got {target_area}")
        model_dir = Path(model_dir or options.onnx_dir or default_onnx_dir(spec.name, options.weights_dir))
        self.metadata = read_metadata(model_dir, spec.name)
        self.spec = spec
        self.device = torch.device("cpu")
        self.steps = int(options.steps)
        self.target_area = target_area
        self.seed = options.seed
        chosen = select_providers(options.onnx_providers, onnxruntime.get_available_providers())
        device_id = _device_id(options.device)
        providers = [(name, provider_options(name, device_id, model_dir / "trt_cache")) for name in chosen]
        self.encoder = onnxruntime.InferenceSession(str(model_dir / self.metadata["encoder"]["file"]),
                                                    providers=providers)
        self.dit = OnnxDiT(onnxruntime.InferenceSession(str(model_dir / self.metadata["dit"]["file"]),
                                                        providers=providers))
        self.providers = self.dit.session.get_providers()  # what ONNX Runtime actually uses
        self._learned_table = torch.from_numpy(np.load(model_dir / self.metadata["position_table"]))
        self._tables: dict[tuple[int, int], np.ndarray] = {}

    def inference_size(self, height: int, width: int) -> tuple[int, int]:
        return inference_size(height, width, self.target_area)

    def _position_table(self, rows: int, cols: int) -> np.ndarray:
        table = self._tables.get((rows, cols))
        if table is None:
            rule = self.metadata["encoder"]["pos_resize"]
            table = resize_position_table(self._learned_table, rows, cols, rule).numpy()
            if len(self._tables) >= 8:
                self._tables.pop(next(iter(self._tables)))
            self._tables[(rows, cols)] = table
        return table

    def predict_batch(self, frames: Sequence[np.ndarray], tags: Sequence[Any]) -> list[DepthOutput]:
        height, width = batch_size_of(frames, tags)
        start = time.perf_counter()
        h, w = self.inference_size(height, width)
        resized = np.stack([resize_for_inference(frame, self.target_area) for frame in frames])
        image01 = np.ascontiguousarray(resized.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)
        (semantics,) = self.encoder.run(["semantics"], {"image": image01,
                                                        "position_table": self._position_table(h // 16, w // 16)})
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        noise = torch.randn((1, 1, h, w), generator=generator).expand(len(frames), -1, -1, -1)
        depth = sample_depth(self.dit, torch.from_numpy(image01), torch.from_numpy(semantics), steps=self.steps,
                             noise=noise)[:, 0]
        share = (time.perf_counter() - start) / len(frames)
        return [DepthOutput(tag, depth[i], (height, width), share) for i, tag in enumerate(tags)]
