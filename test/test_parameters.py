"""The one parameter table: defaults, validation (one message per problem), runtime-change rules,
and the documents generated from it (config/depth_node.yaml, README)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from ppd_ros.parameters import (LIVE, PARAMETERS, README_BEGIN, README_END, REPORTED, ParameterError, config_with,
                                default_values, params_markdown, params_yaml, read_params_file, validate)
from ppd_ros.ros.params import change_problems

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_valid_and_each_problem_is_reported_once():
    config = config_with({})
    assert config.steps == 4 and not config.is_metric and config.metric_source == "none"
    assert config.cameras == ("",) and config.model_name == "ppd-da2"
    bad = dict(model="nope", steps=-2, input_transport="udp", sync_tolerance=math.nan, output_depth=0)
    with pytest.raises(ParameterError) as caught:
        config_with(bad)
    problems = caught.value.problems
    assert len(problems) == 5
    for name in bad:
        assert sum(f"parameter {name}=" in problem for problem in problems) == 1, problems


def test_every_audited_bad_value_is_refused():
    """The values an audit got accepted at runtime (issue 12 item 3) are each refused with a reason."""
    cases = {
        "steps": 0, "target_area": -5, "model": "nope", "depth_scale": math.nan, "sync_tolerance": -1.0,
        "input_reliability": "bogus", "diagnostics_period": 0.0, "video_stride": 100,
        "metric_lidar_translation": [1.0, 2.0],
    }
    for name, value in cases.items():
        with pytest.raises(ParameterError) as caught:
            config_with({name: value})
        assert len(caught.value.problems) == 1 and f"parameter {name}=" in caught.value.problems[0]
    with pytest.raises(ParameterError, match="below one 16x16 patch"):
        config_with({"target_area": 100})
    with pytest.raises(ParameterError, match="must be of type int"):
        config_with({"steps": "four"})


def test_filter_thresholds_disable_with_non_positive_values():
    config = config_with(dict(max_relative_jump=0.0, max_grazing_angle_deg=-1.0))
    assert config.filter_thresholds == {"max_relative_jump": None, "max_grazing_angle_deg": None}


def test_metric_video_and_camera_validation():
    cases = {
        "metric_source='moge2' needs a MoGe-2 model": dict(metric_source="moge2", model="tiny-random"),
        "works in mode 'image' only": dict(metric_source="moge2", model="ppd-moge2", mode="video"),
        "is not a rotation": dict(metric_lidar_rotation_xyzw=[0.0, 0.0, 0.0, 0.0]),
        "metric_lidar_translation=[1.0, 2.0] must be 3 finite numbers": dict(metric_lidar_translation=[1.0, 2.0]),
        "video_stride=14 must be >= 1 and <= 13": dict(video_stride=14),
        "metric_reference_tolerance=-1.0": dict(metric_reference_tolerance=-1.0),
        "video_model='ppvd2' is not one of": dict(video_model="ppvd2"),
        "video_channel_order='rbg' is not one of": dict(video_channel_order="rbg"),
        "names a camera twice": dict(cameras=["front", "front"]),
        "must be a ROS name": dict(cameras=["front", "2nd cam"]),
    }
    for phrase, changes in cases.items():
        with pytest.raises(ParameterError) as caught:
            config_with(changes)
        assert len(caught.value.problems) == 1 and phrase in caught.value.problems[0], caught.value.problems
    config = config_with(dict(metric_source="moge2", model="ppd-moge2"))
    assert config.is_metric and config.fits_scale and "MoGe-2" in config.depth_kind_note
    assert config_with(dict(cameras=["front", "/left/rear/"])).cameras == ("front", "left/rear")


def test_runtime_changes_live_applied_reload_refused_with_the_reason():
    current = default_values()
    problems, config = change_problems(current, {"steps": 8, "depth_scale": 2.5}, configured=True)
    assert problems == [] and config.steps == 8 and config.depth_scale == 2.5
    problems, config = change_problems(current, {"model": "tiny-random"}, configured=True)
    assert config is None and "needs a reload" in problems[0] and "model" in problems[0]
    problems, _ = change_problems(current, {"steps": 0}, configured=True)
    assert problems == ["parameter steps=0 must be >= 1"]  # the same message as at start-up
    problems, config = change_problems(current, {"model": "tiny-random"}, configured=False)
    assert problems == [] and config.model == "tiny-random"  # unconfigured: anything valid, read at configure
    assert change_problems(current, {"model": current["model"]}, configured=True)[0] == []  # unchanged is fine


def test_params_file_reading(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("/**:\n  ros__parameters:\n    steps: 2\n/front/ppd_depth:\n  ros__parameters:\n    seed: 7\n"
                    "other_node:\n  ros__parameters:\n    steps: 9\n")
    assert read_params_file(path) == {"steps": 2, "seed": 7}
    assert validate({**default_values(), **read_params_file(path)}).steps == 2
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_params_file(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("/**: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        read_params_file(tmp_path / "bad.yaml")


def test_generated_params_yaml_is_the_committed_one_and_documents_every_parameter():
    committed = (REPO / "config" / "depth_node.yaml").read_text()
    assert committed == params_yaml(), "regenerate with: python -m ppd_ros.parameters --write"
    values = yaml.safe_load(committed)["/**"]["ros__parameters"]
    settable = {spec.name: spec.default for spec in PARAMETERS if spec.name not in REPORTED}
    assert values == settable
    assert validate({**default_values(), **values}).model == "ppd-da2"
    for spec in PARAMETERS:
        if spec.change == LIVE:
            assert spec.name in committed.split("these apply from the next frame:")[1].split(".")[0]


def test_readme_parameter_table_is_generated_from_the_table():
    readme = (REPO / "README.md").read_text()
    block = readme[readme.index(README_BEGIN) + len(README_BEGIN):readme.index(README_END)].strip()
    assert block == params_markdown(), "regenerate with: python -m ppd_ros.parameters --write"
    for spec in PARAMETERS:
        assert f"| `{spec.name}` |" in block
