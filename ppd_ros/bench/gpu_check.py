"""The prepared GPU check (``bench/gpu_check.sh``): what the CPU suite cannot test, and the speed
of the image and video models, in one run of at most ~8 minutes on one H100/H200.

Nothing is downloaded: random full-size weights are drawn on the GPU (the same compute as the
released models). Needs only torch and numpy (cv2, when present, adds the resize comparison).
Prints one table at the end (and writes it as JSON with ``--json``):

- checks the CPU suite skips: geometry on the GPU equals the CPU, device resize vs cv2, bf16 vs
  fp32 depth on the same weights and noise, no host synchronisation inside the sampling loop,
  which SDPA kernel runs, CUDA-graph replay equals eager (also after a new frame and a new size),
  torch.compile equals eager;
- image model at 512x384 and 1024x768, 4 steps: official-style baseline vs the fast paths
  (ms/frame, frames/s, MFU against a bf16 matmul peak measured in the same run, ratio);
- PPVD window at 512x512: frames/s at stride 13 and 4;
- the node's stages outside the model on the GPU (upload + resize, depth download, geometry,
  cloud packing).

``--cpu-smoke`` runs every step on the CPU with the tiny networks at small sizes (about two
minutes) and, unless ``--keep-imports``, first makes cv2, yaml, safetensors, scipy, rosbags and
rclpy unimportable, as they may be missing on the GPU machine.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import traceback
from dataclasses import replace

BLOCKED_IN_SMOKE = ("cv2", "yaml", "safetensors", "scipy", "rosbags", "rclpy")


class Report:
    """Rows of the final table: (section, item, result, detail); a time budget for the optional parts."""

    def __init__(self, budget_s: float):
        self.rows: list[tuple[str, str, str, str]] = []
        self.started = time.perf_counter()
        self.budget_s = budget_s

    def add(self, section: str, item: str, result: str, detail: str = "") -> None:
        self.rows.append((section, item, result, detail))
        print(f"[{self.elapsed():6.1f} s] {section} | {item} | {result} | {detail}", flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def within_budget(self, section: str, item: str, needs_s: float = 0.0) -> bool:
        if self.elapsed() + needs_s <= self.budget_s:
            return True
        self.add(section, item, "SKIPPED", f"time budget ({self.budget_s:.0f} s) reached")
        return False

    def guarded(self, section: str, item: str, fn) -> None:
        """Run one part; an exception becomes an ERROR row (the run goes on)."""
        try:
            fn()
        except Exception as error:  # noqa: BLE001 - one failing part must not hide the others
            traceback.print_exc()
            self.add(section, item, "ERROR", f"{type(error).__name__}: {str(error)[:160]}")

    def table(self) -> str:
        header = ("section", "item", "result", "detail")
        rows = [header] + self.rows
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3]
                         for row in rows)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def run_checks(args: argparse.Namespace) -> Report:
    import numpy as np
    import torch

    from ppd_ros.backends.base import BackendOptions
    from ppd_ros.backends.torch_backend import TorchImageBackend, TorchVideoBackend
    from ppd_ros.backends.torch_fast import sdpa_kernels_used
    from ppd_ros.backends.torch_networks import (full_size_image_networks, full_size_video_networks, randomize_,
                                                 tiny_random_image_networks, tiny_random_video_networks)
    from ppd_ros.bench.flops import image_model_flops
    from ppd_ros.bench.model import depth_difference, matmul_peak, synchronize, time_calls, variant_options
    from ppd_ros.geometry.camera import CameraModel
    from ppd_ros.geometry.cloud import depth_to_cloud
    from ppd_ros.model_specs import model_spec
    from ppd_ros.preprocess import inference_size, resize_on_device

    smoke = args.cpu_smoke
    report = Report(args.budget_s)
    device = torch.device("cpu" if smoke else "cuda")
    if not smoke and not torch.cuda.is_available():
        report.add("setup", "CUDA", "FAIL", "torch.cuda.is_available() is False (use --cpu-smoke on a CPU)")
        return report
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32 here
    sizes = [(64, 96), (96, 128)] if smoke else [(384, 512), (768, 1024)]
    repeats = 2 if smoke else args.repeats
    name = "CPU (smoke run, tiny networks)" if smoke else torch.cuda.get_device_name(device)
    report.add("setup", "device", name, f"torch {torch.__version__}, numpy {np.__version__}")
    peak = matmul_peak(device, torch.bfloat16, 512 if smoke else 8192, 3 if smoke else 10)
    report.add("setup", "bf16 matmul peak", f"{peak:.3g} TFLOP/s", "measured now; the MFU denominator")

    if smoke:
        dit, encoder = tiny_random_image_networks()
    else:
        dit, encoder = full_size_image_networks(device)
        dit, encoder = randomize_(dit, seed=1), randomize_(encoder, seed=2)
    dit, encoder = dit.to(device).eval(), encoder.to(device).eval()
    dit16, encoder16 = copy.deepcopy(dit).to(torch.bfloat16), copy.deepcopy(encoder).to(torch.bfloat16)
    spec = model_spec("tiny-random" if smoke else "ppd-da2")
    weights = "tiny random networks" if smoke else "random full-size weights (same compute as the release)"
    report.add("setup", "image model", spec.name, weights)
    rng = np.random.default_rng(0)

    def frame(height, width, seed=0):
        return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)

    try:
        import cv2  # noqa: F401
        host_resize = True
    except ImportError:
        host_resize = False
        report.add("setup", "cv2", "absent", "every variant resizes on the device (the baseline too)")

    def usable(chosen):
        """``chosen``, resizing on the device where cv2 is missing."""
        return chosen if host_resize or chosen.preprocess == "device" else replace(chosen, preprocess="device")

    def options(height, width, variant=None, **changes):
        chosen = replace(BackendOptions(device=str(device), steps=4, target_area=height * width), **changes)
        return usable(variant_options(variant, device, chosen) if variant else chosen)

    section = "checks"
    # -- geometry on the device equals the CPU ------------------------------------------------------
    def geometry_check():
        height, width = sizes[-1]
        depth = np.full((height, width), 4.0, np.float32)
        depth[height // 4: height // 2, width // 4: width // 2] = 2.0  # a box in front of a wall
        depth += rng.uniform(0, 0.01, depth.shape).astype(np.float32)
        depth[::17, ::13] = np.nan
        rgb = frame(height, width)
        camera = CameraModel.pinhole(0.8 * width, 0.8 * width, width / 2, height / 2, width, height)
        cloud_cpu, counts_cpu = depth_to_cloud(torch.from_numpy(depth), camera, rgb)
        cloud_dev, counts_dev = depth_to_cloud(torch.from_numpy(depth).to(device), camera, rgb)
        xyz_cpu = np.stack([cloud_cpu[k] for k in "xyz"], -1)
        xyz_dev = np.stack([cloud_dev[k] for k in "xyz"], -1)
        same_nan = np.array_equal(np.isnan(xyz_cpu), np.isnan(xyz_dev))
        finite = np.isfinite(xyz_cpu) & np.isfinite(xyz_dev)
        max_diff = float(np.abs(xyz_cpu[finite] - xyz_dev[finite]).max()) if finite.any() else 0.0
        same_rgb = np.array_equal(cloud_cpu["rgb"].view(np.uint32), cloud_dev["rgb"].view(np.uint32))
        ok = counts_cpu == counts_dev and same_nan and same_rgb and max_diff <= 1e-5
        report.add(section, "geometry GPU = CPU", _verdict(ok),
                   f"{width}x{height}: kept {counts_dev.kept}/{counts_cpu.kept}, flying {counts_dev.flying}/"
                   f"{counts_cpu.flying}, max |xyz diff| {max_diff:.1e} m, rgb bits equal {same_rgb}")

    report.guarded(section, "geometry GPU = CPU", geometry_check)

    # -- device resize vs cv2 ------------------------------------------------------------------------
    def resize_check():
        from ppd_ros.preprocess import resize_for_inference

        if not host_resize:
            report.add(section, "device resize vs cv2", "SKIPPED", "cv2 not installed here")
            return
        details, worst = [], 0
        for height, width in ((1080, 1920), (480, 640), (775, 1020)):
            image = frame(height, width, seed=height)
            reference = resize_for_inference(image).astype(np.int32)
            resized = resize_on_device(torch.from_numpy(image).to(device)[None])[0]
            levels = (resized.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.int32)
            difference = np.abs(levels - reference)
            worst = max(worst, int(difference.max()))
            details.append(f"{width}x{height}: max {difference.max()} level, {100 * (difference > 0).mean():.2f}% px")
        report.add(section, "device resize vs cv2", _verdict(worst <= 1), "; ".join(details))

    report.guarded(section, "device resize vs cv2", resize_check)

    # -- bf16 vs fp32, no host sync in the loop, SDPA kernel ------------------------------------------
    height, width = sizes[0]
    shot = frame(height, width)

    def parity_check():
        reference = TorchImageBackend(dit, encoder, spec, options(height, width, precision="fp32", preprocess="cv2"))
        fp32_depth = reference.predict_batch([shot], [0])[0].relative
        fast = TorchImageBackend(dit16, encoder16, spec, options(height, width, precision="bf16", preprocess="cv2"))
        max_diff, mean_diff = depth_difference(fast.predict_batch([shot], [0])[0].relative, fp32_depth)
        spread = float(fp32_depth.std())
        ok = np.isfinite(max_diff) and mean_diff <= 0.05 * spread
        report.add(section, "bf16 vs fp32 depth", _verdict(ok),
                   f"{width}x{height}, same weights and noise: max {max_diff:.3e}, mean {mean_diff:.3e} "
                   f"(depth std {spread:.3f}; pass: mean <= 5% of std)")

    report.guarded(section, "bf16 vs fp32 depth", parity_check)

    fast_eager = TorchImageBackend(dit16, encoder16, spec, options(height, width, precision="bf16"))

    def sync_check():
        image01 = fast_eager.prepare([shot])
        semantics, _ = fast_eager.encode(image01)
        fast_eager.sample(image01, semantics)  # warm-up: schedule, noise and tables made once
        synchronize(device)
        if device.type != "cuda":
            report.add(section, "no host sync in sampling loop", "SKIPPED", "CUDA only (smoke run)")
            return
        torch.cuda.set_sync_debug_mode("error")
        try:
            fast_eager.sample(image01, semantics)
            ok, detail = True, "torch.cuda.set_sync_debug_mode('error') around sample(): nothing synchronised"
        except RuntimeError as error:
            ok, detail = False, str(error).splitlines()[0][:160]
        finally:
            torch.cuda.set_sync_debug_mode(0)
        report.add(section, "no host sync in sampling loop", _verdict(ok), detail)

    report.guarded(section, "no host sync in sampling loop", sync_check)

    def kernel_check():
        kernels = sdpa_kernels_used(lambda: fast_eager.predict_batch([shot], [0]))
        fused = [k for k in kernels if k in ("flash", "cudnn", "efficient", "cpu-flash")]
        report.add(section, "SDPA kernel (bf16, auto)", _verdict(bool(fused) and "math" not in kernels),
                   ", ".join(f"{k} x{v}" for k, v in kernels.items()))
        if device.type == "cuda":
            cudnn = TorchImageBackend(dit16, encoder16, spec, options(height, width, precision="bf16",
                                                                      sdpa_backend="cudnn"))
            kernels = sdpa_kernels_used(lambda: cudnn.predict_batch([shot], [0]))
            report.add(section, "SDPA kernel (sdpa_backend=cudnn)", "INFO",
                       ", ".join(f"{k} x{v}" for k, v in kernels.items()))

    report.guarded(section, "SDPA kernel", kernel_check)

    # -- CUDA graph replay ---------------------------------------------------------------------------
    def graph_check():
        if device.type != "cuda":
            report.add(section, "CUDA graph replay = eager", "SKIPPED", "CUDA only (smoke run)")
            return
        graphs = TorchImageBackend(dit16, encoder16, spec, options(height, width, precision="bf16",
                                                                   cuda_graphs=True))
        other = frame(height, width, seed=5)
        first = graphs.predict_batch([shot], [0])[0].relative
        second = graphs.predict_batch([other], [0])[0].relative  # replay with a new frame
        again = graphs.predict_batch([shot], [0])[0].relative
        diff_first = depth_difference(first, fast_eager.predict_batch([shot], [0])[0].relative)[0]
        diff_second = depth_difference(second, fast_eager.predict_batch([other], [0])[0].relative)[0]
        diff_again = depth_difference(again, first)[0]
        portrait = frame(width, height)  # the other aspect: another inference size, a second capture
        graphs.predict_batch([portrait], [0])
        eager_portrait = fast_eager.predict_batch([portrait], [0])[0].relative
        diff_big = depth_difference(graphs.predict_batch([portrait], [0])[0].relative, eager_portrait)[0]
        between_frames = depth_difference(first, second)[0]  # what a stale input would show
        worst = max(diff_first, diff_second, diff_again, diff_big)
        ok = worst <= 0.1 * between_frames and diff_again == 0 and graphs.graphs.captures == 2
        report.add(section, "CUDA graph replay = eager", _verdict(ok),
                   f"max |diff| first {diff_first:.1e}, new frame {diff_second:.1e}, repeat {diff_again:.1e}, "
                   f"new size {diff_big:.1e} (two frames differ by {between_frames:.2f}); captures "
                   f"{graphs.graphs.captures} (2 sizes)")

    report.guarded(section, "CUDA graph replay = eager", graph_check)

    # -- image model speed -----------------------------------------------------------------------------
    variants = ["baseline", "fast", "fast+graphs"] if not smoke else ["baseline", "fast"]
    eager_fast_ms = {}
    for height, width in sizes:
        h, w = inference_size(height, width, height * width)
        flops = image_model_flops(dit, encoder, h, w, 4).total
        shot_size = frame(height, width)
        baseline_s = None
        for variant in variants:
            label = f"{width}x{height} {variant}"
            if not report.within_budget("image", label):
                continue

            def measure(variant=variant, label=label, height=height, width=width, shot_size=shot_size):
                nonlocal baseline_s
                variant_opts = options(height, width, variant)
                if variant == "baseline":
                    from ppd_ros.bench.model import SyncEachStep
                    networks = (SyncEachStep(dit) if device.type == "cuda" else dit), encoder
                else:
                    networks = dit16, encoder16
                backend = TorchImageBackend(*networks, spec, variant_opts)
                timing, _ = time_calls(lambda: backend.predict_batch([shot_size], [0]), repeats)
                seconds = timing.median_s
                if variant == "baseline":
                    baseline_s = seconds
                if variant == "fast":
                    eager_fast_ms[(height, width)] = 1000 * seconds
                achieved = flops / seconds / 1e12
                ratio = f", {baseline_s / seconds:.2f}x baseline" if baseline_s else ""
                report.add("image", label, f"{1000 * seconds:.1f} ms",
                           f"{1 / seconds:.2f} frames/s, {achieved:.1f} TFLOP/s, MFU {100 * achieved / peak:.1f}%"
                           f"{ratio}, first call {timing.first_call_s:.1f} s")

            report.guarded("image", label, measure)

    # -- PPVD window -------------------------------------------------------------------------------------
    def video_speed():
        if smoke:
            pi3, video_dit = tiny_random_video_networks()
        else:
            pi3, video_dit = full_size_video_networks(device)
        video_spec = model_spec("tiny-random-video" if smoke else "ppvd")
        side = video_dit.input_size
        for stride in (13, 4):
            label = f"{side}x{side} stride {stride}"
            if not report.within_budget("video", label):
                continue
            backend = TorchVideoBackend(pi3, video_dit, video_spec,
                                        BackendOptions(device=str(device), steps=4, video_stride=stride,
                                                       precision="bf16"))
            frames = [frame(side, side, seed=i) for i in range(stride + 3)]
            for index, image in enumerate(frames):  # first window (compiles nothing, warms up)
                backend.push(image, index)
            backend.throughput = type(backend.throughput)()
            windows = 2 if smoke else 3
            for index in range(windows * stride):
                backend.push(frames[index % len(frames)], index)
            throughput = backend.throughput
            report.add("video", label, f"{throughput.frames_per_second:.2f} frames/s",
                       f"{1000 * throughput.seconds_per_window:.0f} ms per 16-frame window, {throughput.windows} "
                       f"windows timed, bf16, 4 steps")

    if report.within_budget("video", "PPVD windows"):
        report.guarded("video", "PPVD windows", video_speed)

    # -- node stages outside the model ---------------------------------------------------------------------
    def node_overhead():
        height, width = sizes[-1]
        backend = TorchImageBackend(dit16, encoder16, spec, options(height, width, precision="bf16"))
        image = frame(height, width)
        camera = CameraModel.pinhole(0.8 * width, 0.8 * width, width / 2, height / 2, width, height)
        depth = backend.predict_batch([image], [0])[0].relative
        metres = torch.exp(depth)

        def stage(fn):
            timing, _ = time_calls(fn, max(3, repeats))
            synchronize(device)
            return 1000 * timing.median_s

        def prepare():
            backend.prepare([image])
            synchronize(device)

        def download():
            depth.cpu()

        cloud = depth_to_cloud(metres, camera, image)[0]
        stages = {"upload + resize": stage(prepare), "depth download": stage(download),
                  "geometry (cloud, download incl.)": stage(lambda: depth_to_cloud(metres, camera, image)),
                  "packing (tobytes)": stage(cloud.tobytes)}
        total = sum(stages.values())
        model_ms = eager_fast_ms.get((height, width))
        share = f", {100 * total / (total + model_ms):.0f}% of a frame with the eager fast model" if model_ms else ""
        report.add("node", f"{width}x{height} outside the model", f"{total:.1f} ms",
                   ", ".join(f"{k} {v:.2f} ms" for k, v in stages.items()) + share)

    if report.within_budget("node", "stages outside the model"):
        report.guarded("node", "stages outside the model", node_overhead)

    # -- torch.compile (last: the slowest to warm up) -------------------------------------------------------
    if args.compile if smoke else not args.no_compile:
        for height, width in sizes:
            variant = "fast+compile" if smoke else "fast+compile+graphs"
            label = f"{width}x{height} {variant}"
            if not report.within_budget("image", label, needs_s=0 if smoke else 60):
                continue

            def compiled_run(height=height, width=width, label=label, variant=variant):
                backend = TorchImageBackend(dit16, encoder16, spec, options(height, width, variant))
                image = frame(height, width)
                timing, _ = time_calls(lambda: backend.predict_batch([image], [0]), repeats)
                eager = fast_eager if (height, width) == sizes[0] else TorchImageBackend(
                    dit16, encoder16, spec, options(height, width, precision="bf16"))
                max_diff = depth_difference(backend.predict_batch([image], [0])[0].relative,
                                            eager.predict_batch([image], [0])[0].relative)[0]
                h, w = inference_size(height, width, height * width)
                achieved = image_model_flops(dit, encoder, h, w, 4).total / timing.median_s / 1e12
                report.add("image", label, f"{1000 * timing.median_s:.1f} ms",
                           f"{1 / timing.median_s:.2f} frames/s, MFU {100 * achieved / peak:.1f}%, first call "
                           f"(compile{'' if smoke else ' + capture'}) {timing.first_call_s:.1f} s, "
                           f"max |diff| vs eager bf16 {max_diff:.1e}")

            report.guarded("image", label, compiled_run)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/gpu_check.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny networks on the CPU: checks the script runs")
    parser.add_argument("--keep-imports", action="store_true",
                        help="smoke run with cv2, yaml, ... importable (default: blocked, as on the GPU machine)")
    parser.add_argument("--compile", action="store_true", help="smoke run: include torch.compile (minutes on a CPU)")
    parser.add_argument("--no-compile", action="store_true", help="GPU run: leave out the torch.compile rows")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per image-model variant (GPU run)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="skip the remaining optional parts after this many seconds (default 420; smoke 150)")
    parser.add_argument("--json", default=None, help="also write the table to this JSON file")
    args = parser.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = 150.0 if args.cpu_smoke else 420.0
    if args.cpu_smoke and not args.keep_imports:
        for name in BLOCKED_IN_SMOKE:
            sys.modules[name] = None  # import now raises ImportError, as for a missing package
    report = run_checks(args)
    print()
    print(f"ppd_ros GPU check ({report.elapsed():.0f} s)")
    print(report.table())
    if args.json:
        with open(args.json, "w") as stream:
            json.dump([dict(zip(("section", "item", "result", "detail"), row)) for row in report.rows], stream,
                      indent=1)
    failed = [row for row in report.rows if row[2] in ("FAIL", "ERROR")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
