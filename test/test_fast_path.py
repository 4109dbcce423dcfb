"""The torch fast-path options on the CPU: bf16 parity with fp32 on the same weights and noise,
the device resize against cv2, the attention-kernel report and preference, the sampler's one
device-side schedule, and clear errors for impossible option sets. CUDA-only parts (graph
replay, no host sync, GPU geometry) are checked by bench/gpu_check.sh."""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch
from conftest import load_golden

from ppd_ros.backends import BackendOptions, create_backend
from ppd_ros.backends.torch_fast import sdpa_kernels_used
from ppd_ros.model_specs import model_spec
from ppd_ros.nets import flow
from ppd_ros.nets.dit import load_ppd_dit
from ppd_ros.preprocess import INTER_AREA, INTER_CUBIC, resize_for_inference, resize_matrices, resize_on_device

TINY = model_spec("tiny-random")
OPTIONS = BackendOptions(device="cpu", steps=2, target_area=96 * 64, seed=3)


def _frame(height=120, width=90, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _depth(options: BackendOptions, frame: np.ndarray, spec=TINY) -> torch.Tensor:
    return create_backend(spec, options).predict_batch([frame], [0])[0].relative


def test_cv2_flag_values_match_cv2():
    assert (INTER_AREA, INTER_CUBIC) == (cv2.INTER_AREA, cv2.INTER_CUBIC)


@pytest.mark.parametrize("size, share", [((1080, 1920), 0.005), ((480, 640), 0.005), ((37, 53), 0.005),
                                         ((720, 1280), 0.005), ((775, 1020), 0.2)])
def test_device_resize_is_within_one_grey_level_of_cv2(size, share):
    # (775, 1020): one side shrinks, the other grows; cv2 then runs a fixed-point two-tap filter
    image = _frame(*size, seed=size[0])
    reference = resize_for_inference(image).astype(np.int32)
    resized = resize_on_device(torch.from_numpy(image)[None])[0]
    assert resized.shape == (3, *reference.shape[:2]) and resized.dtype == torch.float32
    difference = np.abs((resized.permute(1, 2, 0).numpy() * 255).round().astype(np.int32) - reference)
    assert difference.max() <= 1 and (difference > 0).mean() <= share


def test_resize_matrices_are_averages():
    for flag, (height, width, out_h, out_w) in ((INTER_AREA, (1080, 1920, 672, 1184)), (INTER_CUBIC, (30, 40, 64, 80)),
                                                (INTER_AREA, (775, 1020, 768, 1024))):
        rows, cols = resize_matrices(height, width, out_h, out_w, flag)
        assert rows.shape == (out_h, height) and cols.shape == (out_w, width)
        np.testing.assert_allclose(rows.sum(axis=1), 1, atol=1e-6)
        np.testing.assert_allclose(cols.sum(axis=1), 1, atol=1e-6)
    with pytest.raises(ValueError, match="uint8 frames"):
        resize_on_device(torch.zeros(1, 8, 8, 3))


def test_backend_device_preprocess_is_close_to_cv2_path():
    frame = _frame()  # 120x90 -> shrink (INTER_AREA)
    cv2_path = _depth(replace(OPTIONS, preprocess="cv2"), frame)
    device_path = _depth(replace(OPTIONS, preprocess="device"), frame)
    assert (device_path - cv2_path).abs().max() < 0.05  # a few pixels one grey level apart


def test_bf16_is_close_to_fp32_on_the_same_weights_and_noise():
    frame = _frame()
    fp32 = _depth(replace(OPTIONS, precision="fp32"), frame)
    for precision in ("bf16", "bf16-autocast"):
        difference = (_depth(replace(OPTIONS, precision=precision), frame) - fp32).abs()
        assert difference.dtype == torch.float32
        # measured: bf16 max 3e-2, mean 6e-3 on depth of std 1.2 (the official autocast: the same)
        assert difference.mean() < 0.02 and difference.max() < 0.1, (precision, difference.max())


def test_bf16_dit_on_golden_weights_stays_close_to_the_golden_depth():
    tensors, _ = load_golden("dit_tiny")
    sampling, _ = load_golden("ppd_sampling_tiny")
    dit = load_ppd_dit({k: v for k, v in tensors.items() if k.startswith("dit.")},
                       config=dict(hidden_size=64, depth=4, num_heads=4), dtype=torch.bfloat16)
    depth = flow.sample_depth(dit, sampling["image"], sampling["semantics"], steps=4,
                              noise=sampling["steps4.init_latent"])
    difference = (depth - sampling["steps4.depth"]).abs()
    assert difference.mean() < 0.02 and difference.max() < 0.1


def test_attention_kernel_report_and_preference():
    frame = _frame()
    calls = 4 * OPTIONS.steps + 2  # 4 DiT blocks per step + 2 encoder blocks
    backend = create_backend(TINY, OPTIONS)
    assert sdpa_kernels_used(lambda: backend.predict_batch([frame], [0])) == {"cpu-flash": calls}
    math = create_backend(TINY, replace(OPTIONS, sdpa_backend="math"))
    assert sdpa_kernels_used(lambda: math.predict_batch([frame], [0])) == {"math": calls}
    cudnn_first = create_backend(TINY, replace(OPTIONS, sdpa_backend="cudnn"))  # falls through on the CPU
    assert sdpa_kernels_used(lambda: cudnn_first.predict_batch([frame], [0])) == {"cpu-flash": calls}


def test_sampler_indexes_one_schedule_made_once():
    seen = []

    def dit(x, semantics, timestep):
        seen.append(timestep)
        return torch.zeros_like(x[:, :1])

    image, semantics = torch.rand(1, 3, 32, 48), torch.rand(1, 6, 8)
    for _ in range(2):
        flow.sample_depth(dit, image, semantics, steps=4, noise=torch.Generator().manual_seed(0))
    assert [int(t) for t in seen] == [1000, 750, 500, 249] * 2
    assert len({t.untyped_storage().data_ptr() for t in seen}) == 1  # views of one cached tensor


def test_video_backend_runs_in_bf16():
    spec = model_spec("tiny-random-video")
    frames = [_frame(40, 56, seed=s) for s in range(4)]
    outputs = {}
    for precision in ("fp32", "bf16"):
        backend = create_backend(spec, BackendOptions(device="cpu", steps=1, video_stride=1, precision=precision))
        outputs[precision] = [o.relative for f, i in zip(frames, range(4)) for o in backend.push(f, i)]
    assert len(outputs["bf16"]) == len(outputs["fp32"]) == 4
    for ours, reference in zip(outputs["bf16"], outputs["fp32"]):
        assert ours.dtype == torch.float32 and (ours - reference).abs().mean() < 0.05


def test_impossible_options_are_clear_errors():
    for field, value, message in (("precision", "fp16", "precision must be one of"),
                                  ("preprocess", "gpu", "preprocess must be one of"),
                                  ("sdpa_backend", "xformers", "sdpa_backend must be one of"),
                                  ("cuda_graphs", True, "cuda_graphs needs a CUDA device")):
        with pytest.raises(ValueError, match=message):
            create_backend(TINY, replace(OPTIONS, **{field: value}))
    with pytest.raises(ValueError, match="cuda_graphs is for image models"):
        create_backend(model_spec("tiny-random-video"), BackendOptions(device="cpu", cuda_graphs=True))
