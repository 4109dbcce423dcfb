"""Model spec -> torch networks: official checkpoints, exported models or tiny random ones."""
from __future__ import annotations

import torch

from ppd_ros.model_specs import MOGE2, ModelSpec
from ppd_ros.nets.dinov2 import DinoV2Config
from ppd_ros.nets.dit import PPD_DIT_FULL, PixelDiT, load_ppd_dit
from ppd_ros.nets.dit_video import PPVD_DIT_FULL, VideoDiT, load_ppvd, sincos_pos_table
from ppd_ros.nets.moge import load_moge2
from ppd_ros.nets.pi3 import PI3_FULL, Pi3Config, Pi3Semantics, load_pi3
from ppd_ros.nets.semantics import DA2_VITL, DA2SemanticEncoder, load_da2_semantic_encoder

TINY_DIT = dict(hidden_size=64, depth=4, num_heads=4, semantic_dim=64)
TINY_ENCODER = DinoV2Config(embed_dim=64, depth=2, num_heads=2)

TINY_VIDEO_SIZE = 64  # window side of the tiny video model (the released one is 512)
TINY_PI3 = Pi3Config(
    encoder=DinoV2Config(embed_dim=32, depth=1, num_heads=2, num_register_tokens=4,
                         pos_resize="antialiased_bicubic", with_mask_token=False),
    decoder_depth=2, decoder_heads=2)
TINY_VIDEO_DIT = dict(hidden_size=32, depth=24, num_heads=2, input_size=TINY_VIDEO_SIZE,
                      semantic_dim=2 * TINY_PI3.encoder.embed_dim)


def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Overwrite every parameter with seeded noise (tiny smoke models: zero-init would be constant;
    benchmarks: random full-size weights, drawn on the parameters' device)."""
    device = next(module.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=generator, device=device)
            if param.ndim >= 2:
                param.copy_(noise / param[0].numel() ** 0.5)
            elif "weight" in name:
                param.copy_(1.0 + 0.1 * noise)
            else:
                param.copy_(0.05 * noise)
    return module


def tiny_random_image_networks() -> tuple[PixelDiT, DA2SemanticEncoder]:
    """The seeded tiny DiT + DA2-style encoder of model ``tiny-random``."""
    return randomize_(PixelDiT(**TINY_DIT), seed=1), randomize_(DA2SemanticEncoder(TINY_ENCODER), seed=2)


def random_video_networks(pi3_config: Pi3Config, dit_config, seed: int = 0,
                          device: str | torch.device = "cpu") -> tuple[Pi3Semantics, VideoDiT]:
    """Seeded random Pi3 + video DiT built and drawn on ``device`` (the DiT keeps its fixed
    sin-cos position table)."""
    with torch.device(device):
        pi3 = randomize_(Pi3Semantics(pi3_config), seed=seed + 1).eval()
        dit = randomize_(VideoDiT(**dit_config), seed=seed + 2).eval()
    with torch.no_grad():  # randomize_ overwrote the frozen table
        dit.pos_embed.copy_(sincos_pos_table(dit.hidden_size, dit.grid16, dit.grid16)[None])
    return pi3, dit


def tiny_random_video_networks(seed: int = 0) -> tuple[Pi3Semantics, VideoDiT]:
    """Small seeded random Pi3 + video DiT (64x64 windows) of ``tiny-random-video``."""
    return random_video_networks(TINY_PI3, TINY_VIDEO_DIT, seed)


def full_size_image_networks(device: str | torch.device = "meta") -> tuple[PixelDiT, DA2SemanticEncoder]:
    """The full-size DiT and DA2 encoder (meta device by default: shapes only, no memory)."""
    with torch.device(device):
        return PixelDiT(**PPD_DIT_FULL), DA2SemanticEncoder(DA2_VITL)


def full_size_video_networks(device: str | torch.device, seed: int = 0) -> tuple[Pi3Semantics, VideoDiT]:
    """The released Pi3 semantics and video DiT sizes with seeded random weights (benchmarks)."""
    return random_video_networks(PI3_FULL, PPVD_DIT_FULL, seed, device)


def _weight_files(spec: ModelSpec, weights_dir) -> list:
    """Paths of the spec's registry files; one WeightsMissingError naming every missing one."""
    from ppd_ros.weights import WeightsMissingError, weights_path  # reads the YAML registry

    paths, missing = [], []
    for name in spec.weights:
        try:
            paths.append(weights_path(name, weights_dir))
        except WeightsMissingError as error:
            missing.append(str(error))
    if missing:
        raise WeightsMissingError("; ".join(missing))
    return paths


def load_image_networks(spec: ModelSpec, weights_dir=None, device: torch.device = torch.device("cpu"),
                        dtype: torch.dtype = torch.float32) -> tuple[PixelDiT, torch.nn.Module]:
    """(DiT, semantic encoder) of an image model spec on ``device``, in eval mode."""
    if spec.random_tiny:
        dit, encoder = tiny_random_image_networks()
        return dit.to(device=device, dtype=dtype).eval(), encoder.to(device=device, dtype=dtype).eval()
    if spec.export_file is not None:
        from ppd_ros.paths import share_dir
        from ppd_ros.nets.exported import load_export

        path = share_dir() / spec.export_file  # an absolute export_file stays as it is
        return load_export(path, weights_dir, device=device, dtype=dtype)
    dit_file, encoder_file = _weight_files(spec, weights_dir)
    dit = load_ppd_dit(dit_file, device=device, dtype=dtype)
    if spec.encoder == MOGE2:
        encoder = load_moge2(encoder_file, device=device, dtype=dtype)
    else:
        encoder = load_da2_semantic_encoder(encoder_file, device=device, dtype=dtype)
    return dit, encoder


def load_video_networks(spec: ModelSpec, weights_dir=None, device: torch.device = torch.device("cpu"),
                        dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[Pi3Semantics, VideoDiT]:
    """(Pi3 semantics, video DiT) of a video model spec on ``device``, in eval mode."""
    if spec.random_tiny:
        pi3, dit = tiny_random_video_networks(seed)
        return pi3.to(device=device, dtype=dtype), dit.to(device=device, dtype=dtype)
    dit_file, pi3_file = _weight_files(spec, weights_dir)
    dit = load_ppvd(dit_file, device=device, dtype=dtype, config=PPVD_DIT_FULL)
    pi3 = load_pi3(pi3_file, device=device, dtype=dtype, config=PI3_FULL)
    return pi3, dit
