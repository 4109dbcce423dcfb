"""`ppd-train` as typed: the shipped configs, list-entry overrides, registry names for weights, and
checkpoints that try to run code when unpickled."""
from __future__ import annotations

import builtins
import shutil

import pytest
import torch
import yaml
from conftest import REPO

pytest.importorskip("lightning")

from training_helpers import tiny_run_config  # noqa: E402

from ppd_ros.training.cli import main  # noqa: E402

CONFIGS = sorted((REPO / "training").glob("*.yaml"))


def _printed_config(capsys, *args) -> dict:
    with pytest.raises(SystemExit) as stop:
        main(["fit", *args, "--print_config"])
    assert stop.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_parse(capsys, config):
    printed = _printed_config(capsys, "--config", str(config))
    assert printed["data"]["train"]
    weights = [printed["model"].get(k) for k in ("encoder_weights", "dit_weights")]
    assert not any(str(w).startswith("weights/") for w in weights)  # registry names, not cwd-relative guesses


def test_list_entry_overrides(capsys):
    config = str(REPO / "training" / "pretrain_hypersim_512.yaml")
    printed = _printed_config(capsys, "--config", config, "--data.train.0.root", "/data/hypersim",
                              "--data.val.0.split=test", "--data.train.0.size", "[256, 256]")
    train, val = printed["data"]["train"], printed["data"]["val"]
    assert len(train) == 1 and train[0]["root"] == "/data/hypersim" and train[0]["size"] == [256, 256]
    assert train[0]["split"] == "train" and val[0]["split"] == "test" and val[0]["root"] == "data/hypersim"
    assert not any(key.isdigit() for entry in train + val for key in entry)  # no stray '0' entries
    with pytest.raises(SystemExit, match=r"data.train has 1 entries"):
        main(["fit", "--config", config, "--data.train.1.root", "/x"])


def test_registry_names_resolve_in_the_weights_directory(tmp_path, monkeypatch, capsys):
    """finetune_robot.yaml's own header command: the weights are looked up where fetch-weights puts them."""
    monkeypatch.setenv("PPD_WEIGHTS_DIR", str(tmp_path))
    assert main(["fit", "--config", str(REPO / "training" / "finetune_robot.yaml")]) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"not found in {tmp_path}" in message and "ppd fetch-weights ppd" in message


def test_checkpoints_that_run_code_are_refused(tmp_path, capsys, monkeypatch):
    from ppd_ros.training.export import main as export_main
    from ppd_ros.training.module import load_training_checkpoint
    from ppd_ros.training.safe_load import UnsafeCheckpointError

    marker = tmp_path / "code_ran"

    class CreatesFile:  # unpickling it calls open(marker, "w")
        def __reduce__(self):
            return builtins.open, (str(marker), "w")

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "global_step": 1, "hyper_parameters": {}, "payload": CreatesFile()}, evil)
    torch.load(evil, weights_only=False)  # control: a full unpickle does run it
    assert marker.exists()
    marker.unlink()

    out = tmp_path / "out.safetensors"
    assert export_main([str(evil), str(out)]) == 2
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and "refused to load" in message and "open" in message, message
    with pytest.raises(UnsafeCheckpointError):
        load_training_checkpoint(evil)

    config, root = tiny_run_config(tmp_path, max_steps=1)
    assert main(["fit", "--config", str(config), "--ckpt_path", str(evil)]) == 2
    assert "refused to load" in capsys.readouterr().err.strip().splitlines()[-1]
    (root / "checkpoints").mkdir(parents=True)
    shutil.copy(evil, root / "checkpoints" / "last.ckpt")  # what `--ckpt_path last` resumes from
    # Lightning's resume passes our weights_only; without it, this variable would make torch unpickle all
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    assert main(["fit", "--config", str(config), "--ckpt_path", "last"]) == 2
    assert "refused to load" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not marker.exists() and not out.exists()
