"""`ppd bench demo-model`: the shipped demo model (``ppd-demo``) against trivial baselines on
held-out synthetic scenes.

Every method yields a relative map ``r``; each is aligned to the exact depth the same way as in
training validation (least squares ``log(depth + 1) ~ a r + b`` over pixels with 0 < depth < 80 m)
and scored by AbsRel and delta1 in metres. Baselines (all fitted with the ground truth, so they are
the best of their kind):

* ``constant``: r = 0, i.e. the best single depth in log space;
* ``row gradient``: r = image row, the best depth that changes only from top to bottom;
* ``plane``: the least-squares plane 1/depth = a u + b v + c (exact depth of the best single
  3-D plane), r = log(plane depth + 1).

Model rows also give ``kept``: the share of the cloud that the node's flying-pixel filter keeps
(the exact depth's own share is the last row; noisy depth loses points as salt-and-pepper).

Held-out frames are seeds from :data:`HELD_OUT_SEED` on (below 1001000), of the ``rooms`` family
or the ``varied`` one (training/demo_varied.yaml). Training used rooms seeds below 430000
(training/demo_synthetic.yaml and demo_varied.yaml) and varied seeds 2000000-2099999; validation
900000-900015.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import numpy as np

HELD_OUT_SEED = 1_000_000
from ppd_ros.constants import MAX_DEPTH_M  # noqa: E402 - the official target clip; farther pixels are ignored
BASELINES = ("constant", "row gradient", "plane")


@dataclass(frozen=True)
class FrameScore:
    abs_rel: float
    delta1: float
    kept: float | None = None  # share of the cloud the flying-pixel filter keeps


def held_out_frame(seed: int, width: int = 96, height: int = 64, horizontal_fov_deg: float = 60.0,
                   family: str = "rooms", photos=()) -> tuple[np.ndarray, np.ndarray, object]:
    """(uint8 RGB (H, W, 3), depth (H, W) metres, camera) of synthetic sample ``seed``, rendered
    the way the training data of ``family`` is (``ppd_ros.synthetic.synthetic_view``)."""
    from ppd_ros.synthetic import render, synthetic_view

    scene, pose, camera = synthetic_view(seed, width, height, family, horizontal_fov_deg, photos)
    rgb, depth = render(scene, camera, pose)
    return rgb, depth, camera


def kept_share(depth: np.ndarray, camera, size: tuple[int, int] | None = None) -> float:
    """Share of the pixels with depth whose points the node's flying-pixel filter (default
    thresholds) keeps in the cloud, judged at ``size`` (height, width; default the depth's own):
    a model's depth upsampled by nearest from its inference size has flat 2x2 blocks, which the
    filter never removes, so it is judged at the size the model ran at."""
    from ppd_ros.geometry.cloud import flying_pixel_mask
    from ppd_ros.geometry.resize import resize_nearest

    if size is not None and tuple(size) != depth.shape:
        depth = resize_nearest(depth, *size)
        camera = camera.scaled_to(size[1], size[0])
    valid = valid_depth(depth)
    removed = flying_pixel_mask(depth, camera.ray_grid()).numpy()
    return float((valid & ~removed).sum() / max(int(valid.sum()), 1))


def valid_depth(depth: np.ndarray) -> np.ndarray:
    """Pixels the alignment and the metrics use: finite, > 0 and < 80 m."""
    return np.isfinite(depth) & (depth > 0) & (depth < MAX_DEPTH_M)


def align_log_depth(relative: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Metric depth of ``relative`` after the least-squares fit of log(depth + 1) ~ a r + b over
    :func:`valid_depth` pixels (a constant ``r`` gets a = 0: the best constant depth)."""
    from ppd_ros.evaluation.metrics import align_log_depth as align

    return align(relative, depth, valid_depth(depth))[0]


def score(aligned: np.ndarray, depth: np.ndarray) -> FrameScore:
    """AbsRel and delta1 (max(pred/gt, gt/pred) < 1.25) over :func:`valid_depth` pixels."""
    from ppd_ros.evaluation.metrics import abs_rel, delta1

    valid = valid_depth(depth) & np.isfinite(aligned)
    return FrameScore(abs_rel(aligned, depth, valid), delta1(aligned, depth, valid))


def baseline_relative(name: str, depth: np.ndarray) -> np.ndarray:
    """The relative map of baseline ``name`` (:data:`BASELINES`) for a frame with GT ``depth``."""
    height, width = depth.shape
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    if name == "constant":
        return np.zeros((height, width))
    if name == "row gradient":
        return rows
    if name == "plane":
        valid = valid_depth(depth)
        design = np.stack([cols[valid], rows[valid], np.ones(int(valid.sum()))], axis=1)
        coeffs, *_ = np.linalg.lstsq(design, 1.0 / depth[valid].astype(np.float64), rcond=None)
        inverse = np.stack([cols, rows, np.ones_like(rows)], axis=-1) @ coeffs
        plane_depth = 1.0 / np.maximum(inverse, 1.0 / MAX_DEPTH_M)  # behind / at the horizon: far
        return np.log1p(plane_depth)
    raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")


def model_relative(estimator, rgb: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """The backend's relative depth resized (nearest) to the frame, and the (height, width) it ran at."""
    from ppd_ros.geometry.resize import resize_nearest

    (output,) = estimator.push(rgb, None)
    return resize_nearest(output.relative.float().cpu().numpy(), *rgb.shape[:2]), tuple(output.size)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=32, help="held-out scenes (seeds 1000000, 1000001, ...)")
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--height", type=int, default=64)
    from ppd_ros.synthetic import FAMILIES

    parser.add_argument("--family", choices=FAMILIES, default="rooms",
                        help="synthetic scene family: the first edition's rooms, or the varied family of the "
                             "second (ppd_ros.synthetic.varied)")
    parser.add_argument("--photo-dir", default=None, help="photos for the varied family's textures "
                                                           "(training used ../shared/samples/images)")
    parser.add_argument("--steps", default="1,2,4,8", help="comma-separated sampler step counts of the model")
    parser.add_argument("--model", action="append", default=None,
                        help="image model name or exported file; repeat to compare models (default ppd-demo)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="also write the table as JSON to this file")


def run(args: argparse.Namespace) -> int:
    import torch

    from ppd_ros.backends import BackendOptions, create_backend
    from ppd_ros.model_specs import model_spec
    from ppd_ros.synthetic.varied import photo_files

    torch.set_num_threads(args.threads)
    step_counts = [int(s) for s in str(args.steps).split(",")]
    models = args.model or ["ppd-demo"]
    estimators = {f"{model} ({n} steps)": create_backend(model_spec(model), BackendOptions(device="cpu", steps=n))
                  for model in models for n in step_counts}
    photos = photo_files(args.photo_dir)
    scores: dict[str, list[FrameScore]] = {name: [] for name in (*estimators, *BASELINES, "exact depth")}
    seconds = {name: 0.0 for name in estimators}
    for i in range(args.frames):
        rgb, depth, camera = held_out_frame(HELD_OUT_SEED + i, args.width, args.height, family=args.family,
                                            photos=photos)
        for name, estimator in estimators.items():
            start = time.perf_counter()
            relative, model_size = model_relative(estimator, rgb)
            seconds[name] += time.perf_counter() - start
            aligned = align_log_depth(relative, depth)
            frame = score(aligned, depth)
            scores[name].append(FrameScore(frame.abs_rel, frame.delta1, kept_share(aligned, camera, model_size)))
        for name in BASELINES:
            scores[name].append(score(align_log_depth(baseline_relative(name, depth), depth), depth))
        scores["exact depth"].append(FrameScore(0.0, 1.0, kept_share(depth, camera)))

    print(f"held-out synthetic scenes ({args.family}): {args.frames} frames {args.width}x{args.height} (seeds "
          f"{HELD_OUT_SEED}..{HELD_OUT_SEED + args.frames - 1}); every method aligned by least squares in "
          f"log(depth + 1); kept: share of the cloud the flying-pixel filter keeps")
    width = max(28, *(len(n) + 1 for n in scores))
    print(f"{'method':<{width}} {'AbsRel':>8} {'delta1':>8} {'kept':>6} {'ms/frame':>9}")
    table = {}
    for name, frame_scores in scores.items():
        abs_rel = float(np.mean([s.abs_rel for s in frame_scores]))
        delta1 = float(np.mean([s.delta1 for s in frame_scores]))
        kept = None if frame_scores[0].kept is None else float(np.mean([s.kept for s in frame_scores]))
        ms = 1000 * seconds[name] / args.frames if name in seconds else None
        table[name] = dict(abs_rel=abs_rel, delta1=delta1, kept=kept, ms_per_frame=ms)
        print(f"{name:<{width}} {abs_rel:8.4f} {delta1:8.4f} {'' if kept is None else f'{kept:6.3f}':>6} "
              f"{'' if ms is None else f'{ms:9.1f}'}")
    best_baseline = min(BASELINES, key=lambda n: table[n]["abs_rel"])
    best_model = min(estimators, key=lambda n: table[n]["abs_rel"])
    print(f"best model row / best baseline ({best_baseline}) AbsRel: "
          f"{table[best_model]['abs_rel'] / table[best_baseline]['abs_rel']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(frames=args.frames, width=args.width, height=args.height, family=args.family,
                           first_seed=HELD_OUT_SEED, methods=table), f, indent=2)
    return 0


__all__ = ["BASELINES", "HELD_OUT_SEED", "FrameScore", "add_arguments", "align_log_depth", "baseline_relative",
           "held_out_frame", "kept_share", "model_relative", "run", "score", "valid_depth"]
