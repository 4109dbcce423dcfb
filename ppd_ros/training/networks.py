"""Which networks a training run builds: the ``model.*`` options resolved against the file the DiT
starts from (no Lightning here; ``ppd-train export`` uses it too).

``dit_weights`` / ``encoder_weights`` take a registry name of ``model/weights.yaml`` (read from the
weights directory, ``ppd fetch-weights``) or a path. Starting from an export, its metadata gives
the DiT size, the encoder (family, size, weights) and the native size, so no other option is
needed; starting from ``ppd.pth`` / ``ppd_moge.pth``, the registry name gives the encoder it pairs
with. A value given anyway must agree, and a DiT is never paired with the other encoder family.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ppd_ros.nets.dit import PPD_DIT_FULL, PixelDiT, load_ppd_dit
from ppd_ros.nets.exported import (
    DA2, EMBEDDED, ENCODER_FAMILIES, FAMILY_NAMES, MOGE2, REGISTRY_DIT_FAMILY, REGISTRY_ENCODER, build_semantic_encoder,
    is_export, read_export_metadata, read_semantic_encoder_file,
)
from ppd_ros.nets.semantics import DA2_VITL, DA2SemanticEncoder

CHECKPOINT_RECORD = "ppd_ros"  # checkpoint key of the resolved networks and training size (module -> export)
OFFICIAL_TRAINING_SIZE = (768, 1024)  # (height, width) of the released DiTs' fine-tuning stage


class ModelConfigError(ValueError):
    """The ``model.*`` options do not describe a consistent pair of networks (one line)."""


@dataclass(frozen=True)
class NetworkSpec:
    """The resolved networks of a run (recorded in its checkpoints)."""

    dit: dict[str, Any]  # PixelDiT constructor arguments
    encoder_family: str  # DA2 | MOGE2
    encoder_config: dict[str, Any] | None  # DinoV2Config arguments (None: the released ViT-L)
    encoder_weights: str | None  # registry name or path; None: random initialisation (DA2 only)
    dit_weights: str | None  # registry name or path the DiT starts from; None: DiT-style init
    native_size: tuple[int, int] | None = None  # (height, width) the starting weights were trained at

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "NetworkSpec":
        values = dict(values)
        if values.get("native_size") is not None:
            values["native_size"] = tuple(values["native_size"])
        return cls(**values)


def registry_name(value: str | Path) -> str | None:
    """The registry entry ``value`` names: the name itself, or a path with that entry's file name
    (``~/.cache/ppd_ros/weights/ppd_moge.pth`` -> ``ppd_moge``)."""
    from ppd_ros.weights import load_registry

    registry = load_registry()
    if str(value) in registry:
        return str(value)
    name = Path(value).name
    return next((entry.name for entry in registry.values() if entry.file == name), None)


def weights_file(value: str, weights_dir: str | Path | None, option: str) -> Path:
    """The file of a registry name (in the weights directory, verified) or of a path."""
    from ppd_ros.weights import load_registry, weights_path

    if value in load_registry():
        return weights_path(value, weights_dir)
    path = Path(value).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{option}: file not found: {path} (a path, or a registry name of "
                                "model/weights.yaml such as ppd or depth_anything_v2_vitl)")
    return path


def parse_encoder_option(encoder: str | Mapping[str, Any] | None) -> tuple[str | None, dict[str, Any] | None]:
    """``model.encoder`` -> (family or None, DinoV2Config arguments or None): ``da2`` / ``moge2``,
    or a mapping of DinoV2Config arguments with an optional ``family``."""
    if encoder is None:
        return None, None
    if isinstance(encoder, str):
        if encoder not in ENCODER_FAMILIES:
            raise ModelConfigError(f"model.encoder {encoder!r}: give {' or '.join(ENCODER_FAMILIES)}, or a mapping "
                                   "of DINOv2 sizes (embed_dim, depth, num_heads, ...) with an optional family")
        return encoder, None
    config = dict(encoder)
    family = config.pop("family", None)
    if family is not None and family not in ENCODER_FAMILIES:
        raise ModelConfigError(f"model.encoder.family {family!r}: choose {' or '.join(ENCODER_FAMILIES)}")
    return family, config or None


def resolve_networks(dit: Mapping[str, Any] | None, encoder: str | Mapping[str, Any] | None,
                     encoder_weights: str | None, dit_weights: str | None,
                     weights_dir: str | Path | None = None) -> NetworkSpec:
    """The networks the ``model.*`` options describe (see the module docstring). Reads metadata
    only (export JSON, registry), no weights; raises ModelConfigError / FileNotFoundError (one line)."""
    family, encoder_config = parse_encoder_option(encoder)
    start_family, start_meta, start_registry = None, None, None
    if dit_weights is not None:
        start_registry = registry_name(dit_weights)
        if start_registry in REGISTRY_DIT_FAMILY:  # ppd.pth / ppd_moge.pth: the same shapes, the name tells
            start_family = REGISTRY_DIT_FAMILY[start_registry]
        else:
            start_registry = None
            path = weights_file(dit_weights, weights_dir, "model.dit_weights")
            if is_export(path):
                start_meta = read_export_metadata(path)
                start_family = start_meta.encoder_family
    if family is not None and start_family is not None and family != start_family:
        raise ModelConfigError(f"model.dit_weights {dit_weights} was trained on {FAMILY_NAMES[start_family]} "
                               f"semantic tokens; it does not pair with model.encoder {FAMILY_NAMES[family]} (set "
                               f"model.encoder {start_family} or start from a {family} DiT)")
    family = family or start_family or DA2

    if start_meta is not None:
        if dit is not None:
            differing = {k: v for k, v in dict(dit).items() if start_meta.dit.get(k) != v}
            if differing:
                raise ModelConfigError(f"model.dit {differing} differs from the export's {dict(start_meta.dit)}; "
                                       "drop model.dit (an export brings its own architecture)")
        if encoder_config is not None and encoder_config != (start_meta.encoder_config or None):
            raise ModelConfigError(f"model.encoder {encoder_config} differs from the export's "
                                   f"{start_meta.encoder_config}; drop model.encoder")
        dit_config = dict(start_meta.dit)
        encoder_config = start_meta.encoder_config
    else:
        dit_config = dict(PPD_DIT_FULL) if dit is None else dict(dit)

    if encoder_weights is None and start_meta is not None:
        # the export's own encoder: embedded in the export file, or the registry file it names
        encoder_weights = dit_weights if start_meta.encoder_weights == EMBEDDED else start_meta.encoder_weights
    elif encoder_weights is None and dit_weights is not None and encoder_config is None:
        # a released-size DiT file: the released encoder of its family (ppd -> depth_anything_v2_vitl,
        # ppd_moge -> moge2_vitl), never a randomly initialised one
        encoder_weights = REGISTRY_ENCODER[family]
    if family == MOGE2 and encoder_weights is None:
        raise ModelConfigError("MoGe-2 semantics need model.encoder_weights: moge2_vitl "
                               "(`ppd fetch-weights moge2_vitl`) or a MoGe-2 model.pt")
    native_size = start_meta.native_size if start_meta is not None else (
        OFFICIAL_TRAINING_SIZE if start_registry is not None else None)
    return NetworkSpec(dit=dit_config, encoder_family=family, encoder_config=encoder_config,
                       encoder_weights=encoder_weights, dit_weights=dit_weights, native_size=native_size)


def require_weight_files(spec: NetworkSpec, weights_dir: str | Path | None = None) -> None:
    """One error naming every missing file of the spec (each with its ``ppd fetch-weights`` command)."""
    from ppd_ros.weights import WeightsMissingError

    missing = []
    for option, value in (("model.dit_weights", spec.dit_weights), ("model.encoder_weights", spec.encoder_weights)):
        if value is not None:
            try:
                weights_file(value, weights_dir, option)
            except FileNotFoundError as error:
                missing.append(str(error))
    if missing:
        raise WeightsMissingError("; ".join(missing))


def registry_encoder(spec: NetworkSpec) -> str | None:
    """The registry name of the spec's encoder weights when they are the released encoder of its
    family (exports then refer to it by name instead of embedding 1.2 GB)."""
    if spec.encoder_weights is None:
        return None
    name = registry_name(spec.encoder_weights)
    return name if name == REGISTRY_ENCODER[spec.encoder_family] else None


def read_encoder_weights(spec: NetworkSpec, weights_dir: str | Path | None = None
                         ) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(encoder state dict, MoGe-2 model_config or None) from the spec's encoder weights file."""
    path = weights_file(spec.encoder_weights, weights_dir, "model.encoder_weights")
    return read_semantic_encoder_file(path, spec.encoder_family, weights_dir)


def build_encoder(spec: NetworkSpec, weights_dir: str | Path | None = None) -> torch.nn.Module:
    """The spec's semantic encoder, loaded strictly (random DA2 initialisation without weights)."""
    if spec.encoder_weights is None:
        from ppd_ros.nets.dinov2 import DinoV2Config

        return DA2SemanticEncoder(DA2_VITL if spec.encoder_config is None else DinoV2Config(**spec.encoder_config))
    state, moge_config = read_encoder_weights(spec, weights_dir)
    return build_semantic_encoder(spec.encoder_family, state, spec.encoder_config, moge_config,
                                  source=str(spec.encoder_weights))


def encoder_width(encoder: torch.nn.Module) -> int:
    """Width of the semantic tokens (DA2: the ViT width; MoGe-2: its projection width)."""
    return encoder.dim_out if hasattr(encoder, "dim_out") else encoder.embed_dim


def build_dit(spec: NetworkSpec, weights_dir: str | Path | None = None) -> PixelDiT:
    """The spec's DiT: loaded strictly from ``dit_weights``, else freshly initialised."""
    if spec.dit_weights is None:
        return PixelDiT(**spec.dit)
    return load_ppd_dit(weights_file(spec.dit_weights, weights_dir, "model.dit_weights"), config=spec.dit).train()


__all__ = ["CHECKPOINT_RECORD", "ModelConfigError", "NetworkSpec", "build_dit", "build_encoder", "encoder_width",
           "parse_encoder_option", "read_encoder_weights", "registry_encoder", "registry_name", "require_weight_files",
           "resolve_networks", "weights_file"]
