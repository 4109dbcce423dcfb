"""Lightning module training the Pixel-Perfect Depth DiT with the official flow-matching recipe.

Per batch: GT depth -> normalised log-depth target x0 (official ``get_gt``); noise ~ N(0, 1);
t = round(1000 sigmoid(N(0, 1))) per sample; x_t = (1 - t/1000) x0 + (t/1000) noise; the DiT sees
[x_t | image - 0.5] with semantic tokens of the frozen encoder and predicts the velocity
noise - x0. Loss: MSE of the velocity over valid pixels, plus in the fine-tune stage
0.2 x the multi-scale gradient loss between the implied x0 = x_t - (t/1000) v and the target.

Validation samples depth with the same Euler sampler as inference, aligns it to log(depth + 1)
by least squares (scale, shift) over valid pixels, and reports AbsRel and delta1 in metres.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import lightning as L

from ppd_ros.colormap import depth_range_rgb, relative_depth_rgb
from ppd_ros.constants import MAX_DEPTH_M
from ppd_ros.evaluation.metrics import abs_rel, align_log_depth, delta1, gt_valid_mask
from ppd_ros.nets.exported import MOGE2
from ppd_ros.nets.flow import add_noise, convert_from_velocity, draw_training_timesteps, sample_depth, velocity_target
from ppd_ros.training.networks import (
    CHECKPOINT_RECORD, ModelConfigError, NetworkSpec, build_dit, build_encoder, encoder_width, require_weight_files,
    resolve_networks,
)
from ppd_ros.training.targets import multi_scale_gradient_loss, normalise_depth_target

STAGES = ("pretrain", "finetune")
GRAD_LOSS_WEIGHT = 0.2


def log_space_metrics(relative: torch.Tensor, depth: torch.Tensor, mask: torch.Tensor
                      ) -> tuple[float, float, np.ndarray]:
    """(AbsRel, delta1, aligned depth in metres) of one relative prediction (H, W) against metric GT.

    The evaluation protocol of :mod:`ppd_ros.evaluation.metrics`: least squares
    log(depth + 1) ~ a * relative + b over ``mask`` & valid GT below 80 m
    (:data:`~ppd_ros.constants.MAX_DEPTH_M`), metrics there (float64). NaN metrics when fewer
    than 2 valid pixels.
    """
    r = relative.detach().double().cpu().numpy()
    d = depth.detach().double().cpu().numpy()
    valid = gt_valid_mask(d, mask.detach().cpu().numpy(), max_depth=MAX_DEPTH_M)
    if int(valid.sum()) < 2:
        return float("nan"), float("nan"), np.full(d.shape, np.nan)
    aligned, _, _ = align_log_depth(r, d, valid)
    return abs_rel(aligned, d, valid), delta1(aligned, d, valid), aligned


class PPDTrainingModule(L.LightningModule):
    """Trains :class:`~ppd_ros.nets.dit.PixelDiT` (the node's network) on RGB-D batches.

    Args:
        dit: PixelDiT constructor arguments (None: the starting export's, else the released size).
            ``semantic_dim`` defaults to the encoder width.
        encoder: the semantic encoder: ``da2`` / ``moge2`` (None: the family the starting DiT
            pairs with, else DA2), or a mapping of DINOv2 sizes (``embed_dim``, ``depth``, ...;
            for MoGe-2 the backbone of its model_config) with an optional ``family``.
        encoder_weights: registry name or file of the encoder (``depth_anything_v2_vitl``,
            ``moge2_vitl``, a MoGe-2 ``model.pt``, an export); None: the one the starting DiT
            pairs with (the export's own, or the registry's for ppd / ppd_moge), else a random
            DA2 initialisation (tiny models).
        dit_weights: registry name or file the DiT starts from (``ppd``, ``ppd_moge``, an export).
        weights_dir: where registry names are read (default ``$PPD_WEIGHTS_DIR`` or the user cache).
        stage: ``pretrain`` (velocity loss only) or ``finetune`` (+ 0.2 x gradient loss).
        train_encoder: False (official: frozen encoder) or True (train a DA2-layout encoder
            jointly, e.g. tiny demo models without pretrained semantics). MoGe-2 stays frozen.
        lr, weight_decay, betas: AdamW (official: 1e-4, 0).
        val_steps: Euler steps of the validation sampler (official inference: 4).
        val_seed: seed of the validation noise (the same noise every validation run).
        log_images: how many validation samples to draw into TensorBoard each validation.
    """

    def __init__(
        self,
        dit: dict[str, Any] | None = None,
        encoder: str | dict[str, Any] | None = None,
        encoder_weights: str | None = None,
        dit_weights: str | None = None,
        weights_dir: str | None = None,
        stage: str = "pretrain",
        train_encoder: bool = False,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        val_steps: int = 4,
        val_seed: int = 0,
        log_images: int = 2,
    ):
        super().__init__()
        if stage not in STAGES:
            raise ModelConfigError(f"model.stage must be one of {STAGES}, got {stage!r}")
        self.save_hyperparameters()
        spec = resolve_networks(dit, encoder, encoder_weights, dit_weights, weights_dir)
        if train_encoder and spec.encoder_family == MOGE2:
            raise ModelConfigError("model.train_encoder: the MoGe-2 encoder stays frozen in training (as in the "
                                   "official recipe); set train_encoder false")
        require_weight_files(spec, weights_dir)
        self.semantic_encoder = build_encoder(spec, weights_dir)
        width = encoder_width(self.semantic_encoder)
        dit_config = {"semantic_dim": width, **spec.dit}
        if dit_config["semantic_dim"] != width:
            raise ModelConfigError(f"model.dit.semantic_dim {dit_config['semantic_dim']} != encoder width {width}")
        self.networks = NetworkSpec.from_dict({**spec.as_dict(), "dit": dit_config})
        self.dit_config = dit_config
        self.dit = build_dit(self.networks, weights_dir)
        self.semantic_encoder.requires_grad_(train_encoder)
        mask_token = getattr(getattr(self.semantic_encoder, "pretrained", None), "mask_token", None)
        if mask_token is not None:
            mask_token.requires_grad_(False)  # never used in a forward pass: DDP would refuse the unused parameter
        self.train_encoder = train_encoder
        self.train_size: tuple[int, int] | None = self.networks.native_size  # (h, w) of the training batches

    # --- training ------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        if not self.train_encoder:
            self.semantic_encoder.eval()  # frozen: no dropout / stochastic depth, ever
        return self

    def semantic_tokens(self, image: torch.Tensor) -> torch.Tensor:
        """(B, (H/16)*(W/16), semantic_dim) tokens of the encoder for images (B, 3, H, W) in [0, 1]."""
        if self.networks.encoder_family == MOGE2:
            return self.semantic_encoder.forward_semantics(image)
        return self.semantic_encoder(image)

    def semantics(self, image: torch.Tensor) -> torch.Tensor:
        if self.train_encoder:
            return self.semantic_tokens(image)
        with torch.no_grad():
            return self.semantic_tokens(image)

    def compute_losses(self, batch: dict[str, Any], generator: torch.Generator | None = None
                       ) -> dict[str, torch.Tensor]:
        """Loss terms of one batch (``loss`` is what is optimised)."""
        image = batch["image"]
        target, mask = normalise_depth_target(batch["depth"], batch["mask"])
        noise = torch.randn(target.shape, generator=generator, device=target.device, dtype=target.dtype)
        t = draw_training_timesteps(image.shape[0], generator=generator, device=image.device)
        x_t = add_noise(target, noise, t)
        velocity = self.dit(torch.cat([x_t, image - 0.5], dim=1), self.semantics(image), t).float()
        valid = mask.float()
        squared = F.mse_loss(velocity, velocity_target(target, noise), reduction="none")
        velocity_loss = (squared * valid).sum() / (valid.sum() + 1e-6)
        losses = {"velocity_loss": velocity_loss, "loss": velocity_loss}
        if self.hparams.stage == "finetune":
            x0_pred, _ = convert_from_velocity(velocity, x_t, t)
            grad_loss = multi_scale_gradient_loss(x0_pred[:, 0], target[:, 0], valid[:, 0])
            losses["grad_loss"] = grad_loss
            losses["loss"] = velocity_loss + GRAD_LOSS_WEIGHT * grad_loss
        return losses

    def training_step(self, batch, batch_idx):
        self.train_size = tuple(int(v) for v in batch["image"].shape[-2:])
        losses = self.compute_losses(batch)
        batch_size = batch["image"].shape[0]
        for key, value in losses.items():
            self.log(f"train/{key}", value, prog_bar=key == "loss", batch_size=batch_size, sync_dist=False)
        return losses["loss"]

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay,
                                 betas=tuple(self.hparams.betas))

    # --- validation ------------------------------------------------------------------------
    @torch.no_grad()
    def predict_relative(self, image: torch.Tensor, steps: int | None = None, seed: int | None = None
                         ) -> torch.Tensor:
        """Relative depth (N, 1, H, W) by the inference sampler, seeded noise (default val_seed)."""
        n, _, h, w = image.shape
        generator = torch.Generator().manual_seed(self.hparams.val_seed if seed is None else seed)
        noise = torch.randn((1, 1, h, w), generator=generator).expand(n, -1, -1, -1).to(image.device)
        return sample_depth(self.dit, image, self.semantic_tokens(image), steps=steps or self.hparams.val_steps,
                            noise=noise)

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        relative = self.predict_relative(batch["image"])
        abs_rels, deltas = [], []
        for i in range(relative.shape[0]):
            abs_rel, delta1, aligned = log_space_metrics(relative[i, 0], batch["depth"][i, 0], batch["mask"][i, 0])
            if np.isfinite(abs_rel):
                abs_rels.append(abs_rel)
                deltas.append(delta1)
            if batch_idx * relative.shape[0] + i < self.hparams.log_images:
                self._log_depth_images(batch, i, relative[i, 0], aligned, batch_idx * relative.shape[0] + i,
                                       dataloader_idx)
        if abs_rels:
            suffix = f"/{dataloader_idx}" if dataloader_idx else ""
            self.log(f"val/abs_rel{suffix}", float(np.mean(abs_rels)), batch_size=len(abs_rels), sync_dist=True,
                     add_dataloader_idx=False, prog_bar=True)
            self.log(f"val/delta1{suffix}", float(np.mean(deltas)), batch_size=len(deltas), sync_dist=True,
                     add_dataloader_idx=False)

    def _log_depth_images(self, batch, i: int, relative: torch.Tensor, aligned: np.ndarray, index: int,
                          dataloader_idx: int) -> None:
        writer = getattr(self.logger, "experiment", None)
        if writer is None or not hasattr(writer, "add_image"):
            return
        tag = f"val{dataloader_idx}/{index}"
        mask = batch["mask"][i, 0].detach().cpu().numpy()
        gt = np.where(mask, batch["depth"][i, 0].detach().float().cpu().numpy(), np.nan)
        low, high = (float(np.nanmin(gt)), float(np.nanmax(gt))) if mask.any() else (0.0, 1.0)
        image = (batch["image"][i].detach().float().cpu().clamp(0, 1) * 255).to(torch.uint8).numpy()
        writer.add_image(f"{tag}/image", image, self.global_step)
        # GT and aligned prediction on one metric scale; the relative prediction on its own range
        for name, rgb in (("depth_gt", depth_range_rgb(gt, low, high)),
                          ("depth_pred_aligned", depth_range_rgb(aligned, low, high)),
                          ("depth_pred_relative", relative_depth_rgb(relative.detach().float().cpu().numpy()))):
            writer.add_image(f"{tag}/{name}", rgb, self.global_step, dataformats="HWC")

    # --- checkpoints -----------------------------------------------------------------------
    def encoder_dropped_from_checkpoints(self) -> bool:
        """A frozen encoder read from a file is rebuilt from it; checkpoints stay small (ViT-L is 1.2 GB)."""
        return not self.train_encoder and self.networks.encoder_weights is not None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.encoder_dropped_from_checkpoints():
            state = checkpoint["state_dict"]
            for key in [k for k in state if k.startswith("semantic_encoder.")]:
                del state[key]
            checkpoint["frozen_encoder_dropped"] = True
        checkpoint[CHECKPOINT_RECORD] = {
            "networks": self.networks.as_dict(),
            "train_size": None if self.train_size is None else list(self.train_size),
            "train_encoder": bool(self.train_encoder),
            "moge_config": getattr(self.semantic_encoder, "config", None),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get("frozen_encoder_dropped"):
            state = checkpoint["state_dict"]
            for key, value in self.semantic_encoder.state_dict().items():
                state.setdefault(f"semantic_encoder.{key}", value)
        size = checkpoint.get(CHECKPOINT_RECORD, {}).get("train_size")
        if size is not None:
            self.train_size = tuple(size)


def load_training_checkpoint(path: str | Path) -> PPDTrainingModule:
    """The module of a ``ppd-train`` Lightning checkpoint, rebuilt from its hyper-parameters and
    loaded from its state dict. The checkpoint is read with ``weights_only=True``
    (:func:`~ppd_ros.training.safe_load.read_training_checkpoint`): nothing in it can run code."""
    from ppd_ros.training.safe_load import read_training_checkpoint

    checkpoint = read_training_checkpoint(path)
    # LightningCLI adds private entries (``_instantiator``) that are no constructor arguments
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    module = PPDTrainingModule(**hparams)
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])
    return module


__all__ = ["CHECKPOINT_RECORD", "GRAD_LOSS_WEIGHT", "PPDTrainingModule", "load_training_checkpoint",
           "log_space_metrics"]
