"""`ppd bench model`: the speed truth of the PPD image model.

In one run and on the same weights (official ones when present, else random full-size weights:
the same compute), it measures an official-style baseline (fp32 weights, bf16 autocast on CUDA,
eager, cv2 resize, a host synchronisation after every DiT step; on CPU the fp32 reference path)
and the fast paths (bf16 weights, device resize, torch.compile, CUDA graphs, ONNX Runtime), and
prints per variant ms/frame, frames/s, achieved TFLOP/s, MFU and the ratio to the baseline; per
stage (decode, preprocess, encoder, each DiT step, geometry, cloud packing) for the eager ones;
the depth difference to the fp32 reference (same weights and noise); which attention kernel ran.

FLOP are counted analytically (:mod:`ppd_ros.bench.flops`). MFU = achieved / peak, the peak
measured in the same run by a large matmul in the variant's compute dtype: bf16 on CUDA (fp32
variants against an fp32 matmul); on CPU both peaks are measured and each variant is set against
its own (fp32 for the reference path).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch

SIZES = ("full", "tiny")
CUDA_ONLY = ("fast+graphs", "fast+compile+graphs")
VARIANT_NAMES = ("baseline", "fast", "fast+compile", "fast+graphs", "fast+compile+graphs", "onnxruntime")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", choices=SIZES, default="full",
                        help="full: the released network sizes; tiny: the tiny test networks (seconds on a CPU)")
    parser.add_argument("--width", type=int, default=512, help="input frame width (inference at this size, "
                                                               "sides rounded to multiples of 16)")
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1, help="frames per call")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per variant (median reported)")
    parser.add_argument("--variants", default=",".join(VARIANT_NAMES),
                        help="comma-separated subset of: " + ", ".join(VARIANT_NAMES))
    parser.add_argument("--weights-dir", default=None, help="official weights used when present (--size full)")


# --- shared measurement pieces (also used by ppd_ros.bench.gpu_check) --------------------------

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 8192, repeats: int = 10) -> float:
    """Achieved TFLOP/s of a size^3 matmul on random data (median of ``repeats`` after warm-up)."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, generator=generator, device=device).to(dtype)
    b = torch.randn(size, size, generator=generator, device=device).to(dtype)
    times = []
    for index in range(repeats + 2):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        if index >= 2:
            times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e12


def build_image_networks(size: str, device: torch.device, weights_dir=None):
    """(fp32 DiT, fp32 DA2 encoder, description) on ``device``: official weights when present
    (``size`` full), else seeded random weights drawn on the device."""
    from ppd_ros.backends.torch_networks import full_size_image_networks, randomize_, tiny_random_image_networks

    if size == "tiny":
        dit, encoder = tiny_random_image_networks()
        return dit.to(device), encoder.to(device), "tiny random networks (test sizes)"
    from ppd_ros.backends.torch_networks import load_image_networks
    from ppd_ros.model_specs import model_spec
    from ppd_ros.weights import WeightsMissingError

    try:
        dit, encoder = load_image_networks(model_spec("ppd-da2"), weights_dir, device, torch.float32)
        return dit, encoder, "official ppd-da2 weights"
    except (WeightsMissingError, ImportError):
        dit, encoder = full_size_image_networks(device)
        dit, encoder = randomize_(dit, seed=1), randomize_(encoder, seed=2)
        return dit.eval(), encoder.eval(), "random full-size weights (official files absent; same compute)"


class SyncEachStep(torch.nn.Module):
    """The DiT followed by a host synchronisation, as the official sampler loop waits every step."""

    def __init__(self, dit: torch.nn.Module):
        super().__init__()
        self.dit = dit

    def forward(self, x, semantics, timestep):
        out = self.dit(x, semantics, timestep)
        synchronize(x.device)
        return out


class StepClock(torch.nn.Module):
    """The DiT with a clock around every call (CUDA events on CUDA); ``milliseconds()`` after."""

    def __init__(self, dit: Callable, device: torch.device):
        super().__init__()
        self.dit = dit
        self.device = device
        self.spans: list[tuple] = []

    def _mark(self):
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def forward(self, x, semantics, timestep):
        start = self._mark()
        out = self.dit(x, semantics, timestep)
        self.spans.append((start, self._mark()))
        return out

    def milliseconds(self) -> list[float]:
        synchronize(self.device)
        if self.device.type == "cuda":
            return [start.elapsed_time(end) for start, end in self.spans]
        return [1000.0 * (end - start) for start, end in self.spans]


def stage_milliseconds(backend, frame: np.ndarray, repeats: int = 1) -> dict[str, float]:
    """Median ms of each stage of one frame through an eager torch image backend: decode (cv2 JPEG,
    when cv2 is there), preprocess, encoder, step 1..k, geometry (depth_to_cloud, download
    included), packing (cloud.tobytes())."""
    from ppd_ros.geometry.camera import CameraModel
    from ppd_ros.geometry.cloud import depth_to_cloud

    device = backend.device
    runs: dict[str, list[float]] = {}

    def timed(name: str, fn):
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        runs.setdefault(name, []).append(1000.0 * (time.perf_counter() - start))
        return result

    try:
        import cv2
        jpeg = cv2.imencode(".jpg", frame[..., ::-1])[1]
    except ImportError:
        cv2 = None
    for _ in range(repeats):
        if cv2 is not None:
            timed("decode", lambda: cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
        image01 = timed("preprocess", lambda: backend.prepare([frame]))
        semantics, _ = timed("encoder", lambda: backend.encode(image01))
        clock = StepClock(backend._dit_fn, device)
        depth = timed("sampler", lambda: backend.sample(image01, semantics, dit=clock))
        for step, ms in enumerate(clock.milliseconds(), start=1):
            runs.setdefault(f"step{step}", []).append(ms)
        height, width = depth.shape[-2:]
        camera = CameraModel.pinhole(0.8 * width, 0.8 * width, width / 2, height / 2, width, height)
        metres = torch.exp(depth[0])  # any positive depth: the cost does not depend on the values
        cloud, _ = timed("geometry", lambda: depth_to_cloud(metres, camera, frame if frame.shape[:2] == (height, width)
                                                           else None))
        timed("packing", cloud.tobytes)
    runs.pop("sampler")
    return {name: statistics.median(values) for name, values in runs.items()}


@dataclass
class Timing:
    """Wall time of whole calls of one variant."""

    first_call_s: float
    seconds: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)


def time_calls(call: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[Timing, object]:
    """(timing, last result): the first call (compilation, graph capture) apart, then ``warmup``
    more, then ``repeats`` timed."""
    start = time.perf_counter()
    result = call()
    timing = Timing(time.perf_counter() - start)
    for _ in range(warmup):
        result = call()
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        timing.seconds.append(time.perf_counter() - start)
    return timing, result


def depth_difference(depth: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(max, mean) |depth - reference| over the frame."""
    difference = (depth.float().cpu() - reference.float().cpu()).abs()
    return float(difference.max()), float(difference.mean())


def variant_options(name: str, device: torch.device, base):
    """BackendOptions of a torch variant (``base`` carries device, steps, area, seed)."""
    if name == "baseline":
        return replace(base, precision="bf16-autocast" if device.type == "cuda" else "fp32", preprocess="cv2")
    fast = replace(base, precision="bf16", preprocess="auto")
    return replace(fast, compile="compile" in name, cuda_graphs="graphs" in name)


def onnx_backend(spec, options, dit, encoder, device: torch.device):
    """(ONNX Runtime backend on an export of these weights, seconds to export) or (None, reason)."""
    try:
        import onnxruntime

        from ppd_ros.backends.onnx_export import export_image_model
        from ppd_ros.backends.onnxruntime_backend import OnnxImageBackend, select_providers
    except ImportError as error:
        return None, f"skipped: {error}"
    providers = ("tensorrt", "cuda") if device.type == "cuda" else ("cpu",)
    try:
        select_providers(providers, onnxruntime.get_available_providers())
    except ValueError as error:
        return None, f"skipped: {error}"
    folder = tempfile.TemporaryDirectory(prefix="ppd_onnx_")
    metadata = export_image_model(dit, encoder, folder.name, spec.name)  # exports from the CPU: move back after
    dit.to(device)
    encoder.to(device)
    backend = OnnxImageBackend(spec, replace(options, onnx_providers=providers, onnx_dir=folder.name))
    backend.export_folder = folder  # removed with the backend
    return backend, f"exported in {metadata['export_seconds']} s, providers {', '.join(backend.providers)}"


# --- the benchmark ------------------------------------------------------------------------------

def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def run(args: argparse.Namespace) -> int:
    from ppd_ros.backends.base import BackendOptions
    from ppd_ros.backends.torch_backend import TorchImageBackend
    from ppd_ros.backends.torch_fast import sdpa_kernels_used
    from ppd_ros.bench.flops import image_model_flops
    from ppd_ros.device import resolve_device
    from ppd_ros.model_specs import model_spec
    from ppd_ros.preprocess import inference_size

    device = resolve_device(args.device)
    wanted = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(VARIANT_NAMES))
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {', '.join(VARIANT_NAMES)}")
    if "baseline" not in wanted:
        wanted.insert(0, "baseline")
    skipped = [name for name in wanted if name in CUDA_ONLY and device.type != "cuda"]
    wanted = [name for name in wanted if name not in skipped]

    dit, encoder, source = build_image_networks(args.size, device, args.weights_dir)
    spec = model_spec("ppd-da2" if args.size == "full" else "tiny-random")
    base = BackendOptions(device=str(device), steps=args.steps, target_area=args.width * args.height)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8) for _ in range(args.batch)]
    tags = list(range(args.batch))
    h, w = inference_size(args.height, args.width, base.target_area)
    flops = image_model_flops(dit, encoder, h, w, args.steps, args.batch)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"ppd bench model: {spec.name} networks, {source}")
    print(f"device {device} ({gpu}), torch {torch.__version__}; input {args.width}x{args.height} -> inference "
          f"{w}x{h}, {args.steps} steps, batch {args.batch}")
    peak_size = 8192 if device.type == "cuda" else 2048

    def measure_peaks() -> dict:
        return {dtype: matmul_peak(device, dtype, peak_size) for dtype in (torch.bfloat16, torch.float32)}

    peaks = measure_peaks()  # measured again after the variants; the higher one counts
    print(f"FLOP per call (analytic, matmuls + attention): encoder {flops.encoder:.3e} + {args.steps} x DiT "
          f"{flops.dit_step:.3e} = {flops.total:.3e} ({flops.total / args.batch:.3e} per frame)")

    reference = None  # fp32 depth on the same weights and noise (on the CPU: the baseline itself)
    if device.type == "cuda":
        tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        reference_backend = TorchImageBackend(dit, encoder, spec, replace(base, precision="fp32", preprocess="cv2"))
        reference = reference_backend.predict_batch(frames, tags)[0].relative.cpu()
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        del reference_backend

    bf16_networks = None
    results, stages, notes = {}, {}, {}
    for name in wanted:
        if name == "onnxruntime":
            backend, note = onnx_backend(spec, base, dit, encoder, device)
            notes[name] = note
            if backend is None:
                continue
            compute_dtype = torch.float32
        else:
            options = variant_options(name, device, base)
            if options.precision == "bf16":
                if bf16_networks is None:
                    bf16_networks = copy.deepcopy(dit).to(torch.bfloat16), copy.deepcopy(encoder).to(torch.bfloat16)
                networks = bf16_networks
                compute_dtype = torch.bfloat16
            else:
                networks = (SyncEachStep(dit) if device.type == "cuda" else dit), encoder
                compute_dtype = torch.bfloat16 if options.precision == "bf16-autocast" else torch.float32
            backend = TorchImageBackend(*networks, spec, options)
        timing, outputs = time_calls(lambda: backend.predict_batch(frames, tags), args.repeats,
                                     warmup=1 if device.type == "cuda" else 0)
        depth = outputs[0].relative.cpu()
        if reference is None:
            reference = depth
        results[name] = (timing, compute_dtype, depth_difference(depth, reference))
        if name in ("baseline", "fast"):  # one more frame, stage by stage
            stages[name] = stage_milliseconds(backend, frames[0])
        if name == "fast":
            kernels = sdpa_kernels_used(lambda: backend.predict_batch(frames, tags))
            notes[name] = "attention kernels: " + (", ".join(f"{k} x{v}" for k, v in kernels.items()) or "none seen")
        backend = None  # free its memory before the next variant

    after = measure_peaks()
    peaks = {dtype: max(value, after[dtype]) for dtype, value in peaks.items()}
    print(f"peak ({peak_size}^3 matmul, best of before and after the variants): bf16 {peaks[torch.bfloat16]:.3g} "
          f"TFLOP/s, fp32 {peaks[torch.float32]:.3g} TFLOP/s; MFU against the variant's compute dtype"
          + (" (CPU: the fp32 reference path and ONNX Runtime against the fp32 peak)" if device.type == "cpu" else ""))
    baseline_s = results["baseline"][0].median_s
    rows = [["variant", "ms/frame", "frames/s", "TFLOP/s", "MFU", "vs baseline", "first call s",
             "max|d| vs fp32", "mean|d|"]]
    for name, (timing, dtype, (max_diff, mean_diff)) in results.items():
        per_frame = timing.median_s / args.batch
        achieved = flops.total / timing.median_s / 1e12
        rows.append([name, f"{1000 * per_frame:.1f}", f"{1 / per_frame:.2f}", f"{achieved:.2f}",
                     f"{100 * achieved / peaks[dtype]:.1f}%", f"{baseline_s / timing.median_s:.2f}x",
                     f"{timing.first_call_s:.2f}", f"{max_diff:.2e}", f"{mean_diff:.2e}"])
    print()
    print(_table(rows))
    if stages:
        names = list(next(iter(stages.values())))
        print()
        print(_table([["stages (ms)"] + names] + [[variant] + [f"{values.get(n, float('nan')):.2f}" for n in names]
                                                 for variant, values in stages.items()]))
    print()
    for name in VARIANT_NAMES:
        if name in notes:
            print(f"{name}: {notes[name]}")
    for name in skipped:
        print(f"{name}: skipped (needs CUDA)")
    print("variants: baseline = " + ("fp32 weights, bf16 autocast, eager, cv2 resize, host sync per step"
                                     if device.type == "cuda" else "fp32, eager, cv2 resize (the reference path)")
          + "; fast = bf16 weights, SDPA, no host sync in the loop, "
          + ("uint8 upload + device resize" if device.type == "cuda" else "cv2 resize")
          + "; +compile = torch.compile; +graphs = one CUDA graph per input size; onnxruntime = fp32 graphs")
    return 0
