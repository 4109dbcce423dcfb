"""What each named model is: its weight files, its networks and its native inference area.

Specs are plain data (no torch): the node's parameter validation, the CLI and the launch files
read them without loading anything. Backends (:mod:`ppd_ros.backends`) turn a spec into running
networks; preprocessing (:mod:`ppd_ros.preprocess`) knows nothing about either.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ppd_ros.constants import INFERENCE_AREA, VIDEO_WINDOW_SIZE

IMAGE = "image"  # one frame at a time (PPD)
VIDEO = "video"  # a causal stream of frames (PPVD)

DA2, MOGE2, PI3 = "da2", "moge2", "pi3"  # semantic encoder families


@dataclass(frozen=True)
class ModelSpec:
    """One model.

    ``weights``: registry names of model/weights.yaml, (DiT, semantic encoder), downloaded with
    ``ppd fetch-weights``; ``export_file``: an exported model (``ppd-train export``), relative to
    the package's share directory or absolute (a model given by its file path); ``random_tiny``: a
    small seeded random network (tests and smoke runs, its depth means nothing). ``native_area``:
    the inference area the model runs at unless told otherwise (image models; video models always
    run at their window size).
    """

    name: str
    mode: str  # IMAGE | VIDEO
    encoder: str  # DA2 | MOGE2 | PI3
    summary: str
    weights: tuple[str, ...] = ()
    export_file: str | None = None
    random_tiny: bool = False
    native_area: int = INFERENCE_AREA

    @property
    def is_metric(self) -> bool:
        """Whether the model also yields metric depth and intrinsics (the MoGe-2 encoder)."""
        return self.encoder == MOGE2


MODEL_SPECS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("ppd-da2", IMAGE, DA2, "PPD with Depth-Anything-V2 semantics (official weights)",
              weights=("ppd", "depth_anything_v2_vitl")),
    ModelSpec("ppd-moge2", IMAGE, MOGE2, "PPD with MoGe-2 semantics: also metric depth and intrinsics "
              "(official weights)", weights=("ppd_moge", "moge2_vitl")),
    ModelSpec("ppd-demo", IMAGE, DA2, "small demo model trained on synthetic rooms, ships with the package "
              "(not for real cameras)", export_file="model/demo/ppd_demo.safetensors", native_area=96 * 64),
    ModelSpec("tiny-random", IMAGE, DA2, "tiny random network for tests: its depth means nothing",
              random_tiny=True),
    ModelSpec("ppvd", VIDEO, PI3, "PPVD video model with Pi3 semantics (official weights)",
              weights=("ppvd", "pi3"), native_area=VIDEO_WINDOW_SIZE ** 2),
    ModelSpec("tiny-random-video", VIDEO, PI3, "tiny random video network for tests: its depth means nothing",
              random_tiny=True, native_area=64 * 64),
)}

IMAGE_MODEL_NAMES = tuple(name for name, spec in MODEL_SPECS.items() if spec.mode == IMAGE)
VIDEO_MODEL_NAMES = tuple(name for name, spec in MODEL_SPECS.items() if spec.mode == VIDEO)
METRIC_MODEL_NAMES = tuple(name for name, spec in MODEL_SPECS.items() if spec.is_metric)


def is_export_path(name: str) -> bool:
    """Whether ``name`` names an exported model file (``ppd-train export``: NAME.safetensors with its
    NAME.json beside it) rather than a built-in model."""
    path = Path(name).expanduser()
    return path.suffix == ".safetensors" and path.is_file() and path.with_suffix(".json").is_file()


def model_spec(name: str) -> ModelSpec:
    """The spec of a built-in model name or of an exported model file (its metadata gives the
    native inference area and the semantic encoder family); ``ValueError`` otherwise."""
    spec = MODEL_SPECS.get(name)
    if spec is not None:
        return spec
    if is_export_path(name):
        from ppd_ros.nets.exported import read_export_metadata

        metadata = read_export_metadata(name)
        return ModelSpec(name, IMAGE, metadata.encoder_family, f"exported model {Path(name).name}",
                         export_file=str(Path(name).expanduser().resolve()),
                         native_area=metadata.native_area or INFERENCE_AREA)
    hint = (" (an exported model is a .safetensors file with its .json beside it)"
            if name.endswith((".safetensors", ".json")) or "/" in name else "")
    raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_SPECS)}, or the path of an "
                     f"exported model{hint}")
