"""MoGe-2 (monocular metric geometry): DINOv2 encoder, convolutional neck and heads.

Built from the ``model_config`` dict stored in the released ``model.pt`` (same field names as
the official ``MoGeModel`` constructor); parameter names equal the official state-dict keys
(``encoder.backbone.*``, ``encoder.output_projections.*``, ``neck.*``, ``points_head.*``,
``normal_head.*``, ``mask_head.*``, ``scale_head.*``, buffers ``encoder.image_mean/std``).

PPD's ``ppd_moge.pth`` uses the encoder output as its semantic tokens. One encoder pass can
serve both users: :meth:`MoGe2Model.encode` once, then :meth:`MoGe2Model.semantics` and
:meth:`MoGe2Model.decode` (see :meth:`MoGe2Model.semantics_and_geometry`).
"""
from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ppd_ros.nets.checkpoints import CheckpointError, load_strict
from ppd_ros.nets.dinov2 import DinoV2Config, DinoV2ViT
from ppd_ros.nets.moge_geometry import MetricGeometry, metric_geometry_from_outputs, normalized_view_plane_uv

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# DINOv2 hub names a MoGe config can ask for (no registers, DA2/MoGe position-table rule).
DINOV2_BACKBONES: dict[str, DinoV2Config] = {
    "dinov2_vits14": DinoV2Config(embed_dim=384, depth=12, num_heads=6),
    "dinov2_vitb14": DinoV2Config(embed_dim=768, depth=12, num_heads=12),
    "dinov2_vitl14": DinoV2Config(embed_dim=1024, depth=24, num_heads=16),
}

# The DiT's token grid is 16 px (semantic tokens: (H//16) x (W//16)).
DIT_GRID_PX = 16

def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope=0.2)
    if name == "silu":
        return nn.SiLU()
    if name == "elu":
        return nn.ELU()
    raise ValueError(f"unsupported activation {name!r}")


def _norm(name: str, channels: int) -> nn.Module:
    if name == "none":
        return nn.Identity()
    if name == "group_norm":
        return nn.GroupNorm(channels // 32, channels)
    if name == "layer_norm":
        return nn.GroupNorm(1, channels)
    if name == "instance_norm":
        return nn.InstanceNorm2d(channels)
    raise ValueError(f"unsupported norm {name!r}")


class ResidualConvBlock(nn.Module):
    """x + conv3x3(act(norm(conv3x3(act(norm(x)))))), replicate padding.

    ``layers`` indices follow the official block: 0 norm, 1 act, 2 conv, 3 norm, 4 act, 5 conv.
    """

    def __init__(self, channels: int, hidden: int, activation: str, in_norm: str, hidden_norm: str) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            _norm(in_norm, channels),
            _activation(activation),
            nn.Conv2d(channels, hidden, kernel_size=3, padding=1, padding_mode="replicate"),
            _norm(hidden_norm, hidden),
            _activation(activation),
            nn.Conv2d(hidden, channels, kernel_size=3, padding=1, padding_mode="replicate"),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class Resampler(nn.Sequential):
    """2x upsampling then a 3x3 conv (replicate padding).

    ``conv_transpose``: [ConvTranspose2d k2 s2, Conv2d]; ``bilinear`` / ``nearest``:
    [Upsample x2, Conv2d] (the Upsample holds no weights, so its keys start at ``.1``).
    """

    def __init__(self, in_channels: int, out_channels: int, kind: str) -> None:
        if kind == "conv_transpose":
            first: nn.Module = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
            conv_in = out_channels
        elif kind in ("bilinear", "nearest"):
            first = nn.Upsample(scale_factor=2, mode=kind, align_corners=False if kind == "bilinear" else None)
            conv_in = in_channels
        else:
            raise ValueError(f"unsupported resampler {kind!r}")
        super().__init__(first, nn.Conv2d(conv_in, out_channels, kernel_size=3, padding=1, padding_mode="replicate"))


def _per_level(value: Any, count: int) -> list:
    """A per-level list from a list or a single value repeated."""
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(f"expected {count} per-level values, got {list(value)}")
        return list(value)
    return [value] * count


class ConvStack(nn.Module):
    """Coarse-to-fine conv pyramid (MoGe's neck and heads).

    Level i: x (+)= input_blocks[i](in_i) (1x1 conv, or identity where ``dim_in[i]`` is None);
    x = res_blocks[i](x); out_i = output_blocks[i](x); x = resamplers[i](x) (2x up) before the
    next level. Inputs that are None are skipped (levels > 0).
    """

    def __init__(
        self,
        dim_in: Sequence[int | None] | int | None,
        dim_res_blocks: Sequence[int],
        dim_out: Sequence[int | None] | int | None,
        resamplers: Sequence[str] | str,
        dim_times_res_block_hidden: int = 1,
        num_res_blocks: Sequence[int] | int = 1,
        res_block_in_norm: str = "layer_norm",
        res_block_hidden_norm: str = "group_norm",
        activation: str = "relu",
    ) -> None:
        super().__init__()
        levels = len(dim_res_blocks)
        dims_in = _per_level(dim_in, levels)
        dims_out = _per_level(dim_out, levels)
        blocks_per_level = _per_level(num_res_blocks, levels)
        kinds = _per_level(resamplers, levels - 1)
        self.input_blocks = nn.ModuleList(
            nn.Conv2d(d_in, d, kernel_size=1) if d_in is not None else nn.Identity()
            for d_in, d in zip(dims_in, dim_res_blocks)
        )
        self.resamplers = nn.ModuleList(
            Resampler(d_prev, d_next, kind)
            for d_prev, d_next, kind in zip(dim_res_blocks[:-1], dim_res_blocks[1:], kinds)
        )
        self.res_blocks = nn.ModuleList(
            nn.Sequential(
                *(
                    ResidualConvBlock(d, dim_times_res_block_hidden * d, activation, res_block_in_norm,
                                      res_block_hidden_norm)
                    for _ in range(count)
                )
            )
            for d, count in zip(dim_res_blocks, blocks_per_level)
        )
        self.output_blocks = nn.ModuleList(
            nn.Conv2d(d, d_out, kernel_size=1) if d_out is not None else nn.Identity()
            for d_out, d in zip(dims_out, dim_res_blocks)
        )

    def forward(self, inputs: Sequence[torch.Tensor | None]) -> list[torch.Tensor]:
        outputs = []
        x = None
        for level in range(len(self.res_blocks)):
            if inputs[level] is not None:
                feature = self.input_blocks[level](inputs[level])
                x = feature if x is None else x + feature
            x = self.res_blocks[level](x)
            outputs.append(self.output_blocks[level](x))
            if level < len(self.res_blocks) - 1:
                x = self.resamplers[level](x)
        return outputs


class ScaleHead(nn.Sequential):
    """MLP Linear(d0,d1), ReLU, ..., Linear(d_{n-2}, d_{n-1}) (keys 0, 2, 4, ...)."""

    def __init__(self, dims: Sequence[int]) -> None:
        layers: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-2], dims[1:-1]):
            layers += [nn.Linear(d_in, d_out), nn.ReLU()]
        layers.append(nn.Linear(dims[-2], dims[-1]))
        super().__init__(*layers)


class EncodedImage(NamedTuple):
    """One encoder pass: projected features (B, dim_out, rows, cols), cls token of the last
    intermediate layer (B, E), and the size (H, W) of the image that was encoded."""

    features: torch.Tensor
    cls_token: torch.Tensor
    image_size: tuple[int, int]


class MoGe2Encoder(nn.Module):
    """DINOv2 backbone + one 1x1 projection per intermediate layer, summed.

    Image (B, 3, H, W) RGB in [0, 1] -> antialiased bilinear resize to (rows*14, cols*14) ->
    ImageNet normalisation -> intermediate block outputs through the final LayerNorm ->
    projected to ``dim_out`` and summed.
    """

    def __init__(self, backbone: DinoV2Config, intermediate_layers: Sequence[int] | int, dim_out: int) -> None:
        super().__init__()
        self.backbone = DinoV2ViT.from_config(backbone)
        depth = len(self.backbone.blocks)
        if isinstance(intermediate_layers, int):  # "the last n blocks"
            intermediate_layers = list(range(depth - intermediate_layers, depth))
        self.intermediate_layers = list(intermediate_layers)
        self.output_projections = nn.ModuleList(
            nn.Conv2d(self.backbone.embed_dim, dim_out, kernel_size=1) for _ in self.intermediate_layers
        )
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor, rows: int, cols: int) -> EncodedImage:
        patch = self.backbone.patch_size
        resized = F.interpolate(image, (rows * patch, cols * patch), mode="bilinear", align_corners=False,
                                antialias=True)
        resized = (resized - self.image_mean) / self.image_std
        layer_outputs = self.backbone.intermediate_layers(resized, self.intermediate_layers)
        projected = [
            projection(output.patch_tokens.transpose(1, 2).unflatten(2, (rows, cols)).contiguous())
            for projection, output in zip(self.output_projections, layer_outputs)
        ]
        features = torch.stack(projected, dim=1).sum(dim=1)
        return EncodedImage(features, layer_outputs[-1].cls_token, (image.shape[-2], image.shape[-1]))


def token_grid(height: int, width: int, num_tokens: int) -> tuple[int, int]:
    """(rows, cols) of MoGe's base token grid for ``num_tokens`` at the image's aspect ratio.

    PPD's copy of MoGe floors (newer upstream MoGe rounds): rows = int(sqrt(n / aspect)),
    cols = int(sqrt(n * aspect)).
    """
    aspect_ratio = width / height
    return int((num_tokens / aspect_ratio) ** 0.5), int((num_tokens * aspect_ratio) ** 0.5)


def semantic_grid(height: int, width: int) -> tuple[int, int]:
    """(rows, cols) = (H // 16, W // 16), the DiT's semantic token grid."""
    rows, cols = height // DIT_GRID_PX, width // DIT_GRID_PX
    if rows < 1 or cols < 1:
        raise ValueError(f"image {height}x{width} is smaller than one {DIT_GRID_PX}-px token")
    return rows, cols


class MoGe2Model(nn.Module):
    """MoGe-2 built from its ``model_config`` dict.

    Args:
        model_config: the checkpoint's ``model_config`` (keys ``encoder``, ``neck``,
            ``points_head``, ``normal_head``, ``mask_head``, ``scale_head``, ``remap_output``,
            ``num_tokens_range``; heads are optional).
        backbone: DINOv2 size; default: looked up from ``model_config["encoder"]["backbone"]``
            in :data:`DINOV2_BACKBONES`.
    """

    HEADS = ("points_head", "normal_head", "mask_head")

    def __init__(self, model_config: Mapping[str, Any], backbone: DinoV2Config | None = None) -> None:
        super().__init__()
        config = copy.deepcopy(dict(model_config))
        self.config = config
        encoder = dict(config["encoder"])
        if backbone is None:
            name = encoder.get("backbone")
            if name not in DINOV2_BACKBONES:
                raise ValueError(f"unknown MoGe backbone {name!r}; known: {sorted(DINOV2_BACKBONES)}")
            backbone = DINOV2_BACKBONES[name]
        self.remap_output = config.get("remap_output", "linear")
        if self.remap_output not in ("linear", "sinh", "exp", "sinh_exp"):
            raise ValueError(f"unknown remap_output {self.remap_output!r}")
        self.num_tokens_range = tuple(config.get("num_tokens_range", (1200, 3600)))

        self.encoder = MoGe2Encoder(backbone, encoder["intermediate_layers"], encoder["dim_out"])
        self.neck = ConvStack(**config["neck"])
        for head in self.HEADS:
            if config.get(head) is not None:
                setattr(self, head, ConvStack(**config[head]))
        if config.get("scale_head") is not None:
            self.scale_head = ScaleHead(**config["scale_head"])

    @property
    def dim_out(self) -> int:
        """Width of the encoder features / semantic tokens (1024 for ViT-L)."""
        return self.encoder.output_projections[0].out_channels

    @property
    def unused_keys(self) -> tuple[str, ...]:
        """State-dict keys that inference never reads (may be absent from a checkpoint)."""
        return ("encoder.backbone.mask_token",)

    # --- one encoder pass, two consumers -------------------------------------------------

    def encode(self, image: torch.Tensor, rows: int, cols: int) -> EncodedImage:
        """Run the backbone once on image (B, 3, H, W) in [0, 1] at a rows x cols token grid."""
        return self.encoder(image, rows, cols)

    @staticmethod
    def semantics(encoded: EncodedImage) -> torch.Tensor:
        """Semantic tokens (B, rows*cols, dim_out), row-major, from an encoder pass."""
        return encoded.features.flatten(2).transpose(1, 2)

    def decode(self, encoded: EncodedImage) -> dict[str, torch.Tensor]:
        """Raw outputs from an encoder pass, at the encoded image's size: ``points`` (B, H, W, 3)
        remapped, ``normal`` (B, H, W, 3) unit, ``mask`` (B, H, W) probability, ``metric_scale`` (B,)
        (only the heads the model has)."""
        features, cls_token = encoded.features, encoded.cls_token
        height, width = encoded.image_size
        batch, _, rows, cols = features.shape
        aspect_ratio = width / height
        # Neck inputs per level (token grid x 1, 2, 4, ...): level 0 features + uv, then uv only.
        levels: list[torch.Tensor] = []
        for level in range(len(self.neck.res_blocks)):
            uv = normalized_view_plane_uv(
                cols * 2**level, rows * 2**level, aspect_ratio, dtype=features.dtype, device=features.device
            )
            uv = uv.permute(2, 0, 1)[None].expand(batch, -1, -1, -1)
            levels.append(torch.cat([features, uv], dim=1) if level == 0 else uv)
        neck_out = self.neck(levels)

        def head_output(head: str) -> torch.Tensor:
            """The head's finest level, resized to the image: (B, C, H, W)."""
            raw = getattr(self, head)(neck_out)[-1]
            return F.interpolate(raw, (height, width), mode="bilinear", align_corners=False, antialias=False)

        outputs: dict[str, torch.Tensor] = {}
        if hasattr(self, "points_head"):
            outputs["points"] = self._remap_points(head_output("points_head").permute(0, 2, 3, 1))
        if hasattr(self, "normal_head"):
            outputs["normal"] = F.normalize(head_output("normal_head").permute(0, 2, 3, 1), dim=-1)
        if hasattr(self, "mask_head"):
            outputs["mask"] = head_output("mask_head").squeeze(1).sigmoid()
        if hasattr(self, "scale_head"):
            outputs["metric_scale"] = self.scale_head(cls_token).squeeze(1).exp()
        return outputs

    def _remap_points(self, points: torch.Tensor) -> torch.Tensor:
        if self.remap_output == "linear":
            return points
        if self.remap_output == "sinh":
            return torch.sinh(points)
        xy, z = points.split([2, 1], dim=-1)
        if self.remap_output == "exp":
            z = torch.exp(z)
            return torch.cat([xy * z, z], dim=-1)
        return torch.cat([torch.sinh(xy), torch.exp(z)], dim=-1)  # sinh_exp

    # --- the official entry points -------------------------------------------------------

    def forward_semantics(self, image: torch.Tensor) -> torch.Tensor:
        """PPD's semantic tokens: image (B, 3, H, W) in [0, 1] -> (B, (H//16)*(W//16), dim_out)."""
        return self.semantics(self.encode(image, *semantic_grid(*image.shape[-2:])))

    def forward(self, image: torch.Tensor, num_tokens: int) -> dict[str, torch.Tensor]:
        """Raw outputs (see :meth:`decode`) with the token grid chosen by :func:`token_grid`."""
        return self.decode(self.encode(image, *token_grid(image.shape[-2], image.shape[-1], num_tokens)))

    def default_num_tokens(self, resolution_level: int = 9) -> int:
        """Token budget for a resolution level 0..9 (9 = the top of ``num_tokens_range``)."""
        low, high = self.num_tokens_range
        return int(low + (resolution_level / 9) * (high - low))

    @torch.inference_mode()
    def infer(
        self,
        image: torch.Tensor,
        num_tokens: int | None = None,
        resolution_level: int = 9,
        apply_mask: bool = True,
        autocast_dtype: torch.dtype | None = None,
    ) -> MetricGeometry:
        """Metric depth, validity mask and normalised intrinsics of image (B, 3, H, W) or (3, H, W).

        ``num_tokens`` None uses :meth:`default_num_tokens`. ``autocast_dtype`` (e.g.
        ``torch.float16``) runs the network under autocast; the official default does so with
        float16, the goldens use float32 (None). Post-processing is float32, see
        :func:`metric_geometry_from_outputs`. Unbatched input gives unbatched outputs.
        """
        unbatched = image.dim() == 3
        if unbatched:
            image = image[None]
        parameter = next(self.parameters())
        image = image.to(dtype=parameter.dtype, device=parameter.device)
        if num_tokens is None:
            num_tokens = self.default_num_tokens(resolution_level)
        with _autocast(parameter.device, autocast_dtype):
            outputs = self.forward(image, num_tokens)
        geometry = metric_geometry_from_outputs(outputs, apply_mask=apply_mask)
        return _squeeze_batch(geometry) if unbatched else geometry

    @torch.inference_mode()
    def semantics_and_geometry(
        self,
        image: torch.Tensor,
        apply_mask: bool = True,
        autocast_dtype: torch.dtype | None = None,
    ) -> tuple[torch.Tensor, MetricGeometry]:
        """One backbone pass on the semantic grid (H//16 x W//16) feeding both PPD's semantic
        tokens (B, rows*cols, dim_out) and MoGe's metric geometry at the image size.

        Equal to ``forward_semantics(image)`` and ``infer(image, num_tokens=n)`` for any ``n``
        whose :func:`token_grid` is the semantic grid. The tokens keep the autocast dtype.
        """
        parameter = next(self.parameters())
        image = image.to(dtype=parameter.dtype, device=parameter.device)
        with _autocast(parameter.device, autocast_dtype):
            encoded = self.encode(image, *semantic_grid(*image.shape[-2:]))
            outputs = self.decode(encoded)
        return self.semantics(encoded), metric_geometry_from_outputs(outputs, apply_mask=apply_mask)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on the device, or nothing when ``dtype`` is None."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _squeeze_batch(geometry: MetricGeometry) -> MetricGeometry:
    return MetricGeometry(*(None if value is None else value[0] for value in geometry))


# --- checkpoint loading ---------------------------------------------------------------------


def read_moge2_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a MoGe ``model.pt`` (``torch.load(weights_only=True)``) -> {"model_config", "model"}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MoGe-2 checkpoint not found: {path}")
    checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    _check_checkpoint_dict(checkpoint, str(path))
    return checkpoint


def _check_checkpoint_dict(checkpoint: Any, source: str) -> None:
    if not isinstance(checkpoint, Mapping) or "model_config" not in checkpoint or "model" not in checkpoint:
        found = sorted(checkpoint) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise CheckpointError(f"{source}: expected a MoGe checkpoint dict with 'model_config' and 'model', "
                              f"found {found}")


def load_moge2(
    source: str | Path | Mapping[str, Any],
    backbone: DinoV2Config | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> MoGe2Model:
    """Build MoGe-2 from a checkpoint's own ``model_config`` and load its ``model`` strictly.

    ``source``: path to ``model.pt`` or the loaded dict {"model_config", "model"}. Every key of
    the built model must be present with its shape (``encoder.backbone.mask_token`` may be
    absent) and no other key may exist; :class:`CheckpointError` names each mismatch.
    ``backbone`` overrides the DINOv2 size looked up from the config's backbone name.
    Returns the model in eval mode on ``device`` / ``dtype``.
    """
    if isinstance(source, (str, Path)):
        checkpoint, name = read_moge2_checkpoint(source), str(source)
    else:
        checkpoint, name = source, "MoGe-2 checkpoint"
        _check_checkpoint_dict(checkpoint, name)
    with torch.device("meta"):
        model = MoGe2Model(checkpoint["model_config"], backbone=backbone)
    model = model.to_empty(device=device).to(dtype)
    load_strict(model, checkpoint["model"], source=name, ignore_missing=model.unused_keys)
    return model.eval()


__all__ = [
    "DINOV2_BACKBONES",
    "ConvStack",
    "EncodedImage",
    "MoGe2Encoder",
    "MoGe2Model",
    "MetricGeometry",
    "load_moge2",
    "read_moge2_checkpoint",
    "semantic_grid",
    "token_grid",
]
