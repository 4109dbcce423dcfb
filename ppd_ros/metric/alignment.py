"""Fit PPD's relative log-depth to a metric reference, and apply the fit.

PPD predicts ``r``, log(depth + 1) normalised per frame, so metric depth follows from an affine map
in log space: ``log(d + 1) = scale * r + shift``. The fit runs on valid pairs (reference finite and
> 0, prediction finite): per pixel of a reference image on the prediction grid, or per sample of
:class:`ReferencePoints` (every sample of a sparse reference; several may share a grid pixel). It
is robust: a least-median-of-squares search over random point pairs gives a start that ignores up
to half the points, then iteratively reweighted least squares with Tukey's biweight refines it.
Degenerate fits fall back to a value the caller supplies, with a flag.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np


class FitStatus(str, enum.Enum):
    """Outcome of one fit. Anything but ``OK`` / ``FIXED`` means the fallback was returned."""

    OK = "ok"
    FIXED = "fixed"  # scale and shift given by the user, nothing fitted
    TOO_FEW_POINTS = "too_few_points"  # fewer valid pixel pairs than ``min_points``
    DEGENERATE_SLOPE = "degenerate_slope"  # slope <= min_scale, not finite, or no spread in r
    TOO_SPREAD = "too_spread"  # inlier residual RMS above ``max_residual``
    TOO_FEW_INLIERS = "too_few_inliers"  # inlier ratio below ``min_inlier_ratio``


@dataclass(frozen=True)
class RobustFitConfig:
    """Settings of :func:`fit_log_depth`. Residuals are in log(d + 1) units (0.1 is about 10 %)."""

    min_points: int = 20
    max_points: int = 50_000  # random subset used when more valid pairs exist (speed, dense sources)
    hypotheses: int = 200  # random point pairs tried by the least-median search
    scoring_points: int = 2_000  # subset on which each hypothesis' median residual is measured
    tukey_c: float = 4.685  # Tukey cut-off in robust sigmas (95 % efficiency under Gaussian noise)
    sigma_floor: float = 1e-4  # lower bound of the robust sigma, so exact data stay well defined
    irls_iterations: int = 30
    min_relative_spread: float = 1e-3  # std of r below this cannot define a slope
    min_scale: float = 0.0  # slope must be strictly above this
    max_residual: float = 0.3  # inlier RMS above this is TOO_SPREAD
    min_inlier_ratio: float = 0.3


@dataclass(frozen=True)
class AlignmentFit:
    """Result of a fit. ``scale``/``shift`` are the values to use (the fallback unless ``ok``);
    ``fitted_scale``/``fitted_shift`` are what the data gave (NaN when nothing could be fitted)."""

    scale: float
    shift: float
    status: FitStatus
    residual: float  # RMS of the inlier residuals, log(d + 1) units; NaN when not fitted
    inlier_ratio: float  # inliers / num_points; 0 when no line was accepted (see fit_log_depth)
    num_points: int  # valid reference pairs
    fitted_scale: float = math.nan
    fitted_shift: float = math.nan
    log_scale_std: float = math.nan  # standard error of log(fitted_scale) from the inlier residuals
    shift_std: float = math.nan  # standard error of fitted_shift

    @property
    def ok(self) -> bool:
        return self.status in (FitStatus.OK, FitStatus.FIXED)


def fixed_fit(scale: float, shift: float) -> AlignmentFit:
    """The ``fixed`` metric source: user-given scale and shift, flagged ``FIXED``."""
    if not (math.isfinite(scale) and math.isfinite(shift) and scale > 0):
        raise ValueError(f"fixed alignment needs a finite positive scale and finite shift, got {scale}, {shift}")
    return AlignmentFit(float(scale), float(shift), FitStatus.FIXED, math.nan, 0.0, 0, float(scale), float(shift))


def to_numpy(array) -> np.ndarray:
    """numpy view of a numpy array or torch tensor (detached, on the CPU)."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def least_squares_scale_shift(prediction, target, mask=None, dtype=np.float32) -> tuple[float, float]:
    """Plain least squares ``target ~ scale * prediction + shift`` over every masked element (all
    elements without a mask). The one least-squares fit of ppd_ros (evaluation, benchmarks, video
    window chaining).

    By default the same arithmetic as the official code (float32 normal equations over all
    elements at once, golden ``align.ssf``); evaluation passes ``dtype=np.float64`` for exact fits.
    An empty mask gives (1, 0) as there. A constant prediction gives
    (0, mean target), the best constant (the official code returns (1, 0) there too).
    """
    p = to_numpy(prediction).astype(dtype)
    t = to_numpy(target).astype(dtype)
    m = np.ones_like(p) if mask is None else to_numpy(mask).astype(dtype)
    a00 = np.sum(m * p * p)
    a01 = np.sum(m * p)
    a11 = np.sum(m)
    b0 = np.sum(m * p * t)
    b1 = np.sum(m * t)
    det = a00 * a11 - a01 * a01
    if det == 0:
        return (0.0, float(b1 / a11)) if a11 > 0 else (1.0, 0.0)
    return float((a11 * b0 - a01 * b1) / det), float((-a01 * b0 + a00 * b1) / det)


@dataclass(frozen=True)
class ReferencePoints:
    """Metric reference samples on a prediction grid of ``shape`` (height, width): sample i has
    depth ``depth[i]`` (metres) and falls in grid pixel (``rows[i]``, ``cols[i]``). Unlike a
    reference image resampled to the grid, every sample counts, whatever the grid size."""

    rows: np.ndarray  # (N,) int64
    cols: np.ndarray  # (N,) int64
    depth: np.ndarray  # (N,) float32 metres
    shape: tuple[int, int]

    @property
    def count(self) -> int:
        return int(self.depth.size)


def valid_log_pairs(relative, reference_depth, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """(r, log(d + 1)) as float64 1-D arrays over the reference samples that are finite and > 0
    where the prediction is finite and ``mask`` (optional) is true. ``reference_depth``: an image
    on the prediction grid (shapes must match after squeezing) or :class:`ReferencePoints`."""
    r = np.squeeze(to_numpy(relative)).astype(np.float64)
    m = None
    if mask is not None:
        m = np.squeeze(to_numpy(mask)).astype(bool)
        if m.shape != r.shape:
            raise ValueError(f"mask {m.shape} does not match the prediction {r.shape}")
    if isinstance(reference_depth, ReferencePoints):
        if tuple(reference_depth.shape) != r.shape:
            raise ValueError(f"prediction {r.shape} and reference points of grid {reference_depth.shape} differ")
        r = r[reference_depth.rows, reference_depth.cols]
        d = reference_depth.depth.astype(np.float64)
        m = m[reference_depth.rows, reference_depth.cols] if m is not None else None
    else:
        d = np.squeeze(to_numpy(reference_depth)).astype(np.float64)
        if r.shape != d.shape:
            raise ValueError(f"prediction {r.shape} and reference {d.shape} are not on the same grid")
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(r) & np.isfinite(d) & (d > 0)
    if m is not None:
        valid &= m
    return r[valid], np.log1p(d[valid])


def _weighted_line(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    sw = w.sum()
    mx = (w * x).sum() / sw
    my = (w * y).sum() / sw
    dx = x - mx
    sxx = (w * dx * dx).sum()
    if sxx <= 0:
        return math.nan, math.nan
    slope = (w * dx * (y - my)).sum() / sxx
    return float(slope), float(my - slope * mx)


def _least_median_start(x: np.ndarray, y: np.ndarray, config: RobustFitConfig,
                        rng: np.random.Generator) -> tuple[float, float]:
    """Line through the random pair whose median absolute residual (on a subset) is smallest."""
    n = x.size
    score_idx = rng.choice(n, size=min(n, config.scoring_points), replace=False)
    xs, ys = x[score_idx], y[score_idx]
    i = rng.integers(0, n, size=config.hypotheses)
    j = rng.integers(0, n, size=config.hypotheses)
    dx = x[j] - x[i]
    usable = np.abs(dx) > 1e-9
    if not usable.any():
        return _weighted_line(x, y, np.ones_like(x))
    slopes = (y[j] - y[i])[usable] / dx[usable]
    shifts = y[i][usable] - slopes * x[i][usable]
    residuals = np.abs(ys[None, :] - (slopes[:, None] * xs[None, :] + shifts[:, None]))
    best = int(np.argmin(np.median(residuals, axis=1)))
    return float(slopes[best]), float(shifts[best])


def _robust_sigma(residuals: np.ndarray, floor: float) -> float:
    return max(1.4826 * float(np.median(np.abs(residuals))), floor)


@dataclass(frozen=True)
class LineFit:
    slope: float
    intercept: float
    residual: float  # RMS of the inlier residuals (NaN without inliers)
    inlier_ratio: float
    slope_std: float  # standard errors from the inlier residuals (NaN with fewer than 3 inliers)
    intercept_std: float


def robust_line_fit(x: np.ndarray, y: np.ndarray, config: RobustFitConfig = RobustFitConfig(),
                    seed: int = 0) -> LineFit:
    """Robust ``y ~ slope * x + intercept``: least-median start, Tukey IRLS refinement;
    deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    slope, intercept = _least_median_start(x, y, config, rng)
    for _ in range(config.irls_iterations):
        residuals = y - (slope * x + intercept)
        u = residuals / (config.tukey_c * _robust_sigma(residuals, config.sigma_floor))
        w = np.where(np.abs(u) < 1, (1 - u * u) ** 2, 0.0)
        if w.sum() <= 0:
            break
        new_slope, new_intercept = _weighted_line(x, y, w)
        if not math.isfinite(new_slope):
            break
        converged = abs(new_slope - slope) < 1e-9 and abs(new_intercept - intercept) < 1e-9
        slope, intercept = new_slope, new_intercept
        if converged:
            break
    residuals = y - (slope * x + intercept)
    inliers = np.abs(residuals) < config.tukey_c * _robust_sigma(residuals, config.sigma_floor)
    rms = float(np.sqrt(np.mean(residuals[inliers] ** 2))) if inliers.any() else math.nan
    slope_std = intercept_std = math.nan
    n = int(inliers.sum())
    if n > 2:  # ordinary least-squares standard errors on the inliers
        xi = x[inliers]
        sigma = math.sqrt(float(np.sum(residuals[inliers] ** 2)) / (n - 2))
        mean = float(xi.mean())
        sxx = float(np.sum((xi - mean) ** 2))
        if sxx > 0:
            slope_std = sigma / math.sqrt(sxx)
            intercept_std = sigma * math.sqrt(1.0 / n + mean * mean / sxx)
    return LineFit(slope, intercept, rms, float(inliers.mean()), slope_std, intercept_std)


def fit_log_depth(relative, reference_depth, mask=None, *, fallback: tuple[float, float] | None = None,
                  config: RobustFitConfig = RobustFitConfig(), seed: int = 0) -> AlignmentFit:
    """Robust fit of ``log(reference + 1) = scale * relative + shift`` on valid pixels.

    ``relative``: PPD output (H, W) (numpy or torch, leading singleton dims allowed);
    ``reference_depth``: metric depth in metres on the same grid (NaN / <= 0 = no reference) or
    :class:`ReferencePoints` on it; ``mask``: optional extra validity (e.g. MoGe-2's mask);
    ``fallback``: (scale, shift) returned when the fit is degenerate, typically the previous
    frame's value; identity (1, 0) if None.

    ``inlier_ratio`` is the share of points the line explains when it was accepted (or rejected as
    TOO_FEW_INLIERS, which it is the reason of). A line rejected as TOO_SPREAD or DEGENERATE_SLOPE
    explains no point: 0 (its Tukey band, scaled to the residuals' own spread, would call every
    point of an all-outlier reference an inlier).
    """
    fallback_scale, fallback_shift = fallback if fallback is not None else (1.0, 0.0)
    x, y = valid_log_pairs(relative, reference_depth, mask)
    n = int(x.size)

    def failed(status: FitStatus, residual=math.nan, inlier_ratio=0.0, scale=math.nan, shift=math.nan):
        return AlignmentFit(float(fallback_scale), float(fallback_shift), status, residual, inlier_ratio, n,
                            scale, shift)

    if n < max(config.min_points, 2):
        return failed(FitStatus.TOO_FEW_POINTS)
    if n > config.max_points:
        keep = np.random.default_rng(seed).choice(n, size=config.max_points, replace=False)
        x, y = x[keep], y[keep]
    if float(np.std(x)) < config.min_relative_spread:
        return failed(FitStatus.DEGENERATE_SLOPE)
    line = robust_line_fit(x, y, config, seed)
    scale, shift, residual, inlier_ratio = line.slope, line.intercept, line.residual, line.inlier_ratio
    if not (math.isfinite(scale) and math.isfinite(shift)) or scale <= config.min_scale:
        return failed(FitStatus.DEGENERATE_SLOPE, residual, 0.0, scale, shift)
    if inlier_ratio < config.min_inlier_ratio:
        return failed(FitStatus.TOO_FEW_INLIERS, residual, inlier_ratio, scale, shift)
    if not residual <= config.max_residual:
        return failed(FitStatus.TOO_SPREAD, residual, 0.0, scale, shift)
    return AlignmentFit(scale, shift, FitStatus.OK, residual, inlier_ratio, n, scale, shift,
                        line.slope_std / scale, line.intercept_std)


def relative_to_metres(relative, scale: float, shift: float):
    """Metres from PPD's relative log-depth: ``exp(scale * relative + shift) - 1``, NaN where that
    is not a positive finite depth (REP 117: NaN = no depth). The one such conversion in ppd_ros.

    numpy in, numpy out (float64 stays float64, anything else is float32); a torch tensor stays a
    float32 torch tensor on its device.
    """
    if hasattr(relative, "detach"):
        import torch

        depth = torch.expm1(relative.float() * scale + shift)
        return torch.where((depth > 0) & (depth < math.inf), depth, torch.full_like(depth, math.nan))
    dtype = np.float64 if np.asarray(relative).dtype == np.float64 else np.float32
    r = np.asarray(relative, dtype=dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        depth = np.expm1(r * dtype(scale) + dtype(shift))
        depth[~((depth > 0) & (depth < np.inf))] = np.nan
    return depth
