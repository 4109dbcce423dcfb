"""Lightning checkpoint -> the weight files the node loads.

``export_checkpoint(ckpt, "model/my_model.safetensors")`` writes

* ``my_model.safetensors``: ``dit.*`` (read by :func:`ppd_ros.nets.dit.load_ppd_dit`, strict) and,
  when the semantic encoder is not the released DA2 ViT-L file (a trained or custom-size
  encoder), ``sem_encoder.pretrained.*`` (read by :func:`load_da2_semantic_encoder` after
  removing ``sem_encoder.``);
* ``my_model.json``: the DiT constructor arguments, the encoder config and where its weights
  are (``embedded`` or the registry name ``depth_anything_v2_vitl``), plus provenance.

:func:`load_export` builds both networks from these files and :func:`export_estimator` wraps them
in a torch backend (:class:`~ppd_ros.backends.torch_backend.TorchImageBackend`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from ppd_ros.nets.checkpoints import read_state_dict, select_prefix
from ppd_ros.nets.dinov2 import DinoV2Config
from ppd_ros.nets.dit import PixelDiT, load_ppd_dit
from ppd_ros.nets.semantics import DA2_VITL, DA2SemanticEncoder, load_da2_semantic_encoder

EXPORT_FORMAT = "ppd_ros.dit-export/1"
DA2_REGISTRY_NAME = "depth_anything_v2_vitl"


def export_config_path(weights: str | Path) -> Path:
    """The JSON config that sits next to an exported weights file."""
    return Path(weights).with_suffix(".json")


def export_module(module, output: str | Path, source: str = "in-memory module", global_step: int | None = None) -> Path:
    """Write a :class:`~ppd_ros.training.module.PPDTrainingModule`'s networks; returns the JSON path.

    ``global_step`` defaults to the module's own (0 for a module outside a trainer)."""
    from safetensors.torch import save_file

    output = Path(output)
    if output.suffix != ".safetensors":
        raise ValueError(f"export file must end in .safetensors, got {output}")
    output.parent.mkdir(parents=True, exist_ok=True)
    hparams = module.hparams
    state = {f"dit.{k}": v.detach().float().cpu().contiguous() for k, v in module.dit.state_dict().items()}
    embed_encoder = bool(hparams.train_encoder) or hparams.encoder_weights is None or hparams.encoder is not None
    if embed_encoder:
        state.update({f"sem_encoder.{k}": v.detach().float().cpu().contiguous()
                      for k, v in module.semantic_encoder.state_dict().items()})
    save_file(state, str(output))
    config = {
        "format": EXPORT_FORMAT,
        "dit": dict(module.dit_config),
        "semantic_encoder": {
            "config": None if hparams.encoder is None else dict(hparams.encoder),
            "weights": "embedded" if embed_encoder else DA2_REGISTRY_NAME,
        },
        "stage": hparams.stage,
        "global_step": int(getattr(module, "global_step", 0) if global_step is None else global_step),
        "source": source,
    }
    path = export_config_path(output)
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def export_checkpoint(checkpoint: str | Path, output: str | Path) -> Path:
    """Export a ``ppd-train`` Lightning checkpoint; returns the JSON config path."""
    from ppd_ros.training.module import load_training_checkpoint

    import torch

    module = load_training_checkpoint(checkpoint)
    # A module loaded outside a trainer reports step 0; the checkpoint records the real one.
    step = torch.load(str(checkpoint), map_location="cpu", weights_only=False, mmap=True).get("global_step")
    return export_module(module, output, source=Path(checkpoint).name, global_step=step)


def read_export_config(weights: str | Path) -> dict[str, Any]:
    """The JSON config of an exported weights file (ValueError if absent or not an export)."""
    path = export_config_path(weights)
    if not path.is_file():
        raise ValueError(f"{weights}: no export config {path} next to it")
    config = json.loads(path.read_text())
    if config.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path}: format {config.get('format')!r} is not {EXPORT_FORMAT!r}")
    return config


def load_export(weights: str | Path, weights_dir: str | Path | None = None, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> tuple[PixelDiT, DA2SemanticEncoder]:
    """(DiT, semantic encoder) of an export, both loaded strictly, in eval mode.

    An encoder stored as ``depth_anything_v2_vitl`` is read from the weights directory
    (``ppd fetch-weights``)."""
    config = read_export_config(weights)
    state = read_state_dict(weights)
    dit = load_ppd_dit(state, device=device, dtype=dtype, config=config["dit"])
    encoder_info = config["semantic_encoder"]
    encoder_config = DA2_VITL if encoder_info["config"] is None else DinoV2Config(**encoder_info["config"])
    if encoder_info["weights"] == "embedded":
        encoder_state = select_prefix(state, "sem_encoder.")
    else:
        from ppd_ros.weights import weights_path

        encoder_state = read_state_dict(weights_path(encoder_info["weights"], weights_dir))
    encoder = load_da2_semantic_encoder(encoder_state, config=encoder_config, device=device, dtype=dtype)
    return dit, encoder


def export_estimator(weights: str | Path, model_name: str | None = None, weights_dir: str | Path | None = None,
                     device: str | torch.device = "auto", steps: int = 4, seed: int | None = 0, **kwargs):
    """A torch backend running an exported model."""
    from ppd_ros.backends.base import BackendOptions
    from ppd_ros.backends.torch_backend import TorchImageBackend
    from ppd_ros.device import resolve_device
    from ppd_ros.model_specs import DA2, IMAGE, ModelSpec

    device = resolve_device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    dit, encoder = load_export(weights, weights_dir, device=device, dtype=dtype)
    spec = ModelSpec(model_name or Path(weights).stem, IMAGE, DA2, f"exported {Path(weights).name}")
    return TorchImageBackend(dit, encoder, spec, BackendOptions(device=str(device), steps=steps, seed=seed, **kwargs))


def main(argv: list[str] | None = None) -> int:
    """``ppd-train export CHECKPOINT OUTPUT.safetensors``."""
    parser = argparse.ArgumentParser(prog="ppd-train export", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="Lightning checkpoint (e.g. runs/x/checkpoints/last.ckpt)")
    parser.add_argument("output", help="output weights file, .safetensors (a .json config is written beside it)")
    args = parser.parse_args(argv)
    config = export_checkpoint(args.checkpoint, args.output)
    print(f"wrote {args.output} and {config}")
    return 0


__all__ = ["EXPORT_FORMAT", "export_checkpoint", "export_config_path", "export_estimator", "export_module",
           "load_export", "main", "read_export_config"]
