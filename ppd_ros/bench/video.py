"""`ppd bench video`: temporal consistency, latency and throughput of image vs video (PPVD) mode.

Renders a synthetic camera-motion sequence with exact depth and poses (a few frames of still
camera first, then a handheld sweep), runs it through the image engine frame by frame (the
baseline of this run) and through the video stream at each requested stride, aligns every
result to GT with one log-space fit per sequence and prints TAE, flicker and AbsRel
(:mod:`ppd_ros.evaluation.temporal`), the latency of each frame in frames and seconds, and the
throughput (frames/s, seconds per window), with ratios against image mode.
"""
from __future__ import annotations

import argparse

RANDOM_WEIGHTS_NOTE = (
    "NOTE: random weights ({names}): the depth is noise, so TAE / flicker / AbsRel say nothing about "
    "the models (noise aligned by one sequence fit is almost a constant depth, which scores a low TAE "
    "and flicker but a high AbsRel); only the plumbing is meaningful (every frame once and in order, "
    "latency in frames, throughput)."
)
JITTER = 0.1  # per-frame depth scale of the reference row: uniform in [1 - JITTER, 1 + JITTER]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ppd_ros.model_specs import IMAGE_MODEL_NAMES, VIDEO_MODEL_NAMES

    parser.add_argument("--model", default="tiny-random", choices=IMAGE_MODEL_NAMES, help="image-mode model")
    parser.add_argument("--video-model", default="tiny-random-video", choices=VIDEO_MODEL_NAMES)
    parser.add_argument("--strides", default="13,4", help="video strides S to compare (comma separated)")
    parser.add_argument("--frames", type=int, default=26, help="frames of camera motion")
    parser.add_argument("--hold", type=int, default=4, help="still-camera frames before the motion")
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--target-area", type=int, default=None,
                        help="image-mode inference pixels (default: width*height)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0, help="noise seed of both engines")
    parser.add_argument("--scene-seed", type=int, default=3)
    parser.add_argument("--weights-dir", default=None)


def _render_sequence(args: argparse.Namespace):
    import numpy as np

    from ppd_ros.synthetic import Scene, camera_trajectory, default_camera, render

    scene = Scene.random(args.scene_seed)
    camera = default_camera(args.width, args.height)
    motion = camera_trajectory(args.frames, args.scene_seed, scene)
    poses = np.concatenate([np.repeat(motion[:1], args.hold, axis=0), motion])
    frames = [render(scene, camera, pose) for pose in poses]
    return np.stack([f[0] for f in frames]), np.stack([f[1] for f in frames]), poses, camera


def _backend(args, model: str, **options):
    from ppd_ros.backends import BackendOptions, create_backend
    from ppd_ros.model_specs import model_spec

    return create_backend(model_spec(model), BackendOptions(device=args.device, steps=args.steps, seed=args.seed,
                                                            weights_dir=args.weights_dir, **options))


def _quality(relative, gt, poses, camera) -> dict:
    import numpy as np

    from ppd_ros.evaluation.temporal import align_sequence, temporal_metrics

    aligned = align_sequence(relative, gt)
    metrics = temporal_metrics(aligned, gt, poses, camera)
    valid = np.isfinite(gt) & (gt > 0)
    absrel = float(np.mean(np.abs(aligned[valid] - gt[valid]) / gt[valid]))
    return {"tae": metrics.tae, "flicker": metrics.flicker, "absrel": absrel}


def _run_image_mode(args, rgb, gt, poses, camera) -> dict:
    import time

    import numpy as np

    from ppd_ros.geometry.resize import resize_nearest

    backend = _backend(args, args.model, target_area=args.target_area or args.width * args.height)
    backend.push(rgb[0], None)  # warm-up
    depths, seconds = [], []
    for frame in rgb:
        start = time.perf_counter()
        (output,) = backend.push(frame, None)
        depth = output.relative.float().cpu().numpy()
        seconds.append(time.perf_counter() - start)
        depths.append(resize_nearest(depth, *frame.shape[:2]))
    total = float(np.sum(seconds))
    row = {"mode": f"image ({args.model})", "latency_frames": (0.0, 0), "windows": len(rgb),
           "latency_s": (float(np.mean(seconds)), float(np.max(seconds))),
           "s_per_window": total / len(rgb), "fps": len(rgb) / total, "device": str(backend.device),
           "size": f"{output.size[1]}x{output.size[0]}"}
    row.update(_quality(np.stack(depths), gt, poses, camera))
    return row


def _run_video_mode(args, stride: int, rgb, gt, poses, camera) -> dict:
    import numpy as np

    import time

    from ppd_ros.backends.torch_backend import WindowThroughput
    from ppd_ros.geometry.resize import resize_nearest

    backend = _backend(args, args.video_model, video_stride=stride)
    for frame in rgb[:stride + 3]:  # warm-up: one window
        backend.push(frame, None)
    backend.reset(reason="warm-up")
    backend.throughput = WindowThroughput()

    results, pushed_at, emitted_at = [], {}, {}
    for i, frame in enumerate(rgb):
        pushed_at[i] = time.perf_counter()
        out = backend.push(frame, i)
        emitted_at.update({o.tag: time.perf_counter() for o in out})
        results += out
    out = backend.flush()
    emitted_at.update({o.tag: time.perf_counter() for o in out})
    results += out
    tags = [r.tag for r in results]
    if tags != list(range(len(rgb))):
        raise RuntimeError(f"video mode S={stride} emitted frames {tags}, expected each of 0..{len(rgb) - 1} once")
    frames_latency = np.array([r.latency_frames for r in results])
    seconds_latency = np.array([emitted_at[i] - pushed_at[i] for i in tags])
    throughput = backend.throughput
    size = backend.window_size
    row = {"mode": f"video S={stride} ({args.video_model})",
           "latency_frames": (float(frames_latency.mean()), int(frames_latency.max())),
           "latency_s": (float(seconds_latency.mean()), float(seconds_latency.max())),
           "windows": throughput.windows, "s_per_window": throughput.seconds_per_window,
           "fps": throughput.frames_per_second, "device": str(backend.device), "size": f"{size}x{size}"}
    depths = [resize_nearest(r.relative.float().cpu().numpy(), *rgb.shape[1:3]) for r in results]
    row.update(_quality(np.stack(depths), gt, poses, camera))
    return row


def run(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from ppd_ros.model_specs import model_spec

    strides = [int(s) for s in str(args.strides).split(",") if s.strip()]
    start = time.perf_counter()
    rgb, gt, poses, camera = _render_sequence(args)
    print(f"sequence: {len(rgb)} frames {args.width}x{args.height} ({args.hold} still, then camera motion), "
          f"scene seed {args.scene_seed}, rendered in {time.perf_counter() - start:.1f} s; {args.steps} Euler steps")

    random_names = [n for n in (args.model, args.video_model) if model_spec(n).random_tiny]
    if random_names:
        print(RANDOM_WEIGHTS_NOTE.format(names=", ".join(random_names)))

    rows = [_run_image_mode(args, rgb, gt, poses, camera)]
    rows += [_run_video_mode(args, stride, rgb, gt, poses, camera) for stride in strides]
    base = rows[0]
    # references that show what the metrics read: exact depth, and exact depth with a per-frame scale
    scales = np.random.default_rng(args.seed).uniform(1 - JITTER, 1 + JITTER, len(gt))
    references = [("reference: exact depth", np.log1p(gt)),
                  (f"reference: exact, scale +-{JITTER:.0%}/frame", np.log1p(gt * scales[:, None, None]))]

    print("metrics: one log-space scale/shift per sequence; TAE and flicker over consecutive pairs "
          "(ppd_ros.evaluation.temporal); ratios are against image mode (x img)")
    header = (f"{'mode':<34} {'size':>8} {'TAE':>8} {'x img':>6} {'flicker':>8} {'x img':>6} {'AbsRel':>7} "
              f"{'lat fr mean/max':>15} {'lat s mean/max':>15} {'windows':>7} {'s/window':>9} "
              f"{'frames/s':>9} {'x img':>6}")
    print(header)
    for row in rows:
        print(f"{row['mode']:<34} {row['size']:>8} {row['tae']:8.4f} {row['tae'] / base['tae']:6.2f} "
              f"{row['flicker']:8.4f} {row['flicker'] / base['flicker']:6.2f} {row['absrel']:7.4f} "
              f"{row['latency_frames'][0]:8.1f}/{row['latency_frames'][1]:<6d} "
              f"{row['latency_s'][0]:7.3f}/{row['latency_s'][1]:<7.3f} {row['windows']:7d} "
              f"{row['s_per_window']:9.3f} {row['fps']:9.2f} {row['fps'] / base['fps']:6.2f}")
    for name, relative in references:
        quality = _quality(relative, gt, poses, camera)
        print(f"{name:<43} {quality['tae']:8.4f} {quality['tae'] / base['tae']:6.2f} "
              f"{quality['flicker']:8.4f} {quality['flicker'] / base['flicker']:6.2f} {quality['absrel']:7.4f}")
    print(f"device: {base['device']}; image-mode windows = frames (one predict each); video frames/s = "
          "frames emitted / seconds spent in windows; latency s = push -> emission wall time with frames "
          "pushed back to back (live, add latency frames x the camera period)")
    if random_names:
        print(RANDOM_WEIGHTS_NOTE.format(names=", ".join(random_names)))
    return 0
