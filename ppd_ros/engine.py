"""Frame -> relative depth: the inference API shared by the CLI, the node and evaluation.

``DepthEstimator.create("ppd-da2").predict(rgb)`` resizes an RGB image to the inference size
(the area of 1024x768 at the image's aspect, sides multiples of 16), computes the semantic tokens
once, runs the Euler sampler of the pixel-space DiT and returns relative normalised log-depth at
the inference resolution, together with the geometry of the resize.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ppd_ros.device import resolve_device  # also imported from here by video_engine, bench, export
from ppd_ros.nets.dit import PPD_DIT_FULL, PixelDiT, load_ppd_dit
from ppd_ros.nets.flow import sample_depth
from ppd_ros.nets.dinov2 import DinoV2Config
from ppd_ros.nets.moge import MoGe2Model, load_moge2
from ppd_ros.nets.moge_geometry import MetricGeometry
from ppd_ros.nets.semantics import DA2_VITL, DA2SemanticEncoder, load_da2_semantic_encoder
from ppd_ros.preprocess import inference_size, resize_for_inference
from ppd_ros.weights import weights_path

DEFAULT_TARGET_AREA = 1024 * 768

# name -> (DiT weights, semantic-encoder weights) of model/weights.yaml; a str = an exported
# model shipped in the package's share directory (no download); None = random tiny weights
# (smoke runs only). ppd-moge2's encoder also yields metric depth and intrinsics.
MODELS: dict[str, tuple[str, str] | str | None] = {
    "ppd-da2": ("ppd", "depth_anything_v2_vitl"),
    "ppd-moge2": ("ppd_moge", "moge2_vitl"),
    "ppd-demo": "model/demo/ppd_demo.safetensors",
    "tiny-random": None,
}
MODEL_NAMES = tuple(MODELS)

TINY_DIT = dict(hidden_size=64, depth=4, num_heads=4, semantic_dim=64)
TINY_ENCODER = DinoV2Config(embed_dim=64, depth=2, num_heads=2)

# Inference area a model runs at when create() gets no target_area: the demo model was trained
# on 96x64 synthetic frames (model/demo/MODEL_CARD.md); the others on 1024x768.
NATIVE_TARGET_AREA = {"ppd-demo": 96 * 64}


@dataclass
class DepthPrediction:
    """One frame's result. ``depth`` is relative normalised log-depth at the inference size."""

    depth: torch.Tensor  # (h, w) float32 on the estimator's device
    input_size: tuple[int, int]  # (H, W) of the input image
    size: tuple[int, int]  # (h, w) of the inference resolution
    model: str
    steps: int
    seconds: float  # wall time in the model (semantics + sampling)
    metric: MetricGeometry | None = None  # MoGe-2 metric depth/mask/intrinsics at (h, w), unbatched

    def depth_numpy(self) -> np.ndarray:
        return self.depth.detach().float().cpu().numpy()


def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Overwrite every parameter with seeded noise (tiny smoke models: zero-init would be constant)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.ndim >= 2:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)
            elif "weight" in name:
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(0.05 * torch.randn(param.shape, generator=generator))
    return module


class DepthEstimator:
    """Pixel-Perfect Depth inference on single images or batches of one size."""

    def __init__(
        self,
        dit: PixelDiT,
        semantic_encoder: torch.nn.Module,
        model_name: str,
        device: str | torch.device = "auto",
        steps: int = 4,
        target_area: int = DEFAULT_TARGET_AREA,
        seed: int | None = 0,
    ):
        if steps <= 0:
            raise ValueError(f"steps must be positive, got {steps}")
        if target_area < 16 * 16:
            raise ValueError(f"target_area must be at least 256 pixels, got {target_area}")
        self.device = resolve_device(device)
        self.dit = dit.eval().to(self.device)
        self.semantic_encoder = semantic_encoder.eval().to(self.device)
        self.model_name = model_name
        self.steps = int(steps)
        self.target_area = int(target_area)
        self.seed = seed

    @classmethod
    def create(
        cls,
        model: str = "ppd-da2",
        weights_dir: str | Path | None = None,
        device: str | torch.device = "auto",
        steps: int = 4,
        target_area: int | None = None,
        seed: int | None = 0,
    ) -> "DepthEstimator":
        """Build a named model. ``target_area`` None: the model's native area
        (:data:`NATIVE_TARGET_AREA`, else 1024x768). Raises ``ValueError`` for an unknown name or
        bad steps and ``WeightsMissingError`` (naming ``ppd fetch-weights``) when official weights
        are absent."""
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; choose one of: {', '.join(MODEL_NAMES)}")
        if steps <= 0:
            raise ValueError(f"steps must be positive, got {steps}")
        files = MODELS[model]
        device = resolve_device(device)
        # bf16 weights on CUDA (half the memory, no per-step autocast casts); fp32 on CPU.
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        if target_area is None:
            target_area = NATIVE_TARGET_AREA.get(model, DEFAULT_TARGET_AREA)
        if isinstance(files, str):
            from ppd_ros.paths import share_dir
            from ppd_ros.training.export import load_export  # no Lightning import; only nets/

            dit, encoder = load_export(share_dir() / files, device=device, dtype=dtype)
        elif files is None:
            dit = randomize_(PixelDiT(**TINY_DIT), seed=1)
            encoder = randomize_(DA2SemanticEncoder(TINY_ENCODER), seed=2)
        else:
            dit_name, encoder_name = files
            dit_file = weights_path(dit_name, weights_dir)
            encoder_file = weights_path(encoder_name, weights_dir)
            dit = load_ppd_dit(dit_file, device=device, dtype=dtype)
            if encoder_name == "moge2_vitl":
                encoder = load_moge2(encoder_file, device=device, dtype=dtype)
            else:
                encoder = load_da2_semantic_encoder(encoder_file, device=device, dtype=dtype)
        return cls(dit, encoder, model, device, steps, target_area, seed)

    def inference_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) the model runs at for an input of (height, width)."""
        return inference_size(height, width, self.target_area)

    def _noise(self, batch: int, height: int, width: int) -> torch.Tensor:
        """Initial latent. Seeded: the same noise for every image, so an image's depth does not
        depend on what else is in the batch."""
        if self.seed is None:
            return torch.randn((batch, 1, height, width), device=self.device)
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        noise = torch.randn((1, 1, height, width), generator=generator)
        return noise.expand(batch, -1, -1, -1).to(self.device)

    @property
    def is_metric(self) -> bool:
        """Whether predictions carry metric depth (the MoGe-2 semantic encoder)."""
        return isinstance(self.semantic_encoder, MoGe2Model)

    def _semantics(self, image01: torch.Tensor) -> tuple[torch.Tensor, MetricGeometry | None]:
        """Semantic tokens and, for MoGe-2, metric geometry from the same encoder pass."""
        if isinstance(self.semantic_encoder, MoGe2Model):
            return self.semantic_encoder.semantics_and_geometry(image01)
        return self.semantic_encoder(image01), None

    @torch.inference_mode()
    def predict_batch(
        self, images: np.ndarray | torch.Tensor
    ) -> tuple[torch.Tensor, tuple[int, int], MetricGeometry | None]:
        """(B, H, W, 3) uint8 RGB -> ((B, h, w) relative depth on the device, (h, w), metric
        geometry or None)."""
        images = torch.as_tensor(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
            raise ValueError(
                f"expected uint8 RGB images of shape (B, H, W, 3), got {tuple(images.shape)} "
                f"{images.dtype}"
            )
        height, width = images.shape[1:3]
        h, w = self.inference_size(height, width)
        resized = np.stack([resize_for_inference(img, self.target_area) for img in images.cpu().numpy()])
        image01 = torch.from_numpy(resized).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")
        with autocast:
            semantics, metric = self._semantics(image01)
            depth = sample_depth(
                self.dit, image01, semantics, steps=self.steps, noise=self._noise(len(images), h, w)
            )
        return depth[:, 0].float(), (h, w), metric

    def predict(self, rgb: np.ndarray | torch.Tensor) -> DepthPrediction:
        """One (H, W, 3) uint8 RGB image -> :class:`DepthPrediction`."""
        rgb = torch.as_tensor(rgb)
        if rgb.ndim != 3:
            raise ValueError(f"expected one (H, W, 3) image, got shape {tuple(rgb.shape)}")
        start = time.perf_counter()
        depth, size, metric = self.predict_batch(rgb[None])
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return DepthPrediction(
            depth=depth[0],
            input_size=(int(rgb.shape[0]), int(rgb.shape[1])),
            size=size,
            model=self.model_name,
            steps=self.steps,
            seconds=time.perf_counter() - start,
            metric=None if metric is None else MetricGeometry(*(v if v is None else v[0] for v in metric)),
        )


def full_size_modules(device: str | torch.device = "meta") -> tuple[PixelDiT, DA2SemanticEncoder]:
    """The full-size DiT and DA2 encoder (meta device by default: shapes only, no memory)."""
    with torch.device(device):
        return PixelDiT(**PPD_DIT_FULL), DA2SemanticEncoder(DA2_VITL)
