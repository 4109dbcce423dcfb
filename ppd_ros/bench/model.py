"""`ppd bench model`: full-size PPD forward pass (semantics + Euler steps): time and peak memory.

Uses the official weights when present, otherwise full-size random weights (same compute).
Baseline in the same run: one DiT evaluation, so the ratio shows what the step count costs.
"""
from __future__ import annotations

import argparse
import resource
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--weights-dir", default=None)


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ppd_ros.backends import BackendOptions, create_backend
    from ppd_ros.backends.torch_backend import TorchImageBackend
    from ppd_ros.backends.torch_networks import full_size_image_networks
    from ppd_ros.device import resolve_device
    from ppd_ros.model_specs import model_spec
    from ppd_ros.weights import WeightsMissingError

    device = resolve_device(args.device)
    options = BackendOptions(device=str(device), steps=args.steps, target_area=args.width * args.height,
                             weights_dir=args.weights_dir)
    try:
        estimator = create_backend(model_spec("ppd-da2"), options)
        source = "official weights"
    except WeightsMissingError:
        torch.manual_seed(0)
        dit, encoder = full_size_image_networks("cpu")
        estimator = TorchImageBackend(dit, encoder, model_spec("ppd-da2"), options)
        source = "random full-size weights (official files absent; same compute)"
    print(f"model: {estimator.spec.name}, {source}; device {device}; rss after load {_peak_rss_gib():.2f} GiB")
    rgb = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    h, w = estimator.inference_size(args.height, args.width)

    def timed(fn) -> float:
        fn()  # warm-up
        times = []
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        return min(times)

    x = torch.randn(1, 4, h, w, device=device)
    sem = torch.randn(1, (h // 16) * (w // 16), estimator.dit.semantic_dim, device=device)
    t = torch.tensor(500, dtype=torch.int32, device=device)

    def one_dit_step():
        with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda"):
            estimator.dit(x, sem, t)

    step_s = timed(one_dit_step)
    full_s = timed(lambda: estimator.push(rgb, None))
    print(f"inference size {w}x{h}, {args.steps} steps, dtype {'bf16 autocast' if device.type == 'cuda' else 'fp32'}")
    print(f"one DiT evaluation (baseline): {step_s * 1000:.1f} ms")
    print(f"full predict (semantics + {args.steps} steps): {full_s * 1000:.1f} ms  = {full_s / step_s:.2f}x baseline")
    print(f"peak RSS: {_peak_rss_gib():.2f} GiB")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    return 0
