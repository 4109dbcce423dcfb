"""Exported models as model files (metadata, native size, encoder family, old formats) and MoGe-2
semantics in training, with the golden tiny MoGe-2 and DINOv2 weights; wrong pairings refused."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import REPO, load_golden

pytest.importorskip("lightning")

from training_helpers import TINY_MODEL, tiny_run_config  # noqa: E402

from ppd_ros.backends.base import BackendOptions  # noqa: E402
from ppd_ros.backends.torch_backend import TorchImageBackend  # noqa: E402
from ppd_ros.backends.torch_networks import TINY_DIT  # noqa: E402
from ppd_ros.model_specs import IMAGE, ModelSpec  # noqa: E402
from ppd_ros.nets.exported import EXPORT_FORMAT, ExportError, load_export, read_export_metadata  # noqa: E402

MOGE_WEIGHTS = ("encoder.", "neck.", "points_head.", "normal_head.", "mask_head.", "scale_head.")
MOGE_BACKBONE = {"embed_dim": 64, "depth": 4, "num_heads": 2}  # the golden's "dinov2_tiny14_golden"
SMALL_DIT = {"hidden_size": 32, "depth": 2, "num_heads": 2}
DEMO = REPO / "model" / "demo" / "ppd_demo.safetensors"


@pytest.fixture(scope="module")
def moge_golden():
    tensors, sidecar = load_golden("moge2_tiny")
    return {k: v for k, v in tensors.items() if k.startswith(MOGE_WEIGHTS)}, sidecar["config"]


@pytest.fixture(scope="module")
def moge_file(tmp_path_factory, moge_golden):
    """The golden tiny MoGe-2 as a MoGe model.pt ({model_config, model})."""
    weights, config = moge_golden
    path = tmp_path_factory.mktemp("moge") / "moge2_tiny.pt"
    torch.save({"model_config": config, "model": weights}, path)
    return path


@pytest.fixture(scope="module")
def da2_file(tmp_path_factory):
    """The golden tiny DINOv2 (DA2 layout, pretrained.*) as a .pth."""
    tensors, _ = load_golden("dinov2_tiny")
    path = tmp_path_factory.mktemp("da2") / "da2_tiny.pth"
    torch.save({k: v for k, v in tensors.items() if k.startswith("pretrained.")}, path)
    return path


def _moge_model(moge_file, **extra):
    return {"dit": dict(SMALL_DIT), "encoder": {"family": "moge2", **MOGE_BACKBONE},
            "encoder_weights": str(moge_file), "stage": "finetune", "lr": 1e-3, "val_steps": 1, **extra}


def test_moge2_semantics_train_export_and_load_as_metric_model(tmp_path, moge_file, moge_golden):
    from ppd_ros.nets.moge import MoGe2Model
    from ppd_ros.training.cli import main
    from ppd_ros.training.export import main as export_main
    from ppd_ros.training.module import load_training_checkpoint

    config, root = tiny_run_config(tmp_path, max_steps=2, model=_moge_model(moge_file))
    assert main(["fit", "--config", str(config)]) == 0
    last = root / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert not any(k.startswith("semantic_encoder.") for k in checkpoint["state_dict"])  # frozen: not stored
    assert checkpoint["ppd_ros"]["networks"]["encoder_family"] == "moge2"

    out = tmp_path / "moge_export.safetensors"
    assert export_main([str(last), str(out)]) == 0
    meta = read_export_metadata(out)
    weights, model_config = moge_golden
    assert meta.format == EXPORT_FORMAT and meta.encoder_family == "moge2" and meta.is_metric
    assert meta.encoder_weights == "embedded" and meta.moge_config == model_config
    assert meta.native_size == (48, 64) and meta.dit["semantic_dim"] == model_config["encoder"]["dim_out"]
    from safetensors.torch import load_file

    stored = load_file(str(out))
    for key, value in weights.items():  # the encoder stayed frozen and is embedded as loaded
        assert torch.equal(stored[f"sem_encoder.{key}"], value), key

    dit, encoder = load_export(out)
    assert isinstance(encoder, MoGe2Model)
    spec = ModelSpec("moge-export", IMAGE, meta.encoder_family, "exported", native_area=meta.native_area)
    backend = TorchImageBackend(dit, encoder, spec, BackendOptions(device="cpu", steps=1, seed=2))
    assert backend.is_metric and spec.is_metric
    rgb = (torch.rand(48, 64, 3, generator=torch.Generator().manual_seed(3)) * 255).to(torch.uint8).numpy()
    (output,) = backend.push(rgb, None)
    assert output.metric_depth is not None and output.metric_depth.shape == (48, 64)
    module = load_training_checkpoint(last).eval()
    image01 = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    torch.testing.assert_close(output.relative, module.predict_relative(image01, steps=1, seed=2)[0, 0],
                               atol=1e-6, rtol=0)


def _one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def test_wrong_encoder_family_is_refused_in_one_line(tmp_path, moge_file, da2_file):
    from ppd_ros.training.export import write_export
    from ppd_ros.training.module import PPDTrainingModule
    from ppd_ros.training.networks import ModelConfigError

    with pytest.raises(ExportError) as error:  # a MoGe-2 checkpoint as DA2 encoder weights
        PPDTrainingModule(**TINY_MODEL, encoder_weights=str(moge_file))
    assert "MoGe-2" in _one_line(error) and "not supported as Depth-Anything-V2" in str(error.value)
    with pytest.raises(ExportError) as error:  # a DA2 file as MoGe-2 weights
        PPDTrainingModule(dit=dict(SMALL_DIT), encoder="moge2", encoder_weights=str(da2_file))
    assert "not supported as MoGe-2" in _one_line(error)

    # ppd_moge.pth and ppd.pth have the same shapes: the file name tells the family
    dit_file = tmp_path / "ppd_moge.pth"
    torch.save({f"dit.{k}": v for k, v in PPDTrainingModule(**TINY_MODEL).dit.state_dict().items()}, dit_file)
    with pytest.raises(ModelConfigError) as error:
        PPDTrainingModule(dit=dict(TINY_DIT), encoder="da2", dit_weights=str(dit_file))
    assert "MoGe-2" in _one_line(error) and "does not pair" in str(error.value)
    with pytest.raises(ExportError) as error:  # its family decides, so DA2 encoder weights do not fit
        PPDTrainingModule(dit=dict(TINY_DIT), dit_weights=str(dit_file), encoder_weights=str(da2_file))
    _one_line(error)

    # an export records its family
    moge_module = PPDTrainingModule(**_moge_model(moge_file, stage="pretrain"))
    export = tmp_path / "moge.safetensors"
    write_export(export, moge_module.dit.state_dict(), moge_module.semantic_encoder.state_dict(),
                 {"dit": moge_module.dit_config, "semantic_encoder": {
                     "family": "moge2", "config": MOGE_BACKBONE, "weights": "embedded",
                     "moge_config": moge_module.semantic_encoder.config}})
    with pytest.raises(ModelConfigError) as error:
        PPDTrainingModule(encoder="da2", dit_weights=str(export))
    _one_line(error)
    assert PPDTrainingModule(dit_weights=str(export)).networks.encoder_family == "moge2"  # nothing else needed

    with pytest.raises(ModelConfigError) as error:
        PPDTrainingModule(**_moge_model(moge_file, train_encoder=True))
    assert "frozen" in _one_line(error)


def test_encoder_option_takes_a_family_name(tmp_path, capsys):
    from ppd_ros.training.cli import main

    config, _ = tiny_run_config(tmp_path, max_steps=1)
    assert main(["fit", "--config", str(config), "--model.encoder", "moge2"]) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "MoGe-2 semantics need model.encoder_weights" in message


def test_demo_export_metadata_and_format_1_exports(tmp_path):
    meta = read_export_metadata(DEMO)
    assert meta.format == EXPORT_FORMAT and meta.native_size == (64, 96) and meta.native_area == 96 * 64
    assert meta.encoder_family == "da2" and meta.encoder_weights == "embedded" and not meta.is_metric
    assert meta.dit == {"hidden_size": 256, "depth": 4, "num_heads": 4, "semantic_dim": 128}
    assert meta.global_step == 10000

    # a format-1 export (no family, no native size) still loads, as a DA2 model of unknown native size
    old = tmp_path / "old.safetensors"
    old.symlink_to(DEMO)
    v1 = json.loads(DEMO.with_suffix(".json").read_text())
    v1.update(format="ppd_ros.dit-export/1")
    del v1["native_size"], v1["semantic_encoder"]["family"]
    old.with_suffix(".json").write_text(json.dumps(v1))
    old_meta = read_export_metadata(old)
    assert old_meta.native_size is None and old_meta.native_area is None and old_meta.encoder_family == "da2"
    dit_old, _ = load_export(old)
    dit_demo, _ = load_export(DEMO)
    for name, value in dit_demo.state_dict().items():
        assert torch.equal(dit_old.state_dict()[name], value), name

    old.with_suffix(".json").write_text(json.dumps({**v1, "format": "ppd_ros.dit-export/9"}))
    with pytest.raises(ExportError, match="is not one of"):
        read_export_metadata(old)
    old.with_suffix(".json").unlink()
    with pytest.raises(ExportError, match="not an export"):
        read_export_metadata(old)
