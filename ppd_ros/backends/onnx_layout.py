"""Where ``ppd export-onnx`` puts an image model's graphs and how the backend finds them (see
:mod:`ppd_ros.backends.onnx_export` for what the graphs are)."""
from __future__ import annotations

import json
from pathlib import Path

ENCODER_FILE = "encoder.onnx"
DIT_FILE = "dit.onnx"
POSITION_TABLE_FILE = "position_table.npy"
METADATA_FILE = "export.json"
EXPORT_FORMAT = 1
OPSET = 18


def default_onnx_dir(model: str, weights_dir: str | Path | None = None) -> Path:
    """``<weights dir>/onnx/<model>``: where ``ppd export-onnx`` writes and the backend looks."""
    from ppd_ros.weights import resolve_weights_dir

    return resolve_weights_dir(weights_dir) / "onnx" / model


def read_metadata(model_dir: str | Path, model: str) -> dict:
    """export.json of an export folder made for ``model``; FileNotFoundError/ValueError otherwise."""
    path = Path(model_dir) / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX export of {model} in {model_dir}: run `ppd export-onnx --model {model}` "
                                f"(--output {model_dir}) first")
    metadata = json.loads(path.read_text())
    if metadata.get("format") != EXPORT_FORMAT or metadata.get("model") != model:
        raise ValueError(f"{path} holds an export of {metadata.get('model')!r} (format {metadata.get('format')}), "
                         f"not of {model!r}: export again with `ppd export-onnx --model {model}`")
    return metadata
