"""ONNX export and the ONNX Runtime backend (CPU provider) against the goldens and the torch
backend, and the provider selection. The GPU providers cannot run here: only their selection is
tested."""
from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
import torch
from conftest import load_golden

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # torch.onnx.export(dynamo=True) needs it ([onnx] extra)

from ppd_ros import cli  # noqa: E402
from ppd_ros.backends import BackendOptions, create_backend  # noqa: E402
from ppd_ros.backends.onnx_export import export_image_model  # noqa: E402
from ppd_ros.backends.onnx_layout import DIT_FILE, ENCODER_FILE, METADATA_FILE  # noqa: E402
from ppd_ros.backends.onnxruntime_backend import (OnnxDiT, provider_options, select_providers)  # noqa: E402
from ppd_ros.model_specs import DA2, IMAGE, ModelSpec, model_spec  # noqa: E402
from ppd_ros.nets.dinov2 import DinoV2Config, resize_position_table  # noqa: E402
from ppd_ros.nets.dit import load_ppd_dit  # noqa: E402
from ppd_ros.nets.flow import sample_depth  # noqa: E402
from ppd_ros.nets.semantics import load_da2_semantic_encoder  # noqa: E402

DIT_ATOL, ENCODER_ATOL = 1e-4, 2e-4  # the goldens' tolerances (golden README 2)
CPU = ("cpu",)


@pytest.fixture(scope="module")
def golden_export(tmp_path_factory):
    """The golden tiny DiT and DA2 encoder, exported once: (folder, goldens)."""
    dit_tensors, dit_sidecar = load_golden("dit_tiny")
    encoder_tensors, encoder_sidecar = load_golden("dinov2_tiny")
    dit = load_ppd_dit({k: v for k, v in dit_tensors.items() if k.startswith("dit.")},
                       config=dict(hidden_size=64, depth=4, num_heads=4))
    encoder = load_da2_semantic_encoder({k: v for k, v in encoder_tensors.items() if k.startswith("pretrained.")},
                                        DinoV2Config(embed_dim=64, depth=2, num_heads=2))
    folder = tmp_path_factory.mktemp("golden_onnx")
    export_image_model(dit, encoder, folder, "golden-tiny")
    return folder, (dit_tensors, dit_sidecar), (encoder_tensors, encoder_sidecar)


def _session(path):
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_dit_graph_matches_golden_at_several_sizes(golden_export):
    folder, (tensors, sidecar), _ = golden_export
    dit = OnnxDiT(_session(folder / DIT_FILE))
    cases = [c for c in sidecar["calls"] if isinstance(c["timestep"], int)]  # the graph takes one shared timestep
    assert {tuple(c["x_shape"]) for c in cases} == {(2, 4, 64, 96), (1, 4, 48, 112)}  # batch and size vary
    for call in cases:
        size = "x".join(str(s) for s in call["x_shape"][:1] + call["x_shape"][2:])
        out = dit(tensors[f"input.x_{size}"], tensors[f"input.sem_{size}"], tensors[f"{call['name']}.timestep"])
        torch.testing.assert_close(out, tensors[call["out"]], atol=DIT_ATOL, rtol=0)


def test_encoder_graph_matches_golden(golden_export):
    folder, _, (tensors, sidecar) = golden_export
    session = _session(folder / ENCODER_FILE)
    metadata = json.loads((folder / METADATA_FILE).read_text())
    learned = torch.from_numpy(np.load(folder / metadata["position_table"]))
    for call in sidecar["calls"]:  # 64x96 .. 768x1024, batch 1 and 2, 37x37 grid without resize
        image = tensors[f"{call['name']}.image"]
        image = image.float() / 255 if image.dtype == torch.uint8 else image
        rows, cols = image.shape[-2] // 16, image.shape[-1] // 16
        table = resize_position_table(learned, rows, cols, metadata["encoder"]["pos_resize"]).numpy()
        (out,) = session.run(["semantics"], {"image": image.numpy(), "position_table": table})
        torch.testing.assert_close(torch.from_numpy(table), tensors[f"{call['name']}.pos_embed_used"], atol=1e-5,
                                   rtol=0)
        torch.testing.assert_close(torch.from_numpy(out), tensors[f"{call['name']}.out"], atol=ENCODER_ATOL, rtol=0)


@pytest.mark.parametrize("steps", [4, 1, 10])
def test_sampling_loop_over_the_dit_graph_matches_golden(golden_export, steps):
    folder = golden_export[0]
    tensors, sidecar = load_golden("ppd_sampling_tiny")
    run = next(r for r in sidecar["runs"] if r["steps"] == steps)
    depth = sample_depth(OnnxDiT(_session(folder / DIT_FILE)), tensors["image"], tensors["semantics"], steps=steps,
                         noise=tensors[f"steps{steps}.init_latent"])
    torch.testing.assert_close(depth, tensors[run["outputs"]], atol=DIT_ATOL, rtol=0)


def test_export_command_and_backend_match_torch(tmp_path, capsys):
    spec = model_spec("tiny-random")
    assert cli.main(["export-onnx", "--model", "tiny-random", "--output", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "dynamic batch/height/width" in printed and "max |depth difference|" in printed
    difference = float(printed.rsplit("max |depth difference|", 1)[1].split()[0])
    assert difference <= DIT_ATOL
    metadata = json.loads((tmp_path / METADATA_FILE).read_text())
    assert metadata["model"] == "tiny-random" and metadata["encoder"]["pos_resize"] == "scaled_bicubic"

    area = 96 * 64
    options = BackendOptions(device="cpu", steps=3, target_area=area, seed=5, onnx_providers=CPU,
                             onnx_dir=str(tmp_path))
    exported = create_backend(spec, options, backend="onnxruntime")
    reference = create_backend(spec, options, backend="torch")
    assert exported.providers == ["CPUExecutionProvider"] and not exported.streaming
    rng = np.random.default_rng(1)
    for height, width in ((120, 90), (60, 160)):  # two aspects: two inference sizes, one graph
        frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(2)]
        got = exported.predict_batch(frames, ["a", "b"])
        expected = reference.predict_batch(frames, ["a", "b"])
        assert [o.tag for o in got] == ["a", "b"] and got[0].input_size == (height, width)
        for ours, theirs in zip(got, expected):
            assert ours.size == theirs.size == reference.inference_size(height, width)
            torch.testing.assert_close(ours.relative, theirs.relative, atol=DIT_ATOL, rtol=0)


def test_backend_and_export_errors_are_clear(tmp_path, golden_export, capsys):
    spec = model_spec("tiny-random")
    with pytest.raises(FileNotFoundError, match="ppd export-onnx --model tiny-random"):
        create_backend(spec, BackendOptions(onnx_dir=str(tmp_path), onnx_providers=CPU), backend="onnxruntime")
    with pytest.raises(ValueError, match="holds an export of 'golden-tiny'"):
        create_backend(spec, BackendOptions(onnx_dir=str(golden_export[0]), onnx_providers=CPU),
                       backend="onnxruntime")
    for name in ("ppd-moge2", "tiny-random-video"):
        with pytest.raises(ValueError, match="use backend torch"):
            create_backend(model_spec(name), BackendOptions(onnx_providers=CPU), backend="onnxruntime")
    assert cli.main(["export-onnx", "--model", "ppd-moge2", "--output", str(tmp_path)]) == 2
    assert "not exported to ONNX" in capsys.readouterr().err
    golden_spec = ModelSpec("golden-tiny", IMAGE, DA2, "golden weights")
    backend = create_backend(golden_spec, BackendOptions(onnx_dir=str(golden_export[0]), onnx_providers=CPU),
                             backend="onnxruntime")
    with pytest.raises(ValueError, match="uint8 RGB frames"):
        backend.predict_batch([np.zeros((32, 32, 3), np.float32)], [0])


def test_provider_selection_keeps_order_and_warns_once(caplog):
    everything = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    with caplog.at_level(logging.WARNING):
        assert select_providers(("tensorrt", "cuda", "cpu"), everything) == everything
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        chosen = select_providers(("tensorrt", "cuda", "cpu"), ["CPUExecutionProvider", "AzureExecutionProvider"])
    assert chosen == ["CPUExecutionProvider"]
    assert len(caplog.records) == 1
    assert "TensorrtExecutionProvider, CUDAExecutionProvider" in caplog.records[0].getMessage()
    assert select_providers(("cpu", "CUDAExecutionProvider", "cuda"), everything) == [
        "CPUExecutionProvider", "CUDAExecutionProvider"]  # order as asked, duplicates once
    with pytest.raises(ValueError, match="available: CPUExecutionProvider.*onnxruntime-gpu"):
        select_providers(("tensorrt", "cuda"), ["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="unknown ONNX Runtime provider 'directml'"):
        select_providers(("directml",), everything)
    # this machine's onnxruntime: the CPU provider is always there, the default list falls back to it
    assert select_providers(BackendOptions().onnx_providers, onnxruntime.get_available_providers())[-1] == \
        "CPUExecutionProvider"


def test_provider_options_follow_the_documented_keys(tmp_path):
    trt = provider_options("TensorrtExecutionProvider", 1, tmp_path)
    assert trt == {"device_id": 1, "trt_fp16_enable": True, "trt_engine_cache_enable": True,
                   "trt_engine_cache_path": str(tmp_path)}
    assert provider_options("CUDAExecutionProvider", 0, tmp_path) == {"device_id": 0}
    assert provider_options("CPUExecutionProvider", 0, tmp_path) == {}


def test_tools_and_node_configuration_select_the_onnx_backend(tmp_path):
    """ppd infer flags and the node's parameters (eval-bag, the node) pick the exported model."""
    from ppd_ros.backends import backend_for
    from ppd_ros.parameters import config_with

    assert cli.main(["export-onnx", "--model", "tiny-random", "--output", str(tmp_path)]) == 0
    area, rng = 96 * 64, np.random.default_rng(2)
    reference = create_backend(model_spec("tiny-random"), BackendOptions(device="cpu", steps=3, target_area=area,
                                                                         seed=5))
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), rng.integers(0, 256, (60, 90, 3), dtype=np.uint8))
    assert cli.main(["infer", str(image), "--model", "tiny-random", "--target-area", str(area), "--steps", "3",
                     "--seed", "5", "--device", "cpu", "--backend", "onnxruntime", "--onnx-providers", "cpu",
                     "--onnx-dir", str(tmp_path), "--output", str(tmp_path / "out"), "--output-size", "inference"]) == 0
    written = np.load(tmp_path / "out" / "frame_depth_tiny-random.npy")
    rgb = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
    np.testing.assert_allclose(written, reference.push(rgb, None)[0].relative.numpy(), atol=DIT_ATOL, rtol=0)
    config = config_with({"model": "tiny-random", "backend": "onnxruntime", "onnx_providers": ["cpu"],
                          "onnx_dir": str(tmp_path), "device": "cpu"})
    backend = backend_for(config)
    assert type(backend).__name__ == "OnnxImageBackend" and backend.providers == ["CPUExecutionProvider"]
