"""Keeping the metric scale still over time.

:class:`ScaleShiftFilter` smooths per-frame (log scale, shift) fits with a scalar Kalman filter per
component (random-walk model, per frame). Each measurement's noise is the fit's own standard error
(floored), so the filter smooths what the reference cannot pin down (few or noisy points) and
follows what a well-determined fit says: PPD normalises every frame on its own, so its relative
scale drifts as the view changes, and lagging behind that drift costs accuracy (``ppd bench
metric``, drift scenario). Measurements further from the state than their noise and that drift
explain are gated out as jumps; if such jumps persist for ``jump_frames`` consistent frames the
filter resets to them (a real change, e.g. a new reference). It also resets when the camera changes
(a key the caller passes) and on time gaps or time running backwards (stamps in seconds).

:class:`StableAlignment` chains a robust fit per frame with the filter: what the node calls.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable

import numpy as np

from ppd_ros.metric.alignment import AlignmentFit, RobustFitConfig, relative_to_metres, fit_log_depth


@dataclass(frozen=True)
class TemporalFilterConfig:
    """Noise levels are per frame, in log-scale and shift (log(d + 1)) units. The Kalman gain
    depends on process_std / measurement noise: a fit of 500 sparse points (standard error ~0.003,
    floored to 0.005) gets a gain of ~0.98 and is followed nearly as it is; one of 60 noisy points
    (~0.02) ~0.8, one of 30 (~0.04) ~0.6. A measurement more than ``jump_sigmas`` standard
    deviations of the innovation away (at least ~0.16 in log scale, 17 %) is a jump: gated out,
    and followed by the reset after ``jump_frames`` consistent ones. Tuned on ``ppd bench
    metric``'s drift scenario (``measure_drift``, the relative scale moving up to 0.042 per frame):
    at these values the filter costs no accuracy when the fit is precise and gains accuracy and
    smoothness when the reference is sparse and noisy."""

    measurement_std: float = 0.005  # floor of the fit's standard errors (and the noise when none is given)
    process_std: float = 0.04  # how far the model's relative scale may move per frame
    jump_sigmas: float = 4.0
    jump_frames: int = 3  # consistent jumps in a row that make the filter reset to them
    max_gap_s: float = 1.0  # a longer gap between stamps resets


@dataclass(frozen=True)
class FilteredScaleShift:
    scale: float
    shift: float
    log_scale: float
    reset: bool  # this frame (re)started the filter
    reason: str  # why it reset ("first", "camera_changed", "time_gap", "time_backwards", "jump") or ""
    rejected: bool  # this frame's measurement was gated out as a jump (state unchanged)


class ScaleShiftFilter:
    """Kalman filter over (log scale, shift) with jump gating and resets. See the module doc."""

    def __init__(self, config: TemporalFilterConfig = TemporalFilterConfig()):
        if config.jump_frames < 1:
            raise ValueError("jump_frames must be >= 1")
        self.config = config
        self.reset()

    def reset(self) -> None:
        self._state: np.ndarray | None = None  # (log scale, shift)
        self._variance = np.zeros(2)  # per component
        self._stamp: float | None = None
        self._camera_key: Hashable | None = None
        self._pending: list[tuple[np.ndarray, np.ndarray, int]] = []  # gated out in a row: (z, variance, frame)
        self._frame = 0  # updates since the reset
        self._last: FilteredScaleShift | None = None

    @property
    def current(self) -> FilteredScaleShift | None:
        """The latest output (None before the first update or after reset())."""
        return self._last

    def _restart(self, measurement: np.ndarray, variance: np.ndarray, reason: str) -> FilteredScaleShift:
        self._state = measurement.copy()
        self._variance = np.array(variance, dtype=np.float64)
        self._pending = []
        return self._output(reset=True, reason=reason, rejected=False)

    def _output(self, reset: bool, reason: str, rejected: bool) -> FilteredScaleShift:
        log_scale, shift = (float(v) for v in self._state)
        self._last = FilteredScaleShift(math.exp(log_scale), shift, log_scale, reset, reason, rejected)
        return self._last

    def _is_jump(self, a: np.ndarray, b: np.ndarray, variance: np.ndarray) -> bool:
        """Whether a and b (log scale, shift), whose difference has ``variance``, differ by more
        than their noise and the expected drift explain (noisy fits of few points are smoothed, not
        gated)."""
        return bool(np.any(np.abs(a - b) > self.config.jump_sigmas * np.sqrt(variance)))

    def update(self, scale: float, shift: float, stamp: float | None = None,
               camera_key: Hashable | None = None,
               measurement_std: tuple[float, float] | None = None) -> FilteredScaleShift:
        """Feed one frame's fitted (scale, shift); returns the filtered values.

        ``measurement_std``: the fit's standard errors of (log scale, shift) (see
        :class:`~ppd_ros.metric.alignment.AlignmentFit`), floored at ``config.measurement_std``,
        which is also used when they are None or NaN. Only feed successful fits; on a failed fit use
        :attr:`current` (the held value).
        """
        if not (scale > 0 and math.isfinite(scale) and math.isfinite(shift)):
            raise ValueError(f"filter needs a finite positive scale and finite shift, got {scale}, {shift}")
        cfg = self.config
        self._frame += 1
        z = np.array([math.log(scale), float(shift)])
        stds = np.nan_to_num(np.asarray(measurement_std if measurement_std is not None else (math.nan, math.nan),
                                        dtype=np.float64), nan=0.0)
        r = np.maximum(stds, cfg.measurement_std) ** 2
        previous_stamp, previous_key = self._stamp, self._camera_key
        if stamp is not None:
            self._stamp = float(stamp)
        if camera_key is not None:  # None = camera unknown for this frame (no CameraInfo paired): no change
            self._camera_key = camera_key
        if self._state is None:
            return self._restart(z, r, "first")
        if camera_key is not None and previous_key is not None and camera_key != previous_key:
            return self._restart(z, r, "camera_changed")
        if stamp is not None and previous_stamp is not None:
            if stamp < previous_stamp:
                return self._restart(z, r, "time_backwards")
            if stamp - previous_stamp > cfg.max_gap_s:
                return self._restart(z, r, "time_gap")

        predicted_variance = self._variance + cfg.process_std ** 2
        if self._is_jump(z, self._state, predicted_variance + r):
            # keep only the pending jumps that agree with this one: a run of scattered outliers
            # must not reset the filter, a run landing on one new value must
            self._pending = [(p, v, frame) for p, v, frame in self._pending
                             if not self._is_jump(p, z, v + r + (self._frame - frame) * cfg.process_std ** 2)]
            self._pending.append((z, r, self._frame))
            if len(self._pending) >= cfg.jump_frames:
                count = len(self._pending)
                return self._restart(np.mean([p for p, _, _ in self._pending], axis=0),
                                     np.sum([v for _, v, _ in self._pending], axis=0) / count ** 2, "jump")
            self._variance = predicted_variance
            return self._output(reset=False, reason="", rejected=True)
        self._pending = []
        gain = predicted_variance / (predicted_variance + r)
        self._state = self._state + gain * (z - self._state)
        self._variance = (1 - gain) * predicted_variance
        return self._output(reset=False, reason="", rejected=False)


@dataclass(frozen=True)
class AlignedFrame:
    depth: object  # metric depth in metres (numpy float32, or torch like the input); NaN where r is NaN
    scale: float  # what was applied
    shift: float
    fit: AlignmentFit  # this frame's fit (residual, inlier ratio, status)
    filtered: FilteredScaleShift | None  # None while no fit has ever succeeded
    metric: bool  # False when no fit has succeeded yet and the identity was applied (relative)


class StableAlignment:
    """Per frame: robust fit to the reference, temporal filter, metric depth.

    A failed fit (see :class:`ppd_ros.metric.alignment.FitStatus`) keeps the filtered value of the
    previous frames; before any fit succeeded the identity (1, 0) is applied and ``metric`` is False.
    """

    def __init__(self, fit_config: RobustFitConfig = RobustFitConfig(),
                 filter_config: TemporalFilterConfig | None = TemporalFilterConfig(), seed: int = 0):
        self.fit_config = fit_config
        self.filter = ScaleShiftFilter(filter_config) if filter_config is not None else None
        self.seed = seed
        self._last_good: tuple[float, float] | None = None

    def align(self, relative, reference_depth, mask=None, stamp: float | None = None,
              camera_key: Hashable | None = None) -> AlignedFrame:
        fallback = self._last_good
        fit = fit_log_depth(relative, reference_depth, mask, fallback=fallback, config=self.fit_config,
                            seed=self.seed)
        filtered = self.filter.current if self.filter is not None else None
        if fit.ok:
            if self.filter is not None:
                filtered = self.filter.update(fit.scale, fit.shift, stamp, camera_key,
                                              (fit.log_scale_std, fit.shift_std))
                self._last_good = (filtered.scale, filtered.shift)
            else:
                self._last_good = (fit.scale, fit.shift)
        metric = self._last_good is not None
        scale, shift = self._last_good if metric else (1.0, 0.0)
        return AlignedFrame(relative_to_metres(relative, scale, shift), scale, shift, fit, filtered, metric)
