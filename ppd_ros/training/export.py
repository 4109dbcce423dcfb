"""Lightning checkpoint -> an exported model (the files ``ppd_ros.nets.exported`` reads).

``export_checkpoint(ckpt, "model/my_model.safetensors")`` writes, readable by every user (0644):

* ``my_model.safetensors``: ``dit.*`` and, unless the encoder is the released, frozen encoder of
  its family (then named by its registry entry), ``sem_encoder.*``;
* ``my_model.json``: format, DiT size, semantic encoder (family, size, weights source), native
  size (the training resolution) and provenance (see :class:`~ppd_ros.nets.exported.ExportMetadata`).

Only tensors are read from the checkpoint (``weights_only=True``); the networks are not built.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Mapping

import torch

from ppd_ros.nets.checkpoints import select_prefix
from ppd_ros.nets.exported import DIT_PREFIX, EMBEDDED, ENCODER_PREFIX, EXPORT_FORMAT, MOGE2, export_json_path
from ppd_ros.training.networks import (
    CHECKPOINT_RECORD, NetworkSpec, read_encoder_weights, registry_encoder, resolve_networks,
)
from ppd_ros.training.safe_load import UnsafeCheckpointError, read_training_checkpoint

EXPORT_FILE_MODE = 0o644  # the node may run as another user


def _write_readable(path: Path, write) -> None:
    """Write through a temporary file and rename, so a failed export leaves no half file; mode 0644."""
    temporary = path.with_name(f".{path.name}.part")
    write(temporary)
    os.chmod(temporary, EXPORT_FILE_MODE)
    os.replace(temporary, path)


def write_export(output: str | Path, dit_state: Mapping[str, torch.Tensor],
                 encoder_state: Mapping[str, torch.Tensor] | None, metadata: dict[str, Any]) -> Path:
    """Write ``output`` (.safetensors: ``dit.*`` + ``sem_encoder.*`` when ``encoder_state``) and
    its JSON ``metadata`` (``format`` added); returns the JSON path."""
    from safetensors.torch import save_file

    output = Path(output)
    if output.suffix != ".safetensors":
        raise ValueError(f"export file must end in .safetensors, got {output}")
    output.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"{DIT_PREFIX}{k}": v.detach().float().cpu().contiguous() for k, v in dit_state.items()}
    for key, value in (encoder_state or {}).items():
        tensors[f"{ENCODER_PREFIX}{key}"] = value.detach().float().cpu().contiguous()
    _write_readable(output, lambda path: save_file(tensors, str(path)))
    json_path = export_json_path(output)
    text = json.dumps({"format": EXPORT_FORMAT, **metadata}, indent=2) + "\n"
    _write_readable(json_path, lambda path: path.write_text(text))
    return json_path


def _semantic_dim(dit: dict[str, Any], dit_state: Mapping[str, torch.Tensor]) -> int:
    """semantic_dim of a DiT config, read from its fusion layer when the config lacks it."""
    if "semantic_dim" in dit:
        return int(dit["semantic_dim"])
    return int(dit_state["proj_fusion.0.weight"].shape[1]) - int(dit["hidden_size"])


def export_checkpoint(checkpoint: str | Path, output: str | Path) -> Path:
    """Export a ``ppd-train`` Lightning checkpoint; returns the JSON path."""
    ckpt = read_training_checkpoint(checkpoint)
    record = ckpt.get(CHECKPOINT_RECORD)
    hparams = ckpt.get("hyper_parameters", {})
    if record is not None:
        spec = NetworkSpec.from_dict(record["networks"])
        train_size, trained_encoder = record.get("train_size"), bool(record.get("train_encoder"))
        moge_config = record.get("moge_config")
    else:  # written before the record existed: resolve the hyper-parameters again
        spec = resolve_networks(hparams.get("dit"), hparams.get("encoder"), hparams.get("encoder_weights"),
                                hparams.get("dit_weights"), hparams.get("weights_dir"))
        train_size, trained_encoder, moge_config = spec.native_size, bool(hparams.get("train_encoder")), None
    state = ckpt["state_dict"]
    dit_state = select_prefix(state, "dit.")
    encoder_state = select_prefix(state, "semantic_encoder.")
    registry = None if trained_encoder else registry_encoder(spec)
    if registry is not None:
        encoder_state, weights = None, registry
    else:
        weights = EMBEDDED
        if not encoder_state or (moge_config is None and spec.encoder_family == MOGE2):
            # a frozen encoder is not stored in checkpoints: embed it from its file
            encoder_state, moge_config = read_encoder_weights(spec, hparams.get("weights_dir"))
    encoder_info: dict[str, Any] = {"family": spec.encoder_family, "config": spec.encoder_config, "weights": weights}
    if weights == EMBEDDED and moge_config is not None:
        encoder_info["moge_config"] = moge_config
    metadata = {
        "dit": {**spec.dit, "semantic_dim": _semantic_dim(spec.dit, dit_state)},
        "semantic_encoder": encoder_info,
        "native_size": None if train_size is None else {"height": int(train_size[0]), "width": int(train_size[1])},
        "stage": hparams.get("stage"),
        "global_step": int(ckpt.get("global_step", 0)),
        "source": Path(checkpoint).name,
    }
    return write_export(output, dit_state, encoder_state, metadata)


def main(argv: list[str] | None = None) -> int:
    """``ppd-train export CHECKPOINT OUTPUT.safetensors``."""
    parser = argparse.ArgumentParser(prog="ppd-train export", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="Lightning checkpoint (e.g. runs/x/checkpoints/last.ckpt)")
    parser.add_argument("output", help="output weights file, .safetensors (a .json is written beside it)")
    args = parser.parse_args(argv)
    try:
        config = export_checkpoint(args.checkpoint, args.output)
    except (UnsafeCheckpointError, OSError, ValueError) as error:
        print(f"ppd-train export: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} and {config}")
    return 0


__all__ = ["EXPORT_FILE_MODE", "export_checkpoint", "main", "write_export"]
