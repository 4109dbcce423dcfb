"""Backends run the networks behind one protocol (:class:`DepthBackend`): torch (CPU and the CUDA
fast path) and onnxruntime (image models exported by ``ppd export-onnx``); the frame pipeline
(:mod:`ppd_ros.pipeline`) never needs to know which one runs."""
from __future__ import annotations

from ppd_ros.backends.base import BackendOptions, DepthBackend, DepthOutput
from ppd_ros.model_specs import ModelSpec

BACKEND_NAMES = ("torch", "onnxruntime")


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


__all__ = ["BACKEND_NAMES", "BackendOptions", "DepthBackend", "DepthOutput", "create_backend"]
