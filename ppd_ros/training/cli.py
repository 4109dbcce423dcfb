"""``ppd-train``: LightningCLI front for training, plus ``ppd-train export``.

    ppd-train fit --config training/pretrain_hypersim_512.yaml
    ppd-train fit --config training/finetune_mix_1024x768.yaml --ckpt_path last      # resume
    ppd-train fit --config ... --trainer.devices 8 --trainer.num_nodes 2               # DDP
    ppd-train export runs/x/checkpoints/last.ckpt model/my_model.safetensors

Any config value can be overridden on the command line (``--model.lr 5e-5``). Without CUDA a
``bf16-mixed`` / ``16-mixed`` precision from a config falls back to fp32 (CPU runs, tests).
"""
from __future__ import annotations

import sys

import torch
from lightning.pytorch.cli import LightningCLI

from ppd_ros.training.datasets import DepthDataModule
from ppd_ros.training.module import PPDTrainingModule

DEFAULT_SEED = 666  # the official recipe's seed


def _wants_cpu(trainer_config) -> bool:
    accelerator = str(trainer_config.get("accelerator", "auto"))
    return accelerator == "cpu" or (accelerator in ("auto", "None") and not torch.cuda.is_available())


class PPDTrainCLI(LightningCLI):
    """LightningCLI with the CPU precision fallback."""

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.get("trainer")
        if trainer is None:
            return
        precision = str(trainer.get("precision"))
        if _wants_cpu(trainer) and ("16" in precision and "mixed" in precision):
            print(f"ppd-train: no CUDA device, precision {precision} -> 32-true", file=sys.stderr)
            trainer["precision"] = "32-true"


def run_cli(args: list[str] | None = None, run: bool = True) -> PPDTrainCLI:
    """Build (and by default run) the CLI; ``args`` as on the command line (tests pass lists)."""
    return PPDTrainCLI(
        PPDTrainingModule,
        DepthDataModule,
        seed_everything_default=DEFAULT_SEED,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``ppd-train``."""
    words = sys.argv[1:] if argv is None else list(argv)
    if words and words[0] == "export":
        from ppd_ros.training.export import main as export_main

        return export_main(words[1:])
    run_cli(argv)  # None: LightningCLI reads sys.argv itself
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
