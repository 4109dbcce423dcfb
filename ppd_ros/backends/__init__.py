"""Backends run the networks behind one protocol (:class:`DepthBackend`): torch (CPU and the CUDA
fast path) and onnxruntime (image models exported by ``ppd export-onnx``); the frame pipeline
(:mod:`ppd_ros.pipeline`) never needs to know which one runs."""
from __future__ import annotations

from ppd_ros.backends.base import BackendOptions, DepthBackend, DepthOutput
from ppd_ros.model_specs import ModelSpec, model_spec
from ppd_ros.parameters import BACKEND_NAMES, DepthConfig


def create_backend(spec: ModelSpec, options: BackendOptions = BackendOptions(), backend: str = "torch"
                   ) -> DepthBackend:
    """A running backend for ``spec``. Raises ``ValueError`` (unknown backend, bad options, a model
    the backend cannot run), ``WeightsMissingError`` (official weights absent; the message names
    ``ppd fetch-weights``) and ``FileNotFoundError`` (onnxruntime: no export; the message names
    ``ppd export-onnx``)."""
    if backend == "torch":
        from ppd_ros.backends.torch_backend import create_torch_backend

        return create_torch_backend(spec, options)
    if backend == "onnxruntime":
        from ppd_ros.backends.onnxruntime_backend import OnnxImageBackend

        return OnnxImageBackend(spec, options)
    raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKEND_NAMES)}")


def backend_for(config: DepthConfig) -> DepthBackend:
    """The backend a node configuration asks for (the node, ``ppd eval-bag`` and the benches)."""
    options = BackendOptions(device=config.device, steps=config.steps, target_area=config.target_area or None,
                             seed=config.seed, weights_dir=config.weights_dir or None,
                             video_stride=config.video_stride, video_channel_order=config.video_channel_order,
                             precision=config.precision, compile=config.compile, cuda_graphs=config.cuda_graphs,
                             onnx_providers=config.onnx_providers, onnx_dir=config.onnx_dir or None)
    return create_backend(model_spec(config.model_name), options, backend=config.backend)


__all__ = ["BACKEND_NAMES", "BackendOptions", "DepthBackend", "DepthOutput", "backend_for", "create_backend"]
