"""Offline PPVD windowing / chaining against the official goldens, and the causal stream."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import load_golden

from ppd_ros.metric.alignment import least_squares_scale_shift
from ppd_ros.nets.dinov2 import DinoV2Config
from ppd_ros.nets.dit_video import VideoDiT
from ppd_ros.nets.pi3 import Pi3Config, Pi3Semantics
from ppd_ros.video import (
    VideoDepthStream,
    align_video_windows,
    infer_video,
    window_frame_ids,
)

SIZE = 64  # working size of the tiny models (the released one is 512)


# --- window layout and chaining goldens -------------------------------------------------------

@pytest.fixture(scope="module")
def windows_golden(golden_dir):
    return json.loads((golden_dir / "video_windows.json").read_text())


@pytest.fixture(scope="module")
def functions_golden():
    return load_golden("functions")


def test_window_frame_ids_match_official_layout(windows_golden):
    assert windows_golden["INFER_LEN"] == 16 and windows_golden["STRIDE"] == 13
    assert windows_golden["KEYFRAMES"] == [0, 8, 15]
    rows = windows_golden["rows"]
    assert len(rows) == 16
    for row in rows:
        ours = window_frame_ids(row["LEN"])
        if row["error"] is None:
            assert ours == row["windows_frame_ids"], row["LEN"]
            assert len(ours) * 13 + 3 == row["padded_len"]
        else:
            # the official code crashes on 1-3 frames; we run one window padded with the last frame
            assert row["LEN"] <= 3
            assert ours == [[min(i, row["LEN"] - 1) for i in range(16)]]


def test_window_frame_ids_rejects_empty_clip():
    with pytest.raises(ValueError):
        window_frame_ids(0)


def test_least_squares_scale_shift_matches_golden(functions_golden):
    tensors, sidecar = functions_golden
    results = {r["case"]: r for r in sidecar["groups"]["align_vda"]["compute_scale_and_shift_full"]["results"]}
    pred, target, mask = (tensors[f"align.ssf.{k}"].numpy() for k in ("prediction", "target", "mask"))
    cases = {
        "random": (pred, target, mask),
        "exact_affine": (pred, (np.float32(2.5) * pred - np.float32(0.3)).astype(np.float32), None),
        "empty_mask": (pred, target, np.zeros_like(mask)),
    }
    for name, args in cases.items():
        scale, shift = least_squares_scale_shift(*args)
        expected = results[name]
        assert scale == pytest.approx(expected["scale"], rel=1e-6, abs=1e-7), name
        assert shift == pytest.approx(expected["shift"], rel=1e-6, abs=1e-7), name
    assert least_squares_scale_shift(pred, target, np.zeros_like(mask)) == (1, 0)


def test_align_video_windows_matches_golden(functions_golden):
    tensors, sidecar = functions_golden
    windows = tensors["align.video.windows"]
    out = align_video_windows([windows[i] for i in range(3)])
    expected = tensors["align.video.out"].numpy()
    assert out.shape == expected.shape == (42, 6, 8)
    np.testing.assert_allclose(out, expected, atol=1e-6, rtol=0)
    # the first internal fit: window 1's keyframe slots against window 0's slots 0, 8, 15
    fits = sidecar["groups"]["align_vda"]["align_video_depth"]["internal_fits_scale_shift"]
    w0, w1 = windows[0, :, 0].numpy(), windows[1, :, 0].numpy()
    scale, shift = least_squares_scale_shift(w1[:3], np.stack([w0[0], w0[8], w0[15]]))
    assert (scale, shift) == pytest.approx(tuple(fits[0]), rel=1e-6)


# --- tiny real models for the pipeline and the stream ----------------------------------------

def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Seeded non-degenerate weights (the training init zeros the adaLN and output layers)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name == "pos_embed" and isinstance(module, VideoDiT):
                continue  # the fixed sin-cos table
            fan_in = param[0].numel() if param.ndim > 1 else 1
            scale = 1 / fan_in ** 0.5 if param.ndim > 1 else 0.1
            base = 1.0 if name.endswith(("norm1.weight", "norm2.weight", "norm.weight")) else 0.0
            param.copy_(base + scale * torch.randn(param.shape, generator=gen))


@pytest.fixture(scope="module")
def tiny_models():
    pi3 = Pi3Semantics(Pi3Config(
        encoder=DinoV2Config(embed_dim=32, depth=1, num_heads=2, num_register_tokens=4,
                             pos_resize="antialiased_bicubic", with_mask_token=False),
        decoder_depth=2, decoder_heads=2)).eval()
    dit = VideoDiT(hidden_size=32, depth=24, num_heads=2, input_size=SIZE, semantic_dim=pi3.out_dim).eval()
    _randomise(pi3, 1)
    _randomise(dit, 2)
    return pi3, dit


def _clip(num_frames: int, height: int = SIZE, width: int = SIZE, seed: int = 0) -> np.ndarray:
    """Smooth moving RGB pattern (T, H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 6.28, size=3)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    frames = []
    for t in range(num_frames):
        channels = [0.5 + 0.5 * np.sin(6 * xx + 3 * yy * (c + 1) + phase[c] + 0.3 * t) for c in range(3)]
        frames.append(np.stack(channels, axis=-1))
    return (np.stack(frames) * 255).round().astype(np.uint8)


def test_infer_video_runs_the_official_windows(tiny_models):
    pi3, dit = tiny_models
    num_frames = 30
    values = np.arange(1, num_frames + 1, dtype=np.float32) / 40  # frame i is the constant (i+1)/40
    frames = torch.from_numpy(values)[:, None, None, None].expand(num_frames, 3, 48, 80).contiguous()
    seen = []

    def semantics(window: torch.Tensor) -> torch.Tensor:
        seen.append([int(round(float(v) * 40)) - 1 for v in window[:, 0, 0, 0]])
        return pi3(window)

    depth = infer_video(frames, semantics, dit, steps=2)
    assert seen == window_frame_ids(num_frames)
    assert depth.shape == (num_frames, 48, 80) and depth.dtype == np.float32
    assert np.isfinite(depth).all()


@pytest.mark.parametrize("num_frames", [2, 17])
def test_stream_stride_13_equals_offline(tiny_models, num_frames):
    pi3, dit = tiny_models
    clip = _clip(num_frames)
    offline = infer_video(clip, pi3, dit, steps=2, noise=7)
    stream = VideoDepthStream(pi3, dit, stride=13, steps=2, noise=7)
    outputs = []
    for i, frame in enumerate(clip):
        outputs += stream.push(frame, tag=f"header{i}")
    outputs += stream.flush()
    assert [o.index for o in outputs] == list(range(num_frames))
    assert [o.tag for o in outputs] == [f"header{i}" for i in range(num_frames)]
    assert stream.windows_run == len(window_frame_ids(num_frames))
    np.testing.assert_allclose(np.stack([o.depth for o in outputs]), offline, atol=1e-5, rtol=0)


@pytest.mark.parametrize("stride", [1, 4])
def test_stream_small_stride_latency_and_order(tiny_models, stride):
    pi3, dit = tiny_models
    clip = _clip(14, seed=1)
    stream = VideoDepthStream(pi3, dit, stride=stride, steps=1, noise=3)
    emitted_at = {}
    for i, frame in enumerate(clip):
        for out in stream.push(frame, tag=i):
            assert out.tag == out.index
            emitted_at[out.index] = i
            assert tuple(out.depth.shape) == (SIZE, SIZE) and torch.isfinite(out.depth).all()
    assert sorted(emitted_at) == list(range(len(emitted_at)))
    # start-up: the first window runs with stride + 3 frames; later every `stride` frames
    first = stride + 3
    for index, pushed in emitted_at.items():
        expected = first - 1 if index < first else first - 1 + stride * -(-(index - first + 1) // stride)
        assert pushed == expected, (index, pushed)
    rest = stream.flush()
    assert [o.index for o in rest] == list(range(len(emitted_at), len(clip)))
    assert stream.pending == 0


def test_stream_output_stays_on_the_window_grid(tiny_models):
    pi3, dit = tiny_models
    clip = _clip(3, height=2 * SIZE, width=3 * SIZE, seed=2)
    stream = VideoDepthStream(pi3, dit, stride=13, steps=1)
    for frame in clip:
        assert stream.push(frame) == []
    outputs = stream.flush()
    assert len(outputs) == 3
    for out in outputs:
        assert tuple(out.depth.shape) == (SIZE, SIZE) and torch.isfinite(out.depth).all()
    with pytest.raises(ValueError, match="size changed"):
        stream.push(_clip(1, height=40, width=40)[0])


def test_stream_reset_restarts_sequence(tiny_models):
    pi3, dit = tiny_models
    clip = _clip(5, seed=3)
    fresh = VideoDepthStream(pi3, dit, stride=2, steps=1, noise=5)
    expected = [o for f in clip for o in fresh.push(f)] + fresh.flush()

    stream = VideoDepthStream(pi3, dit, stride=2, steps=1, noise=5)
    for frame in _clip(4, seed=9):
        stream.push(frame)
    stream.reset()
    assert stream.pending == 0 and not stream.started
    got = [o for f in clip for o in stream.push(f)] + stream.flush()
    assert [o.index for o in got] == [o.index for o in expected] == list(range(5))
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a.depth, b.depth)


def test_stream_rejects_bad_stride(tiny_models):
    pi3, dit = tiny_models
    for stride in (0, 14):
        with pytest.raises(ValueError, match="stride"):
            VideoDepthStream(pi3, dit, stride=stride)
