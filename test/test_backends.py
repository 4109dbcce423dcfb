"""The torch backend behind the DepthBackend protocol: image models (batches, determinism,
MoGe-2's one-pass metric geometry) and the PPVD stream (order, tags, latency, resets, several
streams on one copy of the networks), with tiny networks on the CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ppd_ros.backends import BackendOptions, create_backend
from ppd_ros.backends.torch_backend import TorchImageBackend
from ppd_ros.backends.torch_networks import TINY_DIT, full_size_image_networks, randomize_
from ppd_ros.model_specs import MODEL_SPECS, model_spec
from ppd_ros.preprocess import inference_size
from ppd_ros.video import VideoDepthStream
from ppd_ros.weights import WeightsMissingError

AREA = 96 * 64


def _image(height=120, width=90, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _frames(count: int, height: int = 40, width: int = 56, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


@pytest.fixture(scope="module")
def image_backend():
    return create_backend(model_spec("tiny-random"), BackendOptions(device="cpu", steps=2, target_area=AREA, seed=3))


def _video(stride: int):
    return create_backend(model_spec("tiny-random-video"), BackendOptions(device="cpu", steps=1, video_stride=stride))


# --- image models ------------------------------------------------------------------------------

def test_image_output_geometry_and_determinism(image_backend):
    rgb = _image()
    (first,) = image_backend.predict_batch([rgb], ["a"])
    assert first.tag == "a" and first.size == inference_size(120, 90, AREA) and first.input_size == (120, 90)
    assert first.relative.dtype == torch.float32 and torch.isfinite(first.relative).all()
    assert first.relative.std() > 0 and first.model_seconds > 0 and first.metric_depth is None
    # seeded noise: the same image gives the same depth, another image another depth
    assert torch.equal(image_backend.push(rgb, "b")[0].relative, first.relative)
    assert not torch.equal(image_backend.push(_image(seed=1), "c")[0].relative, first.relative)
    assert image_backend.flush() == [] and image_backend.pending() == 0


def test_batch_equals_single_frames(image_backend):
    frames = [_image(seed=s) for s in range(3)]
    batch = image_backend.predict_batch(frames, [0, 1, 2])
    assert [o.tag for o in batch] == [0, 1, 2]
    for frame, output in zip(frames, batch):
        torch.testing.assert_close(output.relative, image_backend.push(frame, None)[0].relative, atol=1e-5, rtol=0)


def test_bad_requests_are_clear(tmp_path, image_backend):
    with pytest.raises(ValueError, match="unknown model"):
        model_spec("ppd-large")
    with pytest.raises(ValueError, match="steps must be positive"):
        create_backend(model_spec("tiny-random"), BackendOptions(device="cpu", steps=0))
    with pytest.raises(ValueError, match="unknown backend"):
        create_backend(model_spec("tiny-random"), BackendOptions(device="cpu"), backend="tensorflow")
    with pytest.raises(WeightsMissingError, match="ppd fetch-weights ppd"):
        create_backend(model_spec("ppd-da2"), BackendOptions(device="cpu", weights_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="uint8 RGB frames"):
        image_backend.predict_batch([np.zeros((10, 10, 3), np.float32)], [0])
    with pytest.raises(ValueError, match="of one size"):
        image_backend.predict_batch([_image(), _image(60, 80)], [0, 1])


def test_full_size_networks_build_on_meta_device():
    dit, encoder = full_size_image_networks("meta")
    assert sum(p.numel() for p in dit.parameters()) == 499_842_112
    assert all(p.device.type == "meta" for p in encoder.parameters())


def test_specs_say_what_each_model_is():
    assert model_spec("ppd-moge2").is_metric and not model_spec("ppd-da2").is_metric
    assert model_spec("ppd-demo").native_area == 96 * 64 and model_spec("ppvd").native_area == 512 * 512
    assert {spec.mode for spec in MODEL_SPECS.values()} == {"image", "video"}


def test_moge2_gives_semantics_and_metric_depth_from_one_pass():
    """ppd-moge2 plumbing with the golden tiny MoGe-2 weights and a tiny random DiT."""
    from conftest import load_golden

    from ppd_ros.nets.dinov2 import DinoV2Config
    from ppd_ros.nets.dit import PixelDiT
    from ppd_ros.nets.moge import load_moge2

    tensors, sidecar = load_golden("moge2_tiny")
    heads = ("encoder.", "neck.", "points_head.", "normal_head.", "mask_head.", "scale_head.")
    moge = load_moge2({"model_config": sidecar["config"], "model": {k: v for k, v in tensors.items()
                                                                    if k.startswith(heads)}},
                      backbone=DinoV2Config(embed_dim=64, depth=4, num_heads=2))
    calls = []
    moge.encoder.backbone.blocks[0].register_forward_hook(lambda *args: calls.append(1))
    dit = randomize_(PixelDiT(**{**TINY_DIT, "semantic_dim": sidecar["config"]["encoder"]["dim_out"]}), seed=1)
    backend = TorchImageBackend(dit, moge, model_spec("ppd-moge2"), BackendOptions(device="cpu", steps=2,
                                                                                    target_area=AREA))
    assert backend.is_metric
    (output,) = backend.push(_image(), "frame")
    assert len(calls) == 1  # one backbone pass serves semantics and metric depth
    assert output.metric_depth.shape == output.size and output.metric_mask.shape == output.size
    assert output.intrinsics.shape == (3, 3)
    valid = output.metric_mask
    assert torch.isfinite(output.metric_depth[valid]).all() and (output.metric_depth[valid] > 0).all()


# --- video models ------------------------------------------------------------------------------

def _expected_emission_push(index: int, stride: int, pushed: int) -> int:
    """Push (0-based) after which frame ``index`` comes out: the first window runs once
    stride + 3 frames are in, later ones every ``stride`` frames; the rest at the flush."""
    first = stride + 2
    for push in range(index, pushed):
        if push == first or (push > first and (push - first) % stride == 0):
            return push
    return pushed - 1


@pytest.mark.parametrize("stride,count", [(1, 9), (4, 16), (13, 10)])
def test_stream_every_frame_once_in_order_with_tag_and_window_latency(stride, count):
    backend = _video(stride)
    emitted_at, outputs = {}, []
    for push, frame in enumerate(_frames(count, seed=stride)):
        for output in backend.push(frame, tag=("header", push)):
            emitted_at[output.tag[1]] = push
            outputs.append(output)
    flushed = backend.flush()
    outputs += flushed
    for output in flushed:
        emitted_at[output.tag[1]] = count - 1
    assert [o.tag for o in outputs] == [("header", i) for i in range(count)]
    assert backend.pending() == 0 and backend.flush() == []
    for output in outputs:
        index = output.tag[1]
        expected_push = _expected_emission_push(index, stride, count)
        assert emitted_at[index] == expected_push, index
        assert output.latency_frames == expected_push - index
        assert output.size == (64, 64) and output.input_size == (40, 56)  # the tiny model's window grid
        assert torch.isfinite(output.relative).all()
    steady = [o.latency_frames for o in outputs if o.tag[1] >= stride + 3]
    assert max(steady, default=0) <= backend.max_latency_frames
    assert max(o.latency_frames for o in outputs) <= backend.startup_latency_frames


def test_stream_output_equals_the_plain_stream():
    backend = _video(4)
    stream = VideoDepthStream(backend.semantics, backend.dit, stride=4, steps=1, noise=backend.seed)
    frames = _frames(9, seed=5)
    ours = [o for f in frames for o in backend.push(f, None)] + backend.flush()
    theirs = [o for f in frames for o in stream.push(f)] + stream.flush()
    assert len(ours) == len(theirs) == 9
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.relative, b.depth, atol=0, rtol=0)
    assert backend.throughput.windows == 2 and backend.throughput.seconds_per_window > 0  # 7 frames, then the flush


def test_streams_of_two_cameras_are_independent():
    backend = _video(4)
    front, rear = _frames(9, seed=5), _frames(9, 48, 64, seed=6)
    alone = _video(4)
    front_alone = [o for f in front for o in alone.push(f, None)] + alone.flush()
    got = {"front": [], "rear": []}
    for a, b in zip(front, rear):
        for key, frame in (("front", a), ("rear", b)):
            got[key] += backend.push(frame, key, stream=key)
    for key in got:
        got[key] += backend.flush(stream=key)
    assert [o.tag for o in got["front"]] == ["front"] * 9 and [o.tag for o in got["rear"]] == ["rear"] * 9
    for a, b in zip(got["front"], front_alone):  # interleaving another camera changes nothing
        torch.testing.assert_close(a.relative, b.relative, atol=0, rtol=0)


def test_size_change_flushes_then_restarts():
    backend = _video(4)
    small, large = _frames(5, 40, 56, seed=1), _frames(2, 48, 64, seed=2)
    assert [o for i, f in enumerate(small) for o in backend.push(f, f"s{i}")] == []  # 5 < 4 + 3 frames
    changed = backend.push(large[0], "l0")
    assert [o.tag for o in changed] == [f"s{i}" for i in range(5)]
    assert all(o.input_size == (40, 56) for o in changed)
    assert backend.resets() == {"size_change": 1}
    rest = backend.push(large[1], "l1") + backend.flush()
    assert [(o.tag, o.input_size) for o in rest] == [("l0", (48, 64)), ("l1", (48, 64))]


def test_reset_flushes_and_restarts_the_sequence():
    backend = _video(4)
    frames = _frames(8, seed=3)
    reference = [o for f in frames for o in backend.push(f, None)] + backend.flush()
    backend.reset(reason="test")
    for i, frame in enumerate(_frames(3, seed=9)):
        backend.push(frame, i)
    assert [o.tag for o in backend.reset(reason="time_gap")] == [0, 1, 2]
    again = [o for f in frames for o in backend.push(f, None)] + backend.flush()
    assert len(again) == 8
    for a, b in zip(again, reference):  # a new sequence, same seed: same depth
        torch.testing.assert_close(a.relative, b.relative, atol=0, rtol=0)
    assert backend.resets() == {"test": 1, "time_gap": 1}


def test_stream_rejects_bad_input_and_options(tmp_path):
    backend = _video(13)
    with pytest.raises(ValueError, match="uint8 RGB"):
        backend.push(np.zeros((8, 8, 3), dtype=np.float32), None)
    with pytest.raises(TypeError, match="video model"):
        backend.predict_batch([_image()], [0])
    with pytest.raises(ValueError, match="stride"):
        _video(14)
    with pytest.raises(ValueError, match="channel order"):
        create_backend(model_spec("tiny-random-video"), BackendOptions(device="cpu", video_channel_order="rbg"))
    with pytest.raises(WeightsMissingError) as error:
        create_backend(model_spec("ppvd"), BackendOptions(device="cpu", weights_dir=str(tmp_path)))
    assert "ppd fetch-weights ppvd" in str(error.value) and "ppd fetch-weights pi3" in str(error.value)


def test_bgr_channel_order_feeds_the_network_swapped_channels():
    rgb_backend = _video(13)
    bgr_backend = create_backend(model_spec("tiny-random-video"),
                                 BackendOptions(device="cpu", steps=1, video_channel_order="bgr"))
    frames = _frames(3, seed=4)
    swapped = [o for f in frames for o in bgr_backend.push(f, None)] + bgr_backend.flush()
    direct = [o for f in frames for o in rgb_backend.push(np.ascontiguousarray(f[..., ::-1]), None)]
    direct += rgb_backend.flush()
    for a, b in zip(swapped, direct):
        torch.testing.assert_close(a.relative, b.relative, atol=0, rtol=0)


def test_an_exported_model_file_is_a_model_everywhere(tmp_path):
    """A `ppd-train export` file works as a model name: its metadata gives area and encoder family."""
    from ppd_ros.nets.exported import read_export_metadata
    from ppd_ros.parameters import ParameterError, config_with
    from ppd_ros.paths import share_dir

    path = str(share_dir() / model_spec("ppd-demo").export_file)
    spec = model_spec(path)
    assert spec.native_area == model_spec("ppd-demo").native_area == read_export_metadata(path).native_area
    assert spec.mode == "image" and not spec.is_metric
    by_path = create_backend(spec, BackendOptions(device="cpu", steps=1))
    by_name = create_backend(model_spec("ppd-demo"), BackendOptions(device="cpu", steps=1))
    rgb = _image(64, 96)
    assert torch.equal(by_path.push(rgb, None)[0].relative, by_name.push(rgb, None)[0].relative)
    assert config_with({"model": path}).model == path
    with pytest.raises(ParameterError, match="nor the path of an exported model"):
        config_with({"model": str(tmp_path / "missing.safetensors")})
    with pytest.raises(ParameterError, match="needs a MoGe-2 model"):
        config_with({"model": path, "metric_source": "moge2"})
    with pytest.raises(ValueError, match="exported model"):
        model_spec(str(tmp_path / "missing.safetensors"))
