"""Training test helpers: tiny run configs and observers loaded by class_path from them.

:func:`tiny_run_config` writes the YAML of a small CPU run. :class:`RecordTraining` appends one JSON
line per event to ``<out_dir>/rank<R>.jsonl``: the start
(global step, pid, parameter digest), every training batch (global step, sample names) and the
end (global step, parameter digest). :class:`RecordingCheckpointIO` writes checkpoints like
Lightning's default and appends the writing process id to ``<out_dir>/checkpoint_writes.jsonl``.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ppd_ros.backends.torch_networks import TINY_DIT, TINY_ENCODER

TINY_MODEL = dict(dit=dict(TINY_DIT), encoder=dict(embed_dim=TINY_ENCODER.embed_dim, depth=TINY_ENCODER.depth,
                                                   num_heads=TINY_ENCODER.num_heads))


def tiny_run_config(tmp_path: Path, max_steps: int, num_samples: int = 4, model: dict | None = None,
                    trainer: dict | None = None, data: dict | None = None) -> tuple[Path, Path]:
    """(config path, run root) of a CPU run on synthetic frames cropped to 64x48, batch 2, that
    checkpoints every 2 steps into <root>/checkpoints and records into <tmp_path>/probe."""
    root = tmp_path / "run"
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = {
        "seed_everything": 3,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "precision": "bf16-mixed", "max_steps": max_steps,
            "limit_val_batches": 1, "num_sanity_val_steps": 0, "log_every_n_steps": 1,
            "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": str(root),
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": str(root), "name": "tb"}},
            "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                           "init_args": {"dirpath": str(root / "checkpoints"), "save_last": True,
                                         "every_n_train_steps": 2, "save_top_k": -1}},
                          {"class_path": "training_helpers.RecordTraining",
                           "init_args": {"out_dir": str(tmp_path / "probe")}}],
            **(trainer or {}),
        },
        "model": model or {**TINY_MODEL, "stage": "finetune", "lr": 1e-3, "val_steps": 2, "log_images": 1},
        "data": data or {
            "batch_size": 2, "num_workers": 0,
            "train": [{"format": "synthetic", "num_samples": num_samples, "width": 80, "height": 60,
                       "size": [64, 48], "resize": "cover_crop"}],
            "val": [{"format": "synthetic", "num_samples": 1, "width": 64, "height": 48, "scene_seed": 100}],
        },
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, root


def parameter_digest(module) -> str:
    digest = hashlib.sha256()
    for name, parameter in module.named_parameters():
        digest.update(name.encode())
        digest.update(parameter.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as stream:
        stream.write(json.dumps(record) + "\n")


class RecordTraining(Callback):
    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)

    def _write(self, trainer, record: dict) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _append(self.out_dir / f"rank{trainer.global_rank}.jsonl", record)

    def on_train_start(self, trainer, pl_module):
        self._write(trainer, {"event": "start", "step": trainer.global_step, "pid": os.getpid(),
                              "world_size": trainer.world_size, "digest": parameter_digest(pl_module)})

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._write(trainer, {"event": "batch", "step": trainer.global_step, "names": list(batch["name"])})

    def on_train_end(self, trainer, pl_module):
        self._write(trainer, {"event": "end", "step": trainer.global_step, "digest": parameter_digest(pl_module)})


class RecordingCheckpointIO(TorchCheckpointIO):
    def __init__(self, out_dir: str):
        super().__init__()
        self.out_dir = Path(out_dir)

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _append(self.out_dir / "checkpoint_writes.jsonl", {"pid": os.getpid(), "path": str(path)})
        super().save_checkpoint(checkpoint, path, storage_options)


def read_records(out_dir: str | Path, rank: int = 0, event: str | None = None) -> list[dict]:
    """The records of one rank (of one ``event`` kind when given), in order."""
    path = Path(out_dir) / f"rank{rank}.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return [r for r in records if event is None or r["event"] == event]
