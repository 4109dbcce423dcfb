"""DDP as users start it: `ppd-train fit` with Lightning's DDP strategy, two CPU processes over gloo
(the code path NCCL takes on GPUs), a tiny model whose DA2 encoder trains jointly (its unused
mask token used to crash DDP), then a resume from the last checkpoint."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning")

from training_helpers import read_records, tiny_run_config  # noqa: E402

TEST_DIR = Path(__file__).resolve().parent
NUM_SAMPLES, BATCH, WORLD = 16, 2, 2  # 4 steps per epoch


def _config(tmp_path: Path) -> Path:
    probe = str(tmp_path / "probe")
    path, _ = tiny_run_config(
        tmp_path, max_steps=2,
        trainer={"devices": WORLD, "strategy": "ddp", "precision": "32-true", "limit_val_batches": 0,
                 "plugins": [{"class_path": "training_helpers.RecordingCheckpointIO",
                              "init_args": {"out_dir": probe}}]},
        model={"dit": {"hidden_size": 32, "depth": 2, "num_heads": 2, "semantic_dim": 32},
               "encoder": {"embed_dim": 32, "depth": 1, "num_heads": 2}, "train_encoder": True, "stage": "finetune",
               "lr": 1e-3},
        data={"batch_size": BATCH, "num_workers": 0,
              "train": [{"format": "synthetic", "num_samples": 4, "width": 32, "height": 32, "scene_seed": 500}]})
    return path


def _fit(config: Path, *extra: str) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TEST_DIR), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    # the list-entry override is part of the test: the config says 4 samples
    command = [sys.executable, "-m", "ppd_ros.training.cli", "fit", "--config", str(config),
               "--data.train.0.num_samples", str(NUM_SAMPLES), *extra]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]


def test_ddp_two_processes_shards_sync_rank0_writes_and_resume_continues(tmp_path):
    config = _config(tmp_path)
    probe, root = tmp_path / "probe", tmp_path / "run"
    _fit(config)
    _fit(config, "--trainer.max_steps", "4", "--ckpt_path", "last")

    starts = [read_records(probe, rank, "start") for rank in range(WORLD)]
    ends = [read_records(probe, rank, "end") for rank in range(WORLD)]
    batches = [read_records(probe, rank, "batch") for rank in range(WORLD)]
    assert all(len(s) == 2 and s[0]["world_size"] == WORLD for s in starts)  # two runs, two ranks each
    assert [s["step"] for s in starts[0]] == [0, 2]  # the resumed run continues the step count

    # disjoint shards per step, and over both runs every sample exactly once: no batch replayed
    seen = []
    for step in range(4):
        per_rank = [[name for r in records if r["step"] == step for name in r["names"]] for records in batches]
        assert all(len(names) == BATCH for names in per_rank), (step, per_rank)
        assert not set(per_rank[0]) & set(per_rank[1]), (step, per_rank)
        seen += per_rank[0] + per_rank[1]
    assert sorted(seen) == sorted(f"synthetic:{500 + i}" for i in range(NUM_SAMPLES))

    # both ranks hold the same parameters after each run, and training changed them
    for run in range(2):
        assert ends[0][run]["digest"] == ends[1][run]["digest"]
        assert ends[0][run]["digest"] != starts[0][run]["digest"]
    assert starts[0][1]["digest"] == ends[0][0]["digest"]  # the resume restored the saved parameters

    # only rank 0 writes: checkpoints through the checkpoint plugin, TensorBoard event files
    rank0_pids = {s["pid"] for s in starts[0]}
    writes = [json.loads(line) for line in (probe / "checkpoint_writes.jsonl").read_text().splitlines()]
    assert writes and {w["pid"] for w in writes} <= rank0_pids
    assert {Path(w["path"]).name for w in writes} >= {"epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt", "last.ckpt"}
    events = sorted((root / "tb").rglob("events.out.tfevents.*"))
    assert len(events) == 2  # one per run
    # events.out.tfevents.<time>.<host>.<pid>.<n>
    assert {int(path.name.rsplit(".", 2)[1]) for path in events} <= rank0_pids
