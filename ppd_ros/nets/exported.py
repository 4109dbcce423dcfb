"""Exported models (``ppd-train export``): read their metadata and build their networks.

An export is two files side by side:

* ``NAME.safetensors``: ``dit.*`` (the :class:`~ppd_ros.nets.dit.PixelDiT`) and, when the
  semantic encoder is embedded, ``sem_encoder.*`` (DA2 layout: ``sem_encoder.pretrained.*``;
  MoGe-2: ``sem_encoder.<MoGe-2 keys>``);
* ``NAME.json``: format version, DiT constructor arguments, the semantic encoder (family
  ``da2`` or ``moge2``, its DINOv2 size, where its weights are: ``embedded`` or a registry name
  of ``model/weights.yaml``), the native inference size (the training resolution) and
  provenance (source checkpoint, global step).

No Lightning and no ROS here: the engine, the backends and the node read exports through this
module; :mod:`ppd_ros.training.export` writes them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

EXPORT_FORMAT = "ppd_ros.dit-export/2"
FORMAT_V1 = "ppd_ros.dit-export/1"  # no encoder family (always DA2 layout), no native size
READABLE_FORMATS = (FORMAT_V1, EXPORT_FORMAT)

DA2, MOGE2 = "da2", "moge2"
ENCODER_FAMILIES = (DA2, MOGE2)
FAMILY_NAMES = {DA2: "Depth-Anything-V2 (da2)", MOGE2: "MoGe-2 (moge2)"}
EMBEDDED = "embedded"

# Released DiTs (registry names of model/weights.yaml) -> the encoder family they pair with. ppd.pth
# and ppd_moge.pth have identical shapes: only the name tells which semantic tokens the DiT learnt.
REGISTRY_DIT_FAMILY = {"ppd": DA2, "ppd_moge": MOGE2}
# The released encoder of each family.
REGISTRY_ENCODER = {DA2: "depth_anything_v2_vitl", MOGE2: "moge2_vitl"}

DIT_PREFIX = "dit."
ENCODER_PREFIX = "sem_encoder."


class ExportError(ValueError):
    """A file is not a readable export, or its parts do not fit together (one line)."""


@dataclass(frozen=True)
class ExportMetadata:
    """What an export's JSON records. ``native_size`` is (height, width) of the training images
    (None for exports written before format 2); ``native_area`` is its pixel count."""

    path: Path  # the .safetensors file
    format: str
    dit: Mapping[str, Any]  # PixelDiT constructor arguments
    encoder_family: str  # DA2 | MOGE2
    encoder_config: Mapping[str, Any] | None  # DinoV2Config arguments (None: the released ViT-L)
    encoder_weights: str  # EMBEDDED or a registry name
    moge_config: Mapping[str, Any] | None  # MoGe-2 model_config of an embedded MoGe-2 encoder
    native_size: tuple[int, int] | None
    stage: str | None
    global_step: int | None
    source: str | None

    @property
    def native_area(self) -> int | None:
        """Pixels of the native inference size (the area the model was trained at), or None."""
        return None if self.native_size is None else self.native_size[0] * self.native_size[1]

    @property
    def is_metric(self) -> bool:
        """Whether the model also yields metric depth and intrinsics (MoGe-2 semantics)."""
        return self.encoder_family == MOGE2


def export_json_path(weights: str | Path) -> Path:
    """The JSON that sits next to an exported weights file."""
    return Path(weights).with_suffix(".json")


def is_export(path: str | Path) -> bool:
    """Whether ``path`` is a ``.safetensors`` file with an export JSON of a known format beside it."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file() or not export_json_path(path).is_file():
        return False
    try:
        return json.loads(export_json_path(path).read_text()).get("format") in READABLE_FORMATS
    except (OSError, ValueError, AttributeError):
        return False


def read_export_metadata(path: str | Path) -> ExportMetadata:
    """The metadata of an export (its ``.safetensors`` or its ``.json``); :class:`ExportError` if
    it is not one, or its JSON is malformed."""
    path = Path(path).expanduser()
    weights = path.with_suffix(".safetensors")
    config_path = export_json_path(weights)
    if not weights.is_file():
        raise ExportError(f"{weights}: exported weights file not found")
    if not config_path.is_file():
        raise ExportError(f"{weights}: not an export of ppd-train (no {config_path.name} next to it)")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as error:
        raise ExportError(f"{config_path}: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ExportError(f"{config_path}: expected a JSON object")
    version = config.get("format")
    if version not in READABLE_FORMATS:
        raise ExportError(f"{config_path}: format {version!r} is not one of {', '.join(READABLE_FORMATS)}"
                          " (written by a newer ppd_ros?)")
    try:
        encoder = config["semantic_encoder"]
        family = encoder.get("family", DA2)
        weights_source = encoder["weights"]
        dit = dict(config["dit"])
        native = config.get("native_size")
        native_size = None if native is None else (int(native["height"]), int(native["width"]))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ExportError(f"{config_path}: missing or malformed entry ({error})") from None
    if family not in ENCODER_FAMILIES:
        raise ExportError(f"{config_path}: unknown semantic encoder family {family!r}; "
                          f"known: {', '.join(ENCODER_FAMILIES)}")
    if weights_source not in (EMBEDDED, REGISTRY_ENCODER[family]):
        raise ExportError(f"{config_path}: encoder weights {weights_source!r} are not a {family} encoder "
                          f"('{EMBEDDED}' or {REGISTRY_ENCODER[family]!r})")
    return ExportMetadata(
        path=weights, format=version, dit=dit, encoder_family=family,
        encoder_config=encoder.get("config"), encoder_weights=weights_source,
        moge_config=encoder.get("moge_config"), native_size=native_size,
        stage=config.get("stage"), global_step=config.get("global_step"), source=config.get("source"),
    )


def state_encoder_family(state: Mapping[str, torch.Tensor]) -> str | None:
    """The encoder family a state dict's keys belong to (``pretrained.*``: DA2,
    ``encoder.backbone.*``: MoGe-2), or None when neither layout is present."""
    if any(key.startswith("pretrained.") for key in state):
        return DA2
    if any(key.startswith("encoder.backbone.") for key in state):
        return MOGE2
    return None


def _check_family(found: str | None, family: str, source: str) -> None:
    if found is not None and found != family:
        raise ExportError(f"{source}: holds {FAMILY_NAMES[found]} weights; not supported as {FAMILY_NAMES[family]} "
                          "encoder weights (a DiT only works with the semantic tokens it was trained on)")


def read_semantic_encoder_file(path: str | Path, family: str, weights_dir: str | Path | None = None
                               ) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(state dict with the encoder's own keys, MoGe-2 model_config or None) of an encoder file:
    ``depth_anything_v2_vitl.pth``, a MoGe-2 ``model.pt``, or an export (its embedded encoder or
    the registry file it names). A file of the other family is refused with one line."""
    from ppd_ros.nets.checkpoints import CheckpointError, read_state_dict, select_prefix

    path = Path(path).expanduser()
    if is_export(path):
        meta = read_export_metadata(path)
        _check_family(meta.encoder_family, family, str(path))
        if meta.encoder_weights != EMBEDDED:
            from ppd_ros.weights import weights_path

            return read_semantic_encoder_file(weights_path(meta.encoder_weights, weights_dir), family)
        return select_prefix(read_state_dict(path), ENCODER_PREFIX), meta.moge_config
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    moge_config = None
    if path.suffix == ".safetensors":
        state = read_state_dict(path)
    else:
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
        if isinstance(raw, Mapping) and "model_config" in raw and isinstance(raw.get("model"), Mapping):
            state, moge_config = dict(raw["model"]), dict(raw["model_config"])
        else:
            state = read_state_dict(path)
    if any(key.startswith(ENCODER_PREFIX) for key in state):  # a PPD wrapper state dict
        state = select_prefix(state, ENCODER_PREFIX)
    _check_family(state_encoder_family(state), family, str(path))
    if family == MOGE2 and moge_config is None:
        raise CheckpointError(f"{path}: MoGe-2 weights need their model_config: give the MoGe-2 model.pt "
                              "(`ppd fetch-weights moge2_vitl`) or an export")
    return state, moge_config


def build_semantic_encoder(family: str, state: Mapping[str, torch.Tensor], encoder_config: Mapping[str, Any] | None,
                           moge_config: Mapping[str, Any] | None = None, source: str = "encoder weights",
                           device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """The semantic encoder of ``family`` loaded strictly from ``state`` (the encoder's own keys):
    DA2 through :func:`~ppd_ros.nets.semantics.load_da2_semantic_encoder`, MoGe-2 through
    :func:`~ppd_ros.nets.moge.load_moge2` (``moge_config`` is its model_config;
    ``encoder_config`` overrides its DINOv2 size). Weights of the other family: one line."""
    from ppd_ros.nets.dinov2 import DinoV2Config

    _check_family(state_encoder_family(state), family, source)
    config = None if encoder_config is None else DinoV2Config(**encoder_config)
    if family == MOGE2:
        from ppd_ros.nets.moge import load_moge2

        if moge_config is None:
            raise ExportError(f"{source}: MoGe-2 weights without their model_config")
        return load_moge2({"model_config": dict(moge_config), "model": dict(state)}, backbone=config,
                          device=device, dtype=dtype)
    from ppd_ros.nets.semantics import DA2_VITL, load_da2_semantic_encoder

    return load_da2_semantic_encoder(state, config=config or DA2_VITL, device=device, dtype=dtype)


def load_export(path: str | Path, weights_dir: str | Path | None = None, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(DiT, semantic encoder) of an export, both loaded strictly, in eval mode.

    The encoder is the embedded one or the registry file its metadata names, read from the
    weights directory (``ppd fetch-weights``). A DA2-layout export gets a
    :class:`~ppd_ros.nets.semantics.DA2SemanticEncoder`, a MoGe-2 one a
    :class:`~ppd_ros.nets.moge.MoGe2Model` (metric depth too)."""
    from ppd_ros.nets.checkpoints import read_state_dict
    from ppd_ros.nets.dit import load_ppd_dit

    meta = read_export_metadata(path)
    dit = load_ppd_dit(read_state_dict(meta.path), device=device, dtype=dtype, config=meta.dit)
    state, moge_config = read_semantic_encoder_file(meta.path, meta.encoder_family, weights_dir)
    if not state:
        raise ExportError(f"{meta.path}: metadata says the encoder is embedded, but there are no "
                          f"{ENCODER_PREFIX}* tensors")
    encoder = build_semantic_encoder(meta.encoder_family, state, meta.encoder_config, moge_config,
                                     source=str(meta.path), device=device, dtype=dtype)
    return dit, encoder


__all__ = ["DA2", "EMBEDDED", "ENCODER_FAMILIES", "EXPORT_FORMAT", "ExportError", "ExportMetadata", "MOGE2",
           "READABLE_FORMATS", "REGISTRY_DIT_FAMILY", "REGISTRY_ENCODER", "build_semantic_encoder", "export_json_path",
           "is_export", "load_export", "read_export_metadata", "read_semantic_encoder_file", "state_encoder_family"]
