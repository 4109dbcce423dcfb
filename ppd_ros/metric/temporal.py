"""Keeping the metric scale still over time.

:class:`ScaleShiftFilter` smooths per-frame (log scale, shift) fits with a scalar Kalman filter per
component (random-walk model, per frame). Measurements that jump further than a threshold from the
state are gated out; if such jumps persist for ``jump_frames`` consistent frames the filter resets
to them (a real change, e.g. a new reference). It also resets when the camera changes (a key the
caller passes) and on time gaps or time running backwards (stamps in seconds).

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
    depends on process_std / measurement_std only: 0.12 gives a steady gain of ~0.11, which cuts
    white measurement jitter ~4x and follows a change below the jump thresholds with a time constant
    of ~9 frames; larger changes are followed by the reset after ``jump_frames``."""

    measurement_std: float = 0.05
    process_std: float = 0.006
    jump_log_scale: float = 0.1  # |log-scale innovation| above this is a jump (~10 % in scale)
    jump_shift: float = 0.15  # |shift innovation| above this is a jump
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
        self._variance = 0.0  # same for both components: same noise model, same updates
        self._stamp: float | None = None
        self._camera_key: Hashable | None = None
        self._pending: list[np.ndarray] = []  # consecutive gated-out measurements
        self._last: FilteredScaleShift | None = None

    @property
    def current(self) -> FilteredScaleShift | None:
        """The latest output (None before the first update or after reset())."""
        return self._last

    def _restart(self, measurement: np.ndarray, variance: float, reason: str) -> FilteredScaleShift:
        self._state = measurement.copy()
        self._variance = variance
        self._pending = []
        return self._output(reset=True, reason=reason, rejected=False)

    def _output(self, reset: bool, reason: str, rejected: bool) -> FilteredScaleShift:
        log_scale, shift = (float(v) for v in self._state)
        self._last = FilteredScaleShift(math.exp(log_scale), shift, log_scale, reset, reason, rejected)
        return self._last

    def _is_jump(self, a: np.ndarray, b: np.ndarray) -> bool:
        return abs(a[0] - b[0]) > self.config.jump_log_scale or abs(a[1] - b[1]) > self.config.jump_shift

    def update(self, scale: float, shift: float, stamp: float | None = None,
               camera_key: Hashable | None = None) -> FilteredScaleShift:
        """Feed one frame's fitted (scale, shift); returns the filtered values.

        Only feed successful fits; on a failed fit use :attr:`current` (the held value).
        """
        if not (scale > 0 and math.isfinite(scale) and math.isfinite(shift)):
            raise ValueError(f"filter needs a finite positive scale and finite shift, got {scale}, {shift}")
        cfg = self.config
        z = np.array([math.log(scale), float(shift)])
        r = cfg.measurement_std ** 2
        previous_stamp, previous_key = self._stamp, self._camera_key
        if stamp is not None:
            self._stamp = float(stamp)
        self._camera_key = camera_key
        if self._state is None:
            return self._restart(z, r, "first")
        if camera_key != previous_key:
            return self._restart(z, r, "camera_changed")
        if stamp is not None and previous_stamp is not None:
            if stamp < previous_stamp:
                return self._restart(z, r, "time_backwards")
            if stamp - previous_stamp > cfg.max_gap_s:
                return self._restart(z, r, "time_gap")

        predicted_variance = self._variance + cfg.process_std ** 2
        if self._is_jump(z, self._state):
            # keep only the pending jumps that agree with this one: a run of scattered outliers
            # must not reset the filter, a run landing on one new value must
            self._pending = [p for p in self._pending if not self._is_jump(p, z)] + [z]
            if len(self._pending) >= cfg.jump_frames:
                return self._restart(np.mean(self._pending, axis=0), r / len(self._pending), "jump")
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
                filtered = self.filter.update(fit.scale, fit.shift, stamp, camera_key)
                self._last_good = (filtered.scale, filtered.shift)
            else:
                self._last_good = (fit.scale, fit.shift)
        metric = self._last_good is not None
        scale, shift = self._last_good if metric else (1.0, 0.0)
        return AlignedFrame(relative_to_metres(relative, scale, shift), scale, shift, fit, filtered, metric)
