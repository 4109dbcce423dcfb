"""ppd_ros.evaluation.report on real files: plots and tables with NaN metrics, and the output bag named
and protected the way rosbag2 does it (read back with rosbags)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml

from ppd_ros.evaluation.report import OutputBag, OutputExistsError, histogram_plot, line_plot, output_typestore, table


def test_plots_and_tables_show_nan_as_missing(tmp_path):
    nan, inf = float("nan"), float("inf")
    line_plot({"abs_rel": [0.1, nan, 0.3, inf, 0.2], "boundary_f1": [nan] * 5, "delta1": []}, "metrics",
              "frame", tmp_path / "mixed.png")
    line_plot({"abs_rel": [nan, nan]}, "metrics", "frame", tmp_path / "all_nan.png")
    histogram_plot([nan, 0.01, 0.02, inf], "latency", "s", tmp_path / "hist.png")
    histogram_plot([nan], "latency", "s", tmp_path / "empty_hist.png")
    for name in ("mixed.png", "all_nan.png", "hist.png", "empty_hist.png"):
        assert cv2.imread(str(tmp_path / name)).shape == (300, 720, 3)
    # the finite abs_rel points are drawn in their series colour (blue-ish, BGR (200, 80, 20))
    image = cv2.imread(str(tmp_path / "mixed.png")).astype(int)
    assert (np.abs(image - [200, 80, 20]).sum(axis=2) < 60).sum() > 20
    rows = table([("AbsRel", np.float32("nan")), ("delta1", float("inf")), ("missing", None), ("ok", np.float32(0.5))])
    assert rows[2:] == ["| AbsRel | n/a |", "| delta1 | n/a |", "| missing | n/a |", "| ok | 0.5 |"]


def _write_one_frame(bag: OutputBag) -> None:
    depth = np.full((4, 6), 2.0, np.float32)
    record = dict(is_metric=False, metric_source="none", scale=1.0, shift=0.0, fit_residual=float("nan"),
                  fit_status="relative", scale_age=float("nan"), scale_age_frames=0, metric_stale=False,
                  model="tiny-random", steps=1, inference_time=0.01, latency=0.02, dropped_frames=0, skipped_frames=0)
    bag.write(1_000_000_123, "cam", depth, None, None, record)
    bag.close()


def test_output_bag_is_named_like_rosbag2_and_readable(tmp_path):
    from rosbags.highlevel import AnyReader

    _write_one_frame(OutputBag(tmp_path / "depth.mcap", with_points=False))  # a trailing .mcap is dropped
    bag = tmp_path / "depth"
    assert sorted(p.name for p in bag.iterdir()) == ["depth_0.mcap", "metadata.yaml"]
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["relative_file_paths"] == ["depth_0.mcap"] and info["files"][0]["path"] == "depth_0.mcap"
    with AnyReader([bag], default_typestore=output_typestore()) as reader:
        topics = sorted(c.topic for c, _, _ in reader.messages())
    assert topics == ["/ppd/depth", "/ppd/depth/camera_info", "/ppd/depth_frame"]


def test_existing_output_bag_is_refused_unless_overwrite(tmp_path):
    bag = tmp_path / "depth"
    _write_one_frame(OutputBag(bag, with_points=False))
    with pytest.raises(OutputExistsError, match=rf"output bag {bag} exists already; .*--overwrite"):
        OutputBag(bag)
    _write_one_frame(OutputBag(bag, with_points=False, overwrite=True))
    assert sorted(p.name for p in bag.iterdir()) == ["depth_0.mcap", "metadata.yaml"]
    (bag / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds files that are not part of a bag; not deleting it"):
        OutputBag(bag, overwrite=True)
    assert (bag / "notes.txt").read_text() == "mine"
