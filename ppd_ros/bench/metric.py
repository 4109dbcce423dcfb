"""`ppd bench metric`: metric alignment quality on synthetic sequences with exact depth.

The "prediction" is the ground truth normalised like PPD's training target, passed through a random
monotone affine-in-log distortion plus noise, so the numbers measure the alignment, not a network.
Printed: AbsRel after alignment with a dense reference and with a sparse LiDAR one (with plain least
squares on the same sparse points as the baseline that outliers break), per-frame scale jitter with
and without the temporal filter, how many frames the filter needs to follow a true scale step, and
the filter's trade-off on a sequence whose relative scale drifts (as PPD's does, normalised per
frame, when the view changes): accuracy and largest frame-to-frame step with vs without it.
test/test_metric.py asserts bounds on the same measurements at a smaller size.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import numpy as np

from ppd_ros.metric.alignment import (RobustFitConfig, relative_to_metres, fit_log_depth, least_squares_scale_shift,
                                      valid_log_pairs)
from ppd_ros.metric.sparse import LidarProjector, quaternion_to_matrix
from ppd_ros.metric.temporal import ScaleShiftFilter, StableAlignment, TemporalFilterConfig

# LiDAR (x forward, y left, z up) mounted 10 cm left of and 5 cm above the camera: its pose in the
# camera optical frame (x right, y down, z forward).
LIDAR_TRANSLATION = (-0.1, -0.05, 0.02)
LIDAR_ROTATION_XYZW = (0.5, -0.5, 0.5, 0.5)  # optical x = -lidar y, y = -lidar z, z = lidar x


def pinhole_K(height: int, width: int, horizontal_fov_deg: float = 70.0) -> np.ndarray:
    f = 0.5 * width / math.tan(math.radians(horizontal_fov_deg) / 2)
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1.0]])


def synthetic_depth(height: int, width: int, K: np.ndarray, seed: int) -> np.ndarray:
    """Z-depth (metres, float64) of a corridor-like scene: floor, a side wall, a back wall and
    fronto-parallel boxes at several depths (1.5 to 9 m), seen by a pinhole camera K."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    x = (u - K[0, 2]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    depth = np.full((height, width), rng.uniform(12.0, 20.0))  # back wall
    with np.errstate(divide="ignore"):
        floor = np.where(y > 1e-6, rng.uniform(1.0, 1.6) / y, np.inf)  # floor plane below the camera
        wall = np.where(x < -1e-6, -rng.uniform(1.5, 3.0) / x, np.inf)  # left wall
    depth = np.minimum(depth, np.minimum(floor, wall))
    for _ in range(4):
        box_depth = rng.uniform(1.5, 9.0)
        r0, c0 = rng.integers(0, height * 3 // 4), rng.integers(0, width * 3 // 4)
        r1, c1 = r0 + rng.integers(height // 8, height // 3), c0 + rng.integers(width // 8, width // 3)
        region = depth[r0:r1, c0:c1]
        np.minimum(region, box_depth, out=region)
    return depth


def ppd_normalised(depth: np.ndarray) -> tuple[np.ndarray, float, float]:
    """PPD's target: log(d + 1) normalised by its 2 % / 98 % quantiles (d < 80 m), clamped, -0.5.
    Returns (r, lo, hi)."""
    log_depth = np.log1p(depth)
    lo, hi = np.quantile(log_depth[depth < 80], [0.02, 0.98])
    hi = max(hi, lo + 1e-6)
    return np.clip((log_depth - lo) / (hi - lo), -0.5, 1.0) - 0.5, float(lo), float(hi)


@dataclass(frozen=True)
class Distortion:
    """r = gain * ppd_normalised + offset + N(0, noise): monotone and affine in log(d + 1)."""

    gain: float
    offset: float
    noise: float

    def apply(self, normalised: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.gain * normalised + self.offset + rng.normal(0.0, self.noise, normalised.shape)

    def true_log_scale(self, lo: float, hi: float) -> float:
        """log of the scale that maps the distorted r back to log(d + 1)."""
        return math.log((hi - lo) / self.gain)


def random_distortion(rng: np.random.Generator, noise: float) -> Distortion:
    return Distortion(float(rng.uniform(0.7, 1.4)), float(rng.uniform(-0.2, 0.2)), noise)


def dense_reference(depth: np.ndarray, rng: np.random.Generator, noise: float = 0.05,
                    invalid: float = 0.05) -> np.ndarray:
    """Dense metric reference (MoGe-2-like): multiplicative noise per pixel, a fraction invalid (NaN)."""
    reference = depth * np.exp(rng.normal(0.0, noise, depth.shape))
    reference[rng.random(depth.shape) < invalid] = np.nan
    return reference


def lidar_points(depth: np.ndarray, K: np.ndarray, rng: np.random.Generator, count: int = 500,
                 noise: float = 0.05, outliers: float = 0.10) -> np.ndarray:
    """``count`` LiDAR returns (N, 3) in the LiDAR frame on the surfaces of ``depth``: range noise
    ``noise`` (relative), a fraction ``outliers`` at a random range (x0.3 to x3)."""
    height, width = depth.shape
    pixel = rng.choice(height * width, size=count, replace=False)
    v, u = np.divmod(pixel, width)
    z = depth[v, u]
    camera = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], axis=1)
    factor = 1.0 + rng.normal(0.0, noise, count)
    wrong = rng.random(count) < outliers
    factor[wrong] = rng.uniform(0.3, 3.0, wrong.sum())
    camera *= factor[:, None]
    rotation = quaternion_to_matrix(*LIDAR_ROTATION_XYZW)
    return (camera - np.asarray(LIDAR_TRANSLATION)) @ rotation  # R^T (p - t), row vectors


def abs_rel(prediction: np.ndarray, truth: np.ndarray) -> float:
    valid = np.isfinite(prediction) & (truth > 0)
    return float(np.mean(np.abs(prediction[valid] - truth[valid]) / truth[valid]))


@dataclass(frozen=True)
class AccuracyResult:
    dense_abs_rel: float  # robust fit to the dense reference
    sparse_abs_rel: float  # robust fit to the projected LiDAR points
    sparse_least_squares_abs_rel: float  # plain least squares on the same points (baseline)
    oracle_abs_rel: float  # least squares against the exact depth: the floor set by prediction noise
    sparse_points: float  # mean number of projected reference pixels


def measure_accuracy(height: int = 192, width: int = 256, trials: int = 8, seed: int = 0,
                     prediction_noise: float = 0.01) -> AccuracyResult:
    """Mean AbsRel over ``trials`` random scenes for each way of getting the metric scale."""
    K = pinhole_K(height, width)
    projector = LidarProjector(LIDAR_TRANSLATION, LIDAR_ROTATION_XYZW)
    sums = np.zeros(5)
    for trial in range(trials):
        rng = np.random.default_rng([seed, trial])
        depth = synthetic_depth(height, width, K, seed=int(rng.integers(2**31)))
        normalised, _, _ = ppd_normalised(depth)
        relative = random_distortion(rng, prediction_noise).apply(normalised, rng)

        dense_fit = fit_log_depth(relative, dense_reference(depth, rng), seed=trial)
        sparse = projector.project(lidar_points(depth, K, rng), K, height, width)
        sparse_fit = fit_log_depth(relative, sparse, seed=trial)
        valid = np.isfinite(sparse)
        ls_scale, ls_shift = least_squares_scale_shift(relative, np.log1p(np.where(valid, sparse, 0)), valid)
        oracle_scale, oracle_shift = least_squares_scale_shift(relative, np.log1p(depth), np.ones_like(depth))
        sums += [abs_rel(relative_to_metres(relative, dense_fit.scale, dense_fit.shift), depth),
                 abs_rel(relative_to_metres(relative, sparse_fit.scale, sparse_fit.shift), depth),
                 abs_rel(relative_to_metres(relative, ls_scale, ls_shift), depth),
                 abs_rel(relative_to_metres(relative, oracle_scale, oracle_shift), depth),
                 valid_log_pairs(relative, sparse)[0].size]
    return AccuracyResult(*(sums / trials))


@dataclass(frozen=True)
class StabilityResult:
    jitter_raw: float  # std of the per-frame fitted log-scale over a static sequence
    jitter_filtered: float  # the same after the temporal filter
    large_step: float  # log-scale step of the step test (above the jump threshold)
    frames_to_follow_large: int  # frames after the step until the filter stays within 25 % of it
    small_step: float  # a step below the jump threshold (followed by the Kalman gain alone)
    frames_to_follow_small: int
    resets: int  # filter resets in the static sequence after the first frame (should be 0)

    @property
    def jitter_ratio(self) -> float:
        return self.jitter_raw / self.jitter_filtered


def _sequence_log_scales(depth, K, distortions, rng, filter_config: TemporalFilterConfig,
                         fit_config: RobustFitConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per frame: (raw fitted log-scale, filtered log-scale, true log-scale), and the reset count."""
    height, width = depth.shape
    normalised, lo, hi = ppd_normalised(depth)
    projector = LidarProjector(LIDAR_TRANSLATION, LIDAR_ROTATION_XYZW)
    temporal = ScaleShiftFilter(filter_config)
    raw, filtered, truth, resets = [], [], [], 0
    for frame, distortion in enumerate(distortions):
        relative = distortion.apply(normalised, rng)
        reference = projector.project(lidar_points(depth, K, rng), K, height, width)
        fit = fit_log_depth(relative, reference, config=fit_config, seed=frame)
        if not fit.ok:
            raise RuntimeError(f"fit failed on frame {frame}: {fit.status.value}")
        out = temporal.update(fit.scale, fit.shift, stamp=frame / 30.0, camera_key="camera")
        resets += int(out.reset and frame > 0)
        raw.append(math.log(fit.scale))
        filtered.append(out.log_scale)
        truth.append(distortion.true_log_scale(lo, hi))
    return np.array(raw), np.array(filtered), np.array(truth), resets


def _frames_to_follow(filtered: np.ndarray, truth: np.ndarray, step_frame: int, tolerance: float) -> int:
    """Frames from the step (1 = the step frame itself) until the filtered value stays within
    ``tolerance`` of the truth for the rest of the sequence; len + 1 if it never does."""
    error = np.abs(filtered[step_frame:] - truth[step_frame:]) > tolerance
    if error[-1]:
        return error.size + 1
    bad = np.flatnonzero(error)
    return int(bad[-1]) + 2 if bad.size else 1


def measure_stability(height: int = 192, width: int = 256, frames: int = 100, step_frames: int = 40,
                      seed: int = 0, prediction_noise: float = 0.01,
                      filter_config: TemporalFilterConfig = TemporalFilterConfig(),
                      fit_config: RobustFitConfig = RobustFitConfig()) -> StabilityResult:
    """Jitter on a static sequence (new prediction noise and new LiDAR sample every frame) and the
    response to a true scale step (the distortion gain changes at frame ``step_frames // 3``)."""
    rng = np.random.default_rng(seed)
    K = pinhole_K(height, width)
    depth = synthetic_depth(height, width, K, seed=seed)
    distortion = random_distortion(rng, prediction_noise)
    warmup = 10  # both series measured on the same frames, after the filter has settled
    raw, filtered, _, resets = _sequence_log_scales(depth, K, [distortion] * frames, rng, filter_config, fit_config)

    def step_response(gain_factor: float) -> tuple[float, int]:
        step_frame = step_frames // 3
        after = Distortion(distortion.gain * gain_factor, distortion.offset, distortion.noise)
        sequence = [distortion] * step_frame + [after] * (step_frames - step_frame)
        _, out, truth, _ = _sequence_log_scales(depth, K, sequence, rng, filter_config, fit_config)
        step = float(truth[-1] - truth[0])
        return step, _frames_to_follow(out, truth, step_frame, 0.25 * abs(step))

    large_step, frames_large = step_response(1.25)
    small_step, frames_small = step_response(1.05)
    return StabilityResult(float(np.std(raw[warmup:])), float(np.std(filtered[warmup:])), large_step, frames_large,
                           small_step, frames_small, resets)


# The noise levels the filter had before the drift scenario: measurement noise 0.05 (the fit's own
# standard errors, ~0.003 for 500 points, are below it and so ignored), process noise 0.006.
FIXED_NOISE_FILTER = TemporalFilterConfig(measurement_std=0.05, process_std=0.006)


@dataclass(frozen=True)
class DriftResult:
    name: str  # the filter variant
    log_error_std: float  # std of log(GT / prediction) over every valid pixel of every frame
    scale_error_std: float  # std over frames of the frame's mean log(GT / prediction): the mapping's error
    largest_step: float  # largest frame-to-frame change of the frame's mean log prediction


def drifting_distortions(base: Distortion, frames: int, amplitude: float = 0.2, period: float = 30.0):
    """``base`` with its gain drifting by up to exp(+-amplitude) (a sine of ``period`` frames: at
    0.2 / 30 the relative scale moves by up to 0.042 in log per frame) and its offset by half that."""
    return [Distortion(base.gain * math.exp(amplitude * math.sin(2 * math.pi * t / period)),
                       base.offset + 0.5 * amplitude * math.sin(2 * math.pi * t / (0.7 * period) + 1.0), base.noise)
            for t in range(frames)]


def measure_drift(height: int = 192, width: int = 256, frames: int = 120, seed: int = 0, points: int = 500,
                  range_noise: float = 0.05, amplitude: float = 0.2, period: float = 30.0,
                  prediction_noise: float = 0.01,
                  variants: dict[str, TemporalFilterConfig | None] | None = None) -> list[DriftResult]:
    """A static scene seen by a model whose relative scale drifts (:func:`drifting_distortions`),
    aligned every frame to ``points`` LiDAR returns (``range_noise``, 10 % outliers) through the
    node's own per-frame path (:class:`StableAlignment`: robust fit, temporal filter, held value on a
    failed fit), once per filter variant (None = no filter) on the same frames. The ideal output is
    the same exact depth in every frame, so a lagging filter shows in both numbers."""
    variants = variants if variants is not None else {"no filter": None, "filter (default)": TemporalFilterConfig(),
                                                      "meas. 0.05, proc. 0.006": FIXED_NOISE_FILTER}
    rng = np.random.default_rng(seed)
    K = pinhole_K(height, width)
    depth = synthetic_depth(height, width, K, seed=seed)
    normalised, _, _ = ppd_normalised(depth)
    projector = LidarProjector(LIDAR_TRANSLATION, LIDAR_ROTATION_XYZW)
    sequence = [(distortion.apply(normalised, rng), projector.project(lidar_points(
        depth, K, rng, count=points, noise=range_noise), K, height, width))
        for distortion in drifting_distortions(random_distortion(rng, prediction_noise), frames, amplitude, period)]
    results = []
    for name, filter_config in variants.items():
        alignment = StableAlignment(RobustFitConfig(), filter_config, seed)
        errors, frame_errors, means = [], [], []
        for frame, (relative, reference) in enumerate(sequence):
            aligned = alignment.align(relative, reference, stamp=frame / 30.0, camera_key="camera")
            valid = np.isfinite(aligned.depth)
            log_error = np.log(depth[valid] / aligned.depth[valid])
            errors.append(log_error)
            frame_errors.append(float(log_error.mean()))
            means.append(float(np.log(aligned.depth[valid]).mean()))
        results.append(DriftResult(name, float(np.concatenate(errors).std()), float(np.std(frame_errors)),
                                   float(np.max(np.abs(np.diff(means))))))
    return results


def _print_drift(title: str, results: list[DriftResult]) -> None:
    base = results[0]
    print(title)
    for r in results:
        print(f"  {r.name:24s} std log(GT/pred) {r.log_error_std:.4f} ({r.log_error_std / base.log_error_std:.3f}x)   "
              f"scale error {r.scale_error_std:.4f} ({r.scale_error_std / base.scale_error_std:.2f}x)   "
              f"largest step {r.largest_step:.4f} ({r.largest_step / base.largest_step:.2f}x)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--trials", type=int, default=8, help="random scenes for the AbsRel comparison")
    parser.add_argument("--frames", type=int, default=100, help="length of the static and drift sequences")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    acc = measure_accuracy(args.height, args.width, args.trials, args.seed)
    print(f"synthetic scenes {args.width}x{args.height}, {args.trials} trials; prediction = PPD-normalised GT, "
          "random affine-in-log distortion, noise 0.01")
    print("metric AbsRel after alignment (mean over trials):")
    print(f"  oracle (LS vs exact depth)        {acc.oracle_abs_rel:.4f}")
    print(f"  dense reference (5% noise)        {acc.dense_abs_rel:.4f}")
    print(f"  sparse LiDAR, robust fit          {acc.sparse_abs_rel:.4f}  = "
          f"{acc.sparse_abs_rel / acc.dense_abs_rel:.2f}x dense  ({acc.sparse_points:.0f} px of 500 points, "
          "5% noise, 10% outliers)")
    print(f"  sparse LiDAR, plain least squares {acc.sparse_least_squares_abs_rel:.4f}  = "
          f"{acc.sparse_least_squares_abs_rel / acc.dense_abs_rel:.2f}x dense (baseline without robustness)")
    st = measure_stability(args.height, args.width, args.frames, seed=args.seed)
    print(f"scale jitter over a static sequence of {args.frames} frames (std of log-scale, sparse reference):")
    print(f"  without filter {st.jitter_raw:.5f}   with filter {st.jitter_filtered:.5f}   "
          f"ratio {st.jitter_ratio:.2f}x   resets after the first frame: {st.resets}")
    print(f"frames to follow a true scale step (within 25% of the step): "
          f"log-step {st.large_step:+.3f} -> {st.frames_to_follow_large} frames; "
          f"log-step {st.small_step:+.3f} (below the jump threshold) -> {st.frames_to_follow_small} frames")
    print(f"drift: the model's relative scale drifts up to 0.042 (log) per frame over {args.frames} frames; ratios "
          "against no filter, same frames (the ideal output does not change)")
    _print_drift("  500 LiDAR points, 5% range noise, 10% outliers:",
                 measure_drift(args.height, args.width, args.frames, args.seed, points=500, range_noise=0.05))
    _print_drift("  60 LiDAR points, 10% range noise, 10% outliers:",
                 measure_drift(args.height, args.width, args.frames, args.seed, points=60, range_noise=0.10))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
