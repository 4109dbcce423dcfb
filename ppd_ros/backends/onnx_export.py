"""`ppd export-onnx`: an image model's semantic encoder and DiT as two ONNX graphs.

Decisions (also in the README):

- **One pair of graphs with dynamic batch, height and width** (multiples of 16), not one graph per
  size: a camera's inference size follows from its aspect, and the weights (1.2 GB + 2 GB in
  fp32) would be copied into every per-size graph. Everything size-dependent is either computed
  in the graph from the symbolic token grid (the DiT's 2-D RoPE tables, the 16 -> 8 px unfold) or
  handed in: the encoder takes the DINOv2 position table as an input, made by the backend once
  per size with the same torch code (:func:`ppd_ros.nets.dinov2.resize_position_table`), because
  that bicubic resize by a scale factor does not stay symbolic in the exporter (a graph exported
  at 64x96 failed at 48x112 when it was inside).
- **The Euler loop stays outside the graphs**: the step count is a runtime option, the encoder runs
  once per frame and the DiT once per step, the loop is a few element-wise operations, and with it
  outside ONNX Runtime runs the very sampler code of the torch backend
  (:func:`ppd_ros.nets.flow.sample_depth`); TensorRT gets plain feed-forward graphs (no Loop op).
- fp32 weights; the TensorRT provider is asked for fp16 kernels (see the backend).
- Image models with the DA2-style encoder only: MoGe-2's metric geometry ends in a host-side
  least-squares fit, and the PPVD video stream is not exported (use the torch backend).

Folder layout: ``encoder.onnx``, ``dit.onnx`` (each with a ``.data`` file of external weights when
large), ``position_table.npy`` (the learned table), ``export.json`` (what was exported, how).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ppd_ros.backends.onnx_layout import (DIT_FILE, ENCODER_FILE, EXPORT_FORMAT, METADATA_FILE, OPSET,
                                          POSITION_TABLE_FILE, default_onnx_dir)

MAX_TOKENS_PER_SIDE = 512  # symbolic bound of the 16-px grid: sides up to 8192 px


def _export(module: torch.nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
            dynamic_shapes: dict) -> None:
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # it warns about optional packages it does not need here
    try:
        # the exporter also narrates every stage on stdout and warns about its own internals
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(path), dynamo=True, input_names=input_names,
                              output_names=output_names, dynamic_shapes=dynamic_shapes, opset_version=OPSET,
                              external_data=True)
    finally:
        exporter_log.setLevel(level)


def export_image_model(dit: torch.nn.Module, encoder: torch.nn.Module, out_dir: str | Path, model: str) -> dict:
    """Write the ONNX graphs of (DiT, DA2-style encoder) into ``out_dir``; returns export.json.

    The networks are exported in fp32 on the CPU (moved there in place).
    """
    from torch.export import Dim

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dit = dit.float().cpu().eval()
    encoder = encoder.float().cpu().eval()
    vit = encoder.pretrained
    # example: 2 frames of 4x6 tokens (sizes 0/1 and equal sides would be taken as constants)
    batch, rows, cols = 2, 4, 6
    image = torch.rand(batch, 3, 16 * rows, 16 * cols)
    table = vit.position_table(rows, cols).detach()
    n = Dim("batch", min=1, max=64)
    grid_rows = Dim("rows", min=1, max=MAX_TOKENS_PER_SIDE)
    grid_cols = Dim("cols", min=1, max=MAX_TOKENS_PER_SIDE)
    image_dims = {0: n, 2: 16 * grid_rows, 3: 16 * grid_cols}
    started = time.perf_counter()
    with torch.no_grad():
        _export(encoder, (image, table), out / ENCODER_FILE, ["image", "position_table"], ["semantics"],
                {"image": image_dims, "position_table": {1: Dim.AUTO}})
        semantics = torch.randn(batch, rows * cols, dit.semantic_dim)
        x = torch.randn(batch, dit.in_channels, 16 * rows, 16 * cols)
        timestep = torch.tensor(500, dtype=torch.int32)
        _export(dit, (x, semantics, timestep), out / DIT_FILE, ["x", "semantics", "timestep"], ["velocity"],
                {"x": image_dims, "semantics": {0: n, 1: Dim.AUTO}, "timestep": None})
    np.save(out / POSITION_TABLE_FILE, vit.pos_embed.detach().float().numpy())
    metadata = {
        "format": EXPORT_FORMAT,
        "model": model,
        "opset": OPSET,
        "torch": torch.__version__,
        "dynamic": "batch, height and width (multiples of 16)",
        "encoder": {"file": ENCODER_FILE, "inputs": ["image", "position_table"], "outputs": ["semantics"],
                    "embed_dim": vit.embed_dim, "pos_resize": vit.pos_resize},
        "dit": {"file": DIT_FILE, "inputs": ["x", "semantics", "timestep"], "outputs": ["velocity"],
                "hidden_size": dit.hidden_size, "semantic_dim": dit.semantic_dim},
        "position_table": POSITION_TABLE_FILE,
        "export_seconds": round(time.perf_counter() - started, 1),
    }
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=1) + "\n")
    return metadata


# --- command line -----------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ppd_ros.model_specs import IMAGE_MODEL_NAMES

    parser.add_argument("--model", required=True, choices=IMAGE_MODEL_NAMES, help="image model to export")
    parser.add_argument("--output", default=None, help="folder (default: <weights dir>/onnx/<model>)")
    parser.add_argument("--weights-dir", default=None, help="default: $PPD_WEIGHTS_DIR or ~/.cache/ppd_ros/weights")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the comparison with torch (CPU provider, one 64x96 frame)")


def check_export(spec, out_dir: Path, dit: torch.nn.Module, encoder: torch.nn.Module) -> float:
    """Max |depth difference| between ONNX Runtime (CPU) and the fp32 torch backend on one frame."""
    from ppd_ros.backends.base import BackendOptions
    from ppd_ros.backends.onnxruntime_backend import OnnxImageBackend
    from ppd_ros.backends.torch_backend import TorchImageBackend

    options = BackendOptions(device="cpu", precision="fp32", target_area=64 * 96, onnx_providers=("cpu",),
                             onnx_dir=str(out_dir))
    frame = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    reference = TorchImageBackend(dit, encoder, spec, options).predict_batch([frame], [0])[0].relative
    exported = OnnxImageBackend(spec, options).predict_batch([frame], [0])[0].relative
    return float((reference - exported).abs().max())


def run(args: argparse.Namespace) -> int:
    from ppd_ros.backends.torch_networks import load_image_networks
    from ppd_ros.model_specs import model_spec

    spec = model_spec(args.model)
    if spec.is_metric:
        raise ValueError(f"{spec.name} is not exported to ONNX: MoGe-2's metric geometry ends in a host-side "
                         "least-squares fit; run it with the torch backend")
    out_dir = Path(args.output) if args.output else default_onnx_dir(spec.name, args.weights_dir)
    dit, encoder = load_image_networks(spec, args.weights_dir)
    metadata = export_image_model(dit, encoder, out_dir, spec.name)
    sizes = sum(path.stat().st_size for path in out_dir.iterdir()) / 2**20
    print(f"exported {spec.name} to {out_dir} in {metadata['export_seconds']} s ({sizes:.1f} MiB): "
          f"{ENCODER_FILE} + {DIT_FILE}, opset {OPSET}, dynamic batch/height/width (multiples of 16), "
          "Euler loop outside the graphs")
    if not args.no_check:
        difference = check_export(spec, out_dir, dit, encoder)
        print(f"check: ONNX Runtime (CPU) vs torch fp32 on one 64x96 frame, max |depth difference| {difference:.2e}")
    return 0
