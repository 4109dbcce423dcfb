"""Metric alignment: the official least-squares fit (golden), the robust fit and its guards, metric
sources (depth images as points at any grid size, LiDAR projection), the temporal filter, the
pipeline's metric step (statuses, age of the held scale, staleness), and quality bounds on
synthetic data (bench metric's measurements, drift included)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import load_golden
from scipy.spatial.transform import Rotation

from ppd_ros.bench.metric import (FIXED_NOISE_FILTER, measure_accuracy, measure_drift, measure_stability, pinhole_K,
                                  ppd_normalised, synthetic_depth)
from ppd_ros.geometry.resize import resize_nearest
from ppd_ros.metric import (FitStatus, LidarProjector, RobustFitConfig, ScaleShiftFilter, StableAlignment,
                            TemporalFilterConfig, depth_image_points, fit_log_depth, fixed_fit,
                            least_squares_scale_shift, quaternion_to_matrix, relative_to_metres)
from ppd_ros.msg_decode import depth_image_to_metres
from ppd_ros.metric.alignment import valid_log_pairs
from ppd_ros.pipeline.metric_depth import MetricDepth, depth_image_reference


# ---- official least squares (golden) ---------------------------------------------------------------

def test_least_squares_matches_golden(golden_dir):
    tensors, sidecar = load_golden("functions")
    p, t, m = (tensors[f"align.ssf.{k}"].numpy() for k in ("prediction", "target", "mask"))
    results = {r["case"]: r for r in sidecar["groups"]["align_vda"]["compute_scale_and_shift_full"]["results"]}
    cases = {
        "random": (p, t, m),
        "exact_affine": (p, (np.float32(2.5) * p - np.float32(0.3)).astype(np.float32), np.ones_like(m)),
        "empty_mask": (p, t, np.zeros_like(m)),
    }
    for name, (pred, target, mask) in cases.items():
        scale, shift = least_squares_scale_shift(pred, target, mask)
        assert scale == pytest.approx(results[name]["scale"], abs=1e-6), name
        assert shift == pytest.approx(results[name]["shift"], abs=1e-6), name
    # torch inputs give the same numbers
    assert least_squares_scale_shift(torch.from_numpy(p), torch.from_numpy(t), torch.from_numpy(m)) == \
        least_squares_scale_shift(p, t, m)


# ---- robust fit --------------------------------------------------------------------------------------

def _affine_pair(rng, n=4000, scale=2.3, shift=2.5):
    relative = rng.uniform(-1.0, 0.5, n)
    depth = np.expm1(scale * relative + shift)
    return relative, depth


def test_robust_fit_recovers_exact_affine_despite_outliers():
    rng = np.random.default_rng(1)
    relative, depth = _affine_pair(rng)
    corrupted = depth.copy()
    wrong = rng.random(depth.size) < 0.3
    corrupted[wrong] = rng.uniform(0.1, 50.0, wrong.sum())
    fit = fit_log_depth(relative, corrupted)
    assert fit.status is FitStatus.OK and fit.ok
    assert fit.scale == pytest.approx(2.3, abs=1e-6) and fit.shift == pytest.approx(2.5, abs=1e-6)
    assert fit.num_points == depth.size
    assert fit.inlier_ratio == pytest.approx(1 - wrong.mean(), abs=0.01)
    assert fit.residual < 1e-6
    # the plain least squares is visibly pulled away by the same outliers
    ls_scale, _ = least_squares_scale_shift(relative, np.log1p(corrupted), np.ones(depth.size))
    assert abs(ls_scale - 2.3) > 0.1


def test_robust_fit_ignores_invalid_pixels_and_accepts_torch():
    rng = np.random.default_rng(2)
    relative, depth = _affine_pair(rng, n=64 * 48)
    relative = relative.reshape(1, 1, 48, 64).astype(np.float32)
    depth = depth.reshape(48, 64)
    depth[:5] = 0.0
    depth[5:8] = np.nan
    depth[8, :10] = -3.0
    relative[0, 0, 9, :10] = np.nan
    mask = np.ones((48, 64), bool)
    mask[-4:] = False
    fit = fit_log_depth(relative, depth, mask)
    assert fit.num_points == 64 * 48 - 8 * 64 - 10 - 10 - 4 * 64
    assert fit.scale == pytest.approx(2.3, abs=1e-4) and fit.shift == pytest.approx(2.5, abs=1e-4)
    fit_torch = fit_log_depth(torch.from_numpy(relative), torch.from_numpy(depth), torch.from_numpy(mask))
    assert fit_torch == fit


def test_robust_fit_is_deterministic_given_seed():
    rng = np.random.default_rng(3)
    relative, depth = _affine_pair(rng, n=3000)
    noisy = depth * np.exp(rng.normal(0, 0.05, depth.size))
    assert fit_log_depth(relative, noisy, seed=7) == fit_log_depth(relative, noisy, seed=7)


def test_degenerate_fits_return_fallback_with_flag():
    rng = np.random.default_rng(4)
    relative, depth = _affine_pair(rng, n=500)
    fallback = (3.0, -0.2)

    few = fit_log_depth(relative[:5], depth[:5], fallback=fallback)
    assert few.status is FitStatus.TOO_FEW_POINTS and not few.ok
    assert (few.scale, few.shift) == fallback and math.isnan(few.fitted_scale)

    constant = fit_log_depth(np.full(500, 0.2), depth, fallback=fallback)
    assert constant.status is FitStatus.DEGENERATE_SLOPE and (constant.scale, constant.shift) == fallback

    inverted = fit_log_depth(-relative, depth, fallback=fallback)  # depth decreasing with r
    assert inverted.status is FitStatus.DEGENERATE_SLOPE and (inverted.scale, inverted.shift) == fallback
    assert inverted.fitted_scale == pytest.approx(-2.3, abs=1e-6)

    noisy = depth * np.exp(rng.normal(0, 0.2, depth.size))
    spread = fit_log_depth(relative, noisy, fallback=fallback, config=RobustFitConfig(max_residual=0.05))
    assert spread.status is FitStatus.TOO_SPREAD and (spread.scale, spread.shift) == fallback
    assert spread.residual > 0.05

    identity = fit_log_depth(relative[:5], depth[:5])  # no fallback given: identity
    assert (identity.scale, identity.shift) == (1.0, 0.0)


def test_all_outlier_reference_is_rejected_with_no_inliers():
    rng = np.random.default_rng(5)
    relative, depth = _affine_pair(rng, n=500)
    garbage = depth * rng.uniform(0.3, 3.0, depth.size)  # every point at a random range
    fit = fit_log_depth(relative, garbage)
    # the Tukey band scales with the residuals' own spread, so it would call every point an inlier
    assert fit.status is FitStatus.TOO_SPREAD and fit.inlier_ratio == 0.0 and fit.residual > 0.3
    good = fit_log_depth(relative, depth * np.exp(rng.normal(0, 0.05, depth.size)))
    assert good.ok and good.inlier_ratio > 0.95


def test_fit_standard_errors_match_the_spread_of_repeated_fits():
    """The filter weighs each fit by these standard errors, so they must be right."""
    rng = np.random.default_rng(6)
    relative, depth = _affine_pair(rng, n=400)
    fits = [fit_log_depth(relative, depth * np.exp(rng.normal(0, 0.05, depth.size)), seed=i) for i in range(60)]
    assert all(f.ok for f in fits)
    for spread, errors in ((np.std([math.log(f.scale) for f in fits]), [f.log_scale_std for f in fits]),
                           (np.std([f.shift for f in fits]), [f.shift_std for f in fits])):
        assert 0.7 < np.mean(errors) / spread < 1.4


def test_fixed_fit():
    fit = fixed_fit(2.0, 0.5)
    assert fit.ok and fit.status is FitStatus.FIXED and (fit.scale, fit.shift) == (2.0, 0.5)
    with pytest.raises(ValueError):
        fixed_fit(0.0, 0.5)


def test_relative_to_metres():
    relative = np.array([[-1.0, 0.0, 0.5], [np.nan, -20.0, 0.25]], dtype=np.float32)
    out = relative_to_metres(relative, 2.0, 2.5)
    assert out.dtype == np.float32
    expected = np.expm1(2.0 * relative.astype(np.float64) + 2.5)
    np.testing.assert_allclose(out[0], expected[0], rtol=1e-6)
    assert np.isnan(out[1, 0]) and np.isnan(out[1, 1])  # no depth (NaN in, or not positive) is NaN
    out_torch = relative_to_metres(torch.from_numpy(relative), 2.0, 2.5)
    assert isinstance(out_torch, torch.Tensor)
    np.testing.assert_allclose(out_torch.numpy(), out, rtol=1e-6)
    np.testing.assert_array_equal(np.isnan(out_torch.numpy()), np.isnan(out))


# ---- metric sources ----------------------------------------------------------------------------------

def test_depth_image_to_metres():
    mm = np.array([[0, 1500], [65535, 250]], dtype=np.uint16)
    metres = depth_image_to_metres(mm, "16UC1")
    assert np.isnan(metres[0, 0]) and metres.dtype == np.float32
    np.testing.assert_allclose(metres[~np.isnan(metres)], [1.5, 65.535, 0.25], rtol=1e-6)
    f = np.array([[0.0, np.nan], [np.inf, 2.5], [-1.0, 0.1]], dtype=np.float32)
    out = depth_image_to_metres(f, "32FC1")
    assert np.isnan(out[:, 0]).all() and np.isnan(out[0, 1]) and np.isnan(out[1, 0])
    assert out[1, 1] == 2.5 and out[2, 1] == pytest.approx(0.1)
    with pytest.raises(ValueError):
        depth_image_to_metres(mm, "rgb8")
    with pytest.raises(ValueError):
        depth_image_to_metres(f, "16UC1")



def test_depth_image_points_keep_every_valid_pixel_pixel_centre_aligned():
    image = np.full((4, 6), np.nan, np.float32)
    image[0, 0], image[1, 2], image[3, 5], image[2, 3] = 1.0, 2.0, 3.0, -1.0  # -1: invalid
    down = depth_image_points(image, 2, 3)  # 2x2 reference pixels per grid pixel
    assert down.count == 3 and down.shape == (2, 3)
    np.testing.assert_array_equal(down.rows, [0, 0, 1])
    np.testing.assert_array_equal(down.cols, [0, 1, 2])
    np.testing.assert_array_equal(down.depth, [1.0, 2.0, 3.0])
    up = depth_image_points(image, 8, 12)  # reference pixel (u, v) -> grid (2u + 1, 2v + 1): its centre
    np.testing.assert_array_equal(up.rows, [1, 3, 7])
    np.testing.assert_array_equal(up.cols, [1, 5, 11])
    relative = np.arange(6, dtype=np.float64).reshape(2, 3)
    x, y = valid_log_pairs(relative, down)
    np.testing.assert_array_equal(x, [0, 1, 5])
    np.testing.assert_allclose(y, np.log1p([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="differ"):
        fit_log_depth(np.zeros((3, 3)), down)


def test_sparse_depth_image_fits_the_same_at_every_grid_size():
    """A 640x480 stereo/ToF-like reference with 400 valid pixels (5 % noise, 10 % outliers): every
    valid pixel counts, so the fit is the same on a 96x64 grid as on the full one (a reference
    resampled to the grid kept ~2 % of its pixels there and never fitted)."""
    rng = np.random.default_rng(11)
    K = pinhole_K(480, 640)
    exact = synthetic_depth(480, 640, K, seed=3)
    _, lo, hi = ppd_normalised(exact)
    gain, offset = 1.2, 0.05  # relative = gain * normalised + offset: true scale (hi - lo) / gain
    reference = np.full(exact.shape, np.nan, np.float32)
    pixels = rng.choice(exact.size, 400, replace=False)
    noisy = exact.reshape(-1)[pixels] * np.exp(rng.normal(0, 0.05, 400))
    wrong = rng.random(400) < 0.1
    noisy[wrong] *= rng.uniform(0.3, 3.0, wrong.sum())
    reference.reshape(-1)[pixels] = noisy
    scales = []
    for height, width in ((64, 96), (96, 128), (240, 320), (480, 640)):
        grid_depth = resize_nearest(exact, height, width)
        relative = torch.from_numpy(gain * ((np.log1p(grid_depth) - lo) / (hi - lo) - 0.5) + offset)
        result = MetricDepth("sparse", 2.0, 1.5).map(relative, 0.0, "cam", depth_image_reference(reference, height,
                                                                                                  width))
        assert result.is_metric and result.status == "ok" and result.reference_points == 400, (height, result)
        scales.append(result.scale)
    np.testing.assert_allclose(scales, (hi - lo) / gain, rtol=0.04)
    assert max(scales) / min(scales) < 1.04
    # what the node did before: resampled to the 96x64 grid, too few pixels are left to fit
    assert np.isfinite(resize_nearest(reference, 64, 96)).sum() < RobustFitConfig().min_points


def test_quaternion_in_ros_order():
    half = np.sqrt(0.5)  # 90 degrees about z, given as (x, y, z, w), and unnormalised
    np.testing.assert_allclose(quaternion_to_matrix(0, 0, 2 * half, 2 * half),
                               [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(quaternion_to_matrix(0, 0, 0, 1), np.eye(3), atol=1e-12)
    with pytest.raises(ValueError):
        quaternion_to_matrix(0, 0, 0, 0)


def test_lidar_projection_recovers_depth_and_keeps_nearest():
    rng = np.random.default_rng(6)
    height, width = 30, 40
    K = np.array([[35.0, 0, 19.5], [0, 35.0, 14.5], [0, 0, 1]])
    translation = np.array([0.2, -0.1, 0.05])
    quaternion = Rotation.from_euler("xyz", [-90, 5, -90], degrees=True).as_quat()  # x, y, z, w
    rotation = Rotation.from_quat(quaternion).as_matrix()
    v, u = rng.integers(0, height, 200), rng.integers(0, width, 200)
    z = rng.uniform(1.0, 10.0, 200)
    camera = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], axis=1)
    # a farther return behind each point, and points behind the camera / outside the image
    extra = np.concatenate([camera * 1.5, [[0, 0, -2.0], [100.0, 0, 1.0], [np.nan, 0, 1]]])
    lidar = (np.concatenate([extra, camera]) - translation) @ rotation
    depth = LidarProjector(translation, quaternion).project(lidar, K, height, width)
    expected = np.full((height, width), np.inf)
    np.minimum.at(expected, (v, u), z)
    expected[np.isinf(expected)] = np.nan
    np.testing.assert_allclose(depth, expected, rtol=1e-5, equal_nan=True)
    with pytest.raises(ValueError):
        LidarProjector([0, 0], [0, 0, 0, 1])


# ---- temporal filter --------------------------------------------------------------------------------

def test_filter_resets_on_first_camera_change_and_time():
    f = ScaleShiftFilter()
    assert f.current is None
    assert f.update(2.0, 0.1, stamp=0.0, camera_key="a").reason == "first"
    out = f.update(2.02, 0.1, stamp=0.1, camera_key="a")
    assert not out.reset and 2.0 < out.scale < 2.02
    assert f.update(2.0, 0.1, stamp=0.2, camera_key="b").reason == "camera_changed"
    assert f.update(2.0, 0.1, stamp=5.0, camera_key="b").reason == "time_gap"
    assert f.update(2.0, 0.1, stamp=4.0, camera_key="b").reason == "time_backwards"
    assert f.current.reason == "time_backwards"
    with pytest.raises(ValueError):
        f.update(-1.0, 0.0)


def test_filter_gates_outliers_and_resets_on_sustained_jump():
    cfg = TemporalFilterConfig(jump_frames=3)
    f = ScaleShiftFilter(cfg)
    f.update(2.0, 0.0, stamp=0.0)
    stamp = iter(np.arange(1, 100) * 0.03)
    single = f.update(3.0, 0.0, stamp=next(stamp))
    assert single.rejected and single.scale == pytest.approx(2.0)
    # scattered outliers on both sides never reset
    for scale in (1.2, 3.0, 1.2, 3.0, 1.2):
        out = f.update(scale, 0.0, stamp=next(stamp))
        assert out.rejected and not out.reset
    # a consistent jump resets after jump_frames frames
    outs = [f.update(3.0, 0.5, stamp=next(stamp)) for _ in range(3)]
    assert [o.reset for o in outs] == [False, False, True] and outs[-1].reason == "jump"
    assert outs[-1].scale == pytest.approx(3.0) and outs[-1].shift == pytest.approx(0.5)


def test_stable_alignment_holds_last_good_value():
    rng = np.random.default_rng(8)
    relative, depth = _affine_pair(rng, n=900)
    relative, depth = relative.reshape(30, 30), depth.reshape(30, 30)
    aligner = StableAlignment()
    first = aligner.align(relative, np.full((30, 30), np.nan), stamp=0.0)
    assert not first.metric and not first.fit.ok and (first.scale, first.shift) == (1.0, 0.0)
    good = aligner.align(relative, depth, stamp=0.03)
    assert good.metric and good.filtered.reset
    np.testing.assert_allclose(good.depth, depth, rtol=1e-4)
    held = aligner.align(relative, np.full((30, 30), np.nan), stamp=0.06)
    assert held.fit.status is FitStatus.TOO_FEW_POINTS and held.metric
    assert (held.scale, held.shift) == (good.scale, good.shift)


# ---- measured quality on synthetic sequences --------------------------------------------------------

def test_sparse_alignment_is_close_to_dense_and_survives_outliers():
    acc = measure_accuracy(height=96, width=128, trials=4, seed=0)
    assert acc.sparse_points > 450
    assert acc.dense_abs_rel < 1.2 * acc.oracle_abs_rel
    assert acc.sparse_abs_rel < 1.5 * acc.dense_abs_rel
    assert acc.sparse_least_squares_abs_rel > 1.5 * acc.sparse_abs_rel  # outliers break plain LS, not ours


def test_filter_follows_a_step_without_resetting_on_a_static_sequence():
    st = measure_stability(height=96, width=128, frames=80, step_frames=30, seed=0)
    assert st.resets == 0
    assert abs(st.large_step) > 0.2 and st.frames_to_follow_large <= 4
    assert st.frames_to_follow_small <= 2


def test_filter_costs_no_accuracy_under_drift_and_smooths_sparse_noisy_fits():
    variants = {"none": None, "default": TemporalFilterConfig(), "fixed noise": FIXED_NOISE_FILTER}
    precise = {r.name: r for r in measure_drift(96, 128, frames=90, points=500, range_noise=0.05, variants=variants)}
    assert precise["default"].log_error_std <= 1.01 * precise["none"].log_error_std
    assert precise["default"].largest_step <= 1.01 * precise["none"].largest_step
    assert precise["fixed noise"].log_error_std > 2 * precise["none"].log_error_std  # lagging costs, as measured
    noisy = {r.name: r for r in measure_drift(96, 128, frames=90, points=60, range_noise=0.10, variants=variants)}
    assert noisy["default"].log_error_std < 0.98 * noisy["none"].log_error_std
    assert noisy["default"].largest_step < 0.95 * noisy["none"].largest_step


# ---- the pipeline's metric step ---------------------------------------------------------------------

def _scene(n=40 * 30, seed=12):
    rng = np.random.default_rng(seed)
    relative, depth = _affine_pair(rng, n=n)
    return torch.from_numpy(relative.reshape(30, 40)), depth.reshape(30, 40)


def test_metric_step_reports_accepted_jump_rejected_reset_and_the_age_of_the_held_scale():
    relative, depth = _scene()
    step = MetricDepth("sparse", 2.0, 1.5, max_age=1.0)
    first = step.map(relative, 10.0, "cam", depth)
    assert first.status == "ok" and first.filter_reset == "first" and first.is_metric
    assert (first.scale_age, first.scale_age_frames, first.stale) == (0.0, 0, False)
    held = step.map(relative, 10.25, "cam", None)
    assert held.status == "no_reference" and held.scale == first.scale
    assert held.scale_age == pytest.approx(0.25) and held.scale_age_frames == 1
    tripled = depth * 3.0  # the reference's scale changes for real
    jumps = [step.map(relative, 10.5 + 0.05 * i, "cam", tripled) for i in range(3)]
    assert [j.status for j in jumps] == ["rejected_jump", "rejected_jump", "reset"]
    assert jumps[0].scale == jumps[1].scale == first.scale and jumps[1].scale_age_frames == 3
    assert jumps[2].filter_reset == "jump" and jumps[2].shift > first.shift + 0.5 and jumps[2].scale_age == 0.0
    garbage = step.map(relative, 10.7, "cam", depth * np.random.default_rng(0).uniform(0.3, 3.0, depth.shape))
    assert garbage.status == "too_spread" and garbage.inlier_ratio == 0.0 and garbage.scale == jumps[2].scale
    stale = step.map(relative, 11.7, "cam", None)  # 1.1 s after the last accepted fit
    assert stale.stale and stale.is_metric and stale.scale == jumps[2].scale  # held_scale: still applied
    assert stale.scale_age == pytest.approx(1.1) and stale.scale_age_frames == 2
    step.max_age = 0.0  # never stale
    assert not step.map(relative, 12.0, "cam", None).stale


def test_metric_step_no_depth_publishes_nothing_without_a_fresh_scale():
    relative, depth = _scene()
    step = MetricDepth("sparse", 2.0, 1.5, max_age=0.5, stale_output="no_depth")
    before = step.map(relative, 1.0, "cam", None)  # no fit accepted yet
    assert not before.is_metric and torch.isnan(before.depth).all() and math.isnan(before.scale_age)
    fresh = step.map(relative, 1.1, "cam", depth)
    assert fresh.is_metric and torch.isfinite(fresh.depth).all()
    assert step.map(relative, 1.5, "cam", None).is_metric  # held 0.4 s: fresh
    stale = step.map(relative, 1.7, "cam", None)
    assert stale.stale and not stale.is_metric and torch.isnan(stale.depth).all()
    again = step.map(relative, 1.75, "cam", depth)
    assert again.status == "ok" and again.is_metric and not again.stale
    with pytest.raises(ValueError, match="stale output"):
        MetricDepth("sparse", 2.0, 1.5, stale_output="relative")


def test_frame_processor_records_every_reference_pixel_age_and_staleness_and_takes_live_changes():
    from ppd_ros.backends import BackendOptions, create_backend
    from ppd_ros.model_specs import model_spec
    from ppd_ros.parameters import config_with
    from ppd_ros.pipeline import FrameInput, FrameProcessor, MetricReference

    backend = create_backend(model_spec("tiny-random"), BackendOptions(device="cpu", steps=1, target_area=64 * 48))
    processor = FrameProcessor(backend, config_with({"model": "tiny-random", "metric_source": "sparse"}))
    rgb = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    before = processor.submit(FrameInput(rgb, 1_000_000_000))[0]
    assert before.record.fit_status == "no_reference" and not before.record.is_metric
    assert math.isnan(before.record.scale_age) and before.record.scale_age_frames == 1
    # a 4x finer registered reference with 300 valid pixels that this relative depth fits exactly
    fine = resize_nearest(before.relative, 4 * 48, 4 * 64)
    reference = np.full(fine.shape, np.nan, np.float32)
    pixels = np.random.default_rng(1).choice(fine.size, 300, replace=False)
    reference.reshape(-1)[pixels] = np.expm1(0.8 * fine.reshape(-1)[pixels] + 3.0)
    fitted = processor.submit(FrameInput(rgb, 1_100_000_000, reference=MetricReference(1_100_000_000, reference)))[0]
    record = fitted.record
    assert record.fit_status == "ok" and record.is_metric and record.fit_points == 300
    assert (record.scale, record.shift) == pytest.approx((0.8, 3.0), abs=1e-3) and record.scale_age == 0.0
    held = processor.submit(FrameInput(rgb, 3_200_000_000))[0].record  # 2.1 s later, no reference
    assert held.metric_stale and held.is_metric and held.scale_age == pytest.approx(2.1)  # default max age 2 s
    processor.update_config(config_with({"model": "tiny-random", "metric_source": "sparse",
                                         "metric_stale_output": "no_depth"}))
    gone = processor.submit(FrameInput(rgb, 3_300_000_000))[0]
    assert gone.record.metric_stale and not gone.record.is_metric and np.isnan(gone.depth).all()
