"""`ppd eval-bag` on bags written here with rosbags (mcap + sqlite3 + ROS 1) from the synthetic
renderer, the metric functions against independent computations, and damaged bags."""
from __future__ import annotations

import argparse
import csv
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from ppd_ros.evaluation import metrics as M
from ppd_ros.evaluation.bag import (ReadLog, StampPairer, TopicTypeError, check_topic_type, list_topics,
                                   read_messages, typestore)
from ppd_ros.evaluation.eval_bag import add_arguments, run
from ppd_ros.msg_decode import image_to_rgb8

WIDTH, HEIGHT, FRAMES = 64, 48, 4
NS = 1_000_000_000


@pytest.fixture(scope="module")
def synthetic_frames():
    from ppd_ros.synthetic import Scene, camera_trajectory, default_camera, render

    scene = Scene.random(3)
    camera = default_camera(WIDTH, HEIGHT)
    poses = camera_trajectory(FRAMES, 3, scene)
    return camera, [render(scene, camera, pose) for pose in poses]


def _header(store, stamp: int, frame_id: str = "camera_optical"):
    t = store.types
    return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=stamp // NS, nanosec=stamp % NS),
                                   frame_id=frame_id)


def write_bag(path: Path, storage: str, camera, frames, compressed: bool = False, gt_offset_ns: int = 1_000_000,
              info_scale: int = 1, image_data=None):
    """Images (raw bgr8 or jpeg), CameraInfo and 32FC1 GT depth (stamps offset by 1 ms, written
    before their image, to exercise pairing)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = typestore()
    t = store.types
    with Writer(path, version=9, storage_plugin=StoragePlugin[storage.upper()]) as writer:
        image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
        image_conn = writer.add_connection("/camera/image", image_type, typestore=store)
        info_conn = writer.add_connection("/camera/camera_info", "sensor_msgs/msg/CameraInfo", typestore=store)
        gt_conn = writer.add_connection("/camera/gt_depth", "sensor_msgs/msg/Image", typestore=store)
        for i, (rgb, depth) in enumerate(frames):
            stamp = (i + 1) * NS // 10
            gt_stamp = stamp + gt_offset_ns
            gt = t["sensor_msgs/msg/Image"](header=_header(store, gt_stamp), height=HEIGHT, width=WIDTH,
                                           encoding="32FC1", is_bigendian=0, step=WIDTH * 4,
                                           data=np.ascontiguousarray(depth, "<f4").view(np.uint8).reshape(-1))
            writer.write(gt_conn, gt_stamp, store.serialize_cdr(gt, "sensor_msgs/msg/Image"))
            roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
            calibrated = camera.scaled_to(WIDTH * info_scale, HEIGHT * info_scale)
            info = t["sensor_msgs/msg/CameraInfo"](
                header=_header(store, stamp), height=calibrated.height, width=calibrated.width,
                distortion_model="plumb_bob", d=np.zeros(5), k=calibrated.K.reshape(-1), r=np.eye(3).reshape(-1),
                p=np.hstack([calibrated.K, np.zeros((3, 1))]).reshape(-1), binning_x=0, binning_y=0, roi=roi)
            writer.write(info_conn, stamp, store.serialize_cdr(info, "sensor_msgs/msg/CameraInfo"))
            bgr = np.ascontiguousarray(rgb[..., ::-1])
            if compressed:
                encoded = image_data(i) if image_data is not None and image_data(i) else cv2.imencode(".jpg", bgr)[1]
                data = np.frombuffer(bytes(encoded), np.uint8)
                image = t["sensor_msgs/msg/CompressedImage"](header=_header(store, stamp), format="jpeg", data=data)
            else:
                image = t["sensor_msgs/msg/Image"](header=_header(store, stamp), height=HEIGHT, width=WIDTH,
                                                  encoding="bgr8", is_bigendian=0, step=WIDTH * 3,
                                                  data=bgr.reshape(-1))
            writer.write(image_conn, stamp, store.serialize_cdr(image, image_type))
    return path


def eval_args(bag: Path, out: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([str(bag), "--image-topic", "/camera/image", "--camera-info-topic",
                              "/camera/camera_info", "--gt-depth-topic", "/camera/gt_depth",
                              "--model", "tiny-random", "--target-area", str(32 * 32), "--device", "cpu",
                              "--steps", "1", "--output", str(out), *extra])


def read_output(out: Path, model: str = "tiny-random") -> tuple[list[dict], dict[str, int]]:
    from rosbags.highlevel import AnyReader

    from ppd_ros.evaluation.report import output_typestore

    with open(out / "frames.csv") as handle:
        rows = list(csv.DictReader(handle))
    counts: dict[str, int] = {}
    with AnyReader([out / "depth"], default_typestore=output_typestore()) as reader:
        for connection, _, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            counts[connection.topic] = counts.get(connection.topic, 0) + 1
            if connection.msgtype == "ppd_ros/msg/DepthFrame":
                assert not msg.is_metric and msg.metric_source == "none" and msg.model == model  # the node's default
                assert msg.fit_status == "relative" and not msg.metric_stale and math.isnan(msg.scale_age)
                assert msg.depth.encoding == "32FC1" and msg.camera_info.width == msg.depth.width
            if connection.msgtype == "sensor_msgs/msg/PointCloud2":
                assert msg.point_step == 16 and not msg.is_dense
    return rows, counts


@pytest.mark.parametrize("storage,compressed", [("mcap", False), ("sqlite3", True)])
def test_eval_bag_outputs(tmp_path, synthetic_frames, storage, compressed):
    camera, frames = synthetic_frames
    bag = write_bag(tmp_path / f"bag_{storage}", storage, camera, frames, compressed=compressed)
    out = tmp_path / "out"
    assert run(eval_args(bag, out)) == 0
    rows, counts = read_output(out)
    assert len(rows) == FRAMES
    assert all(row["has_gt"] == "True" for row in rows)
    for topic in ("/ppd/depth", "/ppd/depth/camera_info", "/ppd/points", "/ppd/depth_frame"):
        assert counts[topic] == FRAMES
    abs_rels = [float(row["abs_rel"]) for row in rows]
    assert all(math.isfinite(a) and a >= 0 for a in abs_rels)
    assert all(0 <= float(row["delta1"]) <= 1 for row in rows)
    assert math.isnan(float(rows[0]["temporal_error"])) and math.isfinite(float(rows[1]["temporal_error"]))
    report = (out / "report.md").read_text()
    assert "damaged" not in report and "AbsRel" in report
    for name in ("metrics_over_time.png", "latency_histogram.png"):
        assert cv2.imread(str(out / name)) is not None
    assert len(list(out.glob("worst_frame_*.png"))) == 3


def test_eval_bag_metric_values_match_independent_computation(tmp_path, synthetic_frames):
    """The CSV AbsRel equals an independent recomputation from the written (published) depth and the
    GT: log1p of the published depth is affine in the model's relative depth, so aligning it to the
    GT gives the same evaluated depth."""
    from rosbags.highlevel import AnyReader

    from ppd_ros.evaluation.report import output_typestore
    from ppd_ros.geometry.resize import resize_nearest

    camera, frames = synthetic_frames
    bag = write_bag(tmp_path / "bag", "mcap", camera, frames)
    out = tmp_path / "out"
    assert run(eval_args(bag, out, "--no-points", "-p", "depth_scale:=0.05", "-p", "depth_shift:=1.0")) == 0
    rows, counts = read_output(out)
    assert "/ppd/points" not in counts
    with AnyReader([out / "depth"], default_typestore=output_typestore()) as reader:
        depth_msgs = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()
                      if c.topic == "/ppd/depth"]
    for row, msg, (_, gt_full) in zip(rows, depth_msgs, frames):
        depth = np.frombuffer(msg.data.tobytes(), "<f4").reshape(msg.height, msg.width)
        gt = resize_nearest(gt_full, msg.height, msg.width)
        valid = np.isfinite(gt) & (gt > 0)
        assert np.isfinite(depth).all()  # depth_scale/shift keep the tiny model's depth positive
        aligned, _, _ = M.align_log_depth(np.log1p(depth.astype(np.float64)), gt, valid)
        expected = np.mean(np.abs(aligned[valid].astype(np.float64) - gt[valid]) / gt[valid])
        assert float(row["abs_rel"]) == pytest.approx(expected, rel=1e-4)


def test_eval_bag_with_lidar_points_as_ground_truth(tmp_path, synthetic_frames):
    """GT given as a PointCloud2 in the camera frame (every GT pixel back-projected)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    camera, frames = synthetic_frames
    bag = write_bag(tmp_path / "bag", "mcap", camera, frames)
    store = typestore()
    t = store.types
    points_bag = tmp_path / "points_bag"
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH]
    with Writer(points_bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        from rosbags.highlevel import AnyReader

        with AnyReader([bag], default_typestore=store) as reader:
            connections = {c.topic: writer.add_connection(c.topic, c.msgtype, typestore=store)
                           for c in reader.connections if c.topic != "/camera/gt_depth"}
            for c, log_time, raw in reader.messages():
                if c.topic in connections:
                    writer.write(connections[c.topic], log_time, raw)
        cloud_conn = writer.add_connection("/lidar/points", "sensor_msgs/msg/PointCloud2", typestore=store)
        fields = [t["sensor_msgs/msg/PointField"](name=n, offset=4 * i, datatype=7, count=1)
                  for i, n in enumerate("xyz")]
        for i, (_, depth) in enumerate(frames):
            z = depth
            xyz = np.stack([(u - camera.cx) / camera.fx * z, (v - camera.cy) / camera.fy * z, z], -1).astype("<f4")
            stamp = (i + 1) * NS // 10
            cloud = t["sensor_msgs/msg/PointCloud2"](
                header=_header(store, stamp, "lidar"), height=1, width=HEIGHT * WIDTH, fields=fields,
                is_bigendian=False, point_step=12, row_step=12 * HEIGHT * WIDTH,
                data=xyz.reshape(-1).view(np.uint8), is_dense=True)
            writer.write(cloud_conn, stamp, store.serialize_cdr(cloud, "sensor_msgs/msg/PointCloud2"))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "out"
    args = parser.parse_args([str(points_bag), "--image-topic", "/camera/image", "--camera-info-topic",
                              "/camera/camera_info", "--gt-points-topic", "/lidar/points", "--model", "tiny-random",
                              "--target-area", str(32 * 32), "--device", "cpu", "--steps", "1", "--output", str(out)])
    assert run(args) == 0
    rows, _ = read_output(out)
    assert len(rows) == FRAMES and all(row["has_gt"] == "True" for row in rows)
    assert all(int(row["valid_pixels"]) > 0.5 * 32 * 32 and math.isfinite(float(row["abs_rel"])) for row in rows)


def test_eval_bag_video_mode(tmp_path, synthetic_frames):
    camera, frames = synthetic_frames
    bag = write_bag(tmp_path / "bag", "mcap", camera, frames)
    out = tmp_path / "out"
    args = eval_args(bag, out, "--mode", "video", "--video-stride", "13")
    args.model = "tiny-random-video"
    assert run(args) == 0
    rows, counts = read_output(out, model="tiny-random-video")
    assert [int(row["frame"]) for row in rows] == list(range(FRAMES))  # all emitted at the final flush
    assert counts["/ppd/depth_frame"] == FRAMES
    assert all(math.isfinite(float(row["abs_rel"])) for row in rows)


def test_truncated_bags_are_evaluated_up_to_the_damage(tmp_path, synthetic_frames):
    camera, frames = synthetic_frames
    frames = frames + frames  # 8 frames: enough records to cut in the middle
    for storage, suffix in (("mcap", ".mcap"), ("sqlite3", ".db3")):
        bag = write_bag(tmp_path / f"bag_{storage}", storage, camera, frames)
        (file,) = bag.glob(f"*{suffix}")
        os.truncate(file, file.stat().st_size * 6 // 10)
        out = tmp_path / f"out_{storage}"
        exit_code = run(eval_args(bag, out))
        rows, _ = read_output(out)
        report = (out / "report.md").read_text()
        assert "damaged" in report and "recovery scan" in report
        assert exit_code == 0 and 0 < len(rows) < len(frames), storage


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_folder_without_metadata_is_read_from_its_storage_files(tmp_path, synthetic_frames, storage):
    camera, frames = synthetic_frames
    bag = write_bag(tmp_path / "bag", storage, camera, frames)
    (bag / "metadata.yaml").unlink()
    assert list_topics(bag)["/camera/image"] == "sensor_msgs/msg/Image"
    log = ReadLog(str(bag))
    messages = list(read_messages(bag, {"/camera/image", "/camera/gt_depth"}, log))
    assert len(messages) == 2 * FRAMES and log.reader == "rosbags" and log.damage is None
    assert "has no metadata.yaml: read its storage files directly" in log.summary()


def test_missing_bag_path_names_it(tmp_path):
    missing = tmp_path / "no_such_bag"
    with pytest.raises(FileNotFoundError, match=f"no such bag: {missing}"):
        list_topics(missing)
    with pytest.raises(FileNotFoundError, match=f"no such bag: {missing}"):
        list(read_messages(missing, {"/camera/image"}, ReadLog(str(missing))))


def test_topic_types_are_checked_in_one_line():
    topics = {"/camera/image": "sensor_msgs/msg/Image", "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
              "/note": "std_msgs/msg/String", "/lidar": "sensor_msgs/msg/PointCloud2",
              "/jpeg": "sensor_msgs/msg/CompressedImage"}
    check_topic_type(topics, "/camera/image", "image")
    check_topic_type(topics, "/jpeg", "gt_depth")
    check_topic_type(topics, "/lidar", "gt_points")
    check_topic_type({}, "/anything", "image")  # a bag too damaged to list: the read reports instead
    for topic, role, actual in (("/camera/camera_info", "image", "sensor_msgs/msg/CameraInfo"),
                                ("/note", "image", "std_msgs/msg/String"),
                                ("/lidar", "gt_depth", "sensor_msgs/msg/PointCloud2"),
                                ("/camera/image", "camera_info", "sensor_msgs/msg/Image")):
        with pytest.raises(TopicTypeError, match=rf"^{role} topic '{topic}' has type {actual}, expected [^\n]+$"):
            check_topic_type(topics, topic, role)
    with pytest.raises(ValueError, match=r"image topic '/cam' is not in the bag; its topics: /camera/camera_info"):
        check_topic_type(topics, "/cam", "image")


def test_ros1_bag_is_read(tmp_path, synthetic_frames):
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS1_NOETIC)
    t = store.types
    _, frames = synthetic_frames
    path = tmp_path / "camera.bag"
    with Writer(path) as writer:
        connection = writer.add_connection("/camera/image", "sensor_msgs/msg/Image", typestore=store)
        for i, (rgb, _) in enumerate(frames):
            header = t["std_msgs/msg/Header"](seq=i, stamp=t["builtin_interfaces/msg/Time"](sec=i, nanosec=5),
                                             frame_id="cam")
            image = t["sensor_msgs/msg/Image"](header=header, height=HEIGHT, width=WIDTH, encoding="rgb8",
                                              is_bigendian=0, step=WIDTH * 3, data=rgb.reshape(-1))
            writer.write(connection, i * NS + 5, store.serialize_ros1(image, "sensor_msgs/msg/Image"))
    log = ReadLog(str(path))
    messages = list(read_messages(path, {"/camera/image"}, log))
    assert log.storage == "ros1" and log.damage is None and len(messages) == FRAMES
    np.testing.assert_array_equal(image_to_rgb8(messages[2].msg), frames[2][0])


def test_image_decoding_honours_step_and_encoding():
    store = typestore()
    t = store.types
    rgb = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    padded = np.zeros((5, 7 * 3 + 3), np.uint8)
    padded[:, :21] = rgb[..., ::-1].reshape(5, 21)
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id="")
    msg = t["sensor_msgs/msg/Image"](header=header, height=5, width=7, encoding="bgr8", is_bigendian=0,
                                    step=24, data=padded.reshape(-1))
    np.testing.assert_array_equal(image_to_rgb8(msg), rgb)
    msg.encoding = "nv12"  # not a sensor_msgs encoding (yuv422, which this line used before, now decodes)
    with pytest.raises(ValueError, match="unsupported image encoding"):
        image_to_rgb8(msg)


def test_stamp_pairer_takes_nearest_reference_within_tolerance():
    pairer = StampPairer(tolerance_ns=10)
    assert pairer.add_image(100, "a") == []
    assert pairer.add_reference(95, "g95") == []
    assert pairer.add_reference(103, "g103") == []
    assert pairer.add_image(200, "b") == []
    assert pairer.add_reference(120, "g120") == [("a", "g103")]
    assert pairer.finish() == [("b", None)]  # nothing within 10 ns of 200
    assert StampPairer(10, expect_references=False).add_image(5, "x") == [("x", None)]


# ------------------------------------------------------------------------------- metric functions
def test_abs_rel_and_delta1_on_hand_made_arrays():
    gt = np.array([[1.0, 2.0], [4.0, np.nan]])
    pred = np.array([[1.1, 1.0], [4.0, 7.0]])
    valid = M.gt_valid_mask(gt)
    # |1.1-1|/1 = 0.1, |1-2|/2 = 0.5, 0 -> mean 0.2; ratios 1.1 (ok), 2 (bad), 1 (ok) -> 2/3
    assert M.abs_rel(pred, gt, valid) == pytest.approx(0.2)
    assert M.delta1(pred, gt, valid) == pytest.approx(2 / 3)
    assert math.isnan(M.abs_rel(pred, gt, np.zeros_like(valid)))


def test_log_alignment_recovers_an_exact_affine_log_map():
    rng = np.random.default_rng(1)
    gt = rng.uniform(0.5, 20.0, (20, 30))
    relative = (np.log1p(gt) - 0.4) / 1.7  # so log(gt + 1) = 1.7 r + 0.4
    depth, scale, shift = M.align_log_depth(relative, gt, np.ones_like(gt, bool))
    assert scale == pytest.approx(1.7, rel=1e-4) and shift == pytest.approx(0.4, abs=1e-4)
    assert M.abs_rel(depth, gt, np.ones_like(gt, bool)) < 1e-4


def step_edge(width: int = 40, height: int = 30, column: int = 20, near: float = 1.0, far: float = 3.0):
    depth = np.full((height, width), far)
    depth[:, :column] = near
    return depth


def test_boundary_f1_on_a_step_edge():
    gt = step_edge()
    assert M.boundary_f1(gt, gt) == pytest.approx(1.0)
    # edge one pixel off: no contour pixel coincides
    assert M.boundary_f1(step_edge(column=21), gt) == pytest.approx(0.0)
    # a smooth ramp has no neighbour ratio above 1.05 -> no predicted contour -> F1 0
    ramp = np.tile(np.linspace(1.0, 3.0, 40), (30, 1))
    assert M.boundary_f1(ramp, gt) == pytest.approx(0.0)
    # the right contour plus a spurious second edge: every GT contour found (recall 1), half of
    # the predicted ones are real (precision 1/2), all in the one direction that has contours
    extra = step_edge()
    extra[:, 30:] = 9.0  # a second far step at column 30 (ratio 3)
    right_pred = extra[:, 1:] > 1.05 * extra[:, :-1]
    right_gt = gt[:, 1:] > 1.05 * gt[:, :-1]
    precision = np.count_nonzero(right_pred & right_gt) / np.count_nonzero(right_pred)
    recall = np.count_nonzero(right_pred & right_gt) / np.count_nonzero(right_gt)
    assert (precision, recall) == (0.5, 1.0)
    assert M.boundary_f1_at(extra, gt, 1.05) == pytest.approx(2 * precision * recall / (precision + recall))
    assert M.boundary_f1(extra, gt) == pytest.approx(2 / 3)  # the same at every ratio up to 1.25
    assert math.isnan(M.boundary_f1(np.ones((5, 5)), np.ones((5, 5))))  # no GT contour


def test_flying_pixel_share_counts_points_between_surfaces():
    gt = step_edge()
    valid = np.ones_like(gt, bool)
    share, points = M.flying_pixel_share(gt.copy(), gt, valid, radius=2)
    assert share == 0.0 and points == 30 * 6  # band: columns 17..22
    blurred = gt.copy()
    blurred[:, 19] = 2.0  # halfway between 1 and 3 m: on neither surface
    blurred[:, 20] = 2.0
    share, points = M.flying_pixel_share(blurred, gt, valid, radius=2)
    assert share == pytest.approx(2 / 6)
    removed = blurred.copy()
    removed[:, 19:21] = np.nan  # the filter removed them: no points, no flying share
    assert M.flying_pixel_share(removed, gt, valid, radius=2) == (0.0, 30 * 4)


def test_temporal_change_error_is_zero_for_consistent_scale_and_positive_for_flicker():
    gt0, gt1 = step_edge(), step_edge() * 1.1
    valid = np.ones_like(gt0, bool)
    assert M.temporal_change_error(gt1 * 2, gt1, valid, gt0 * 2, gt0, valid) == pytest.approx(0.0)
    assert M.temporal_change_error(gt1 * 2.2, gt1, valid, gt0 * 2, gt0, valid) == pytest.approx(math.log(1.1))


# --- what careless users and broken recordings do (issue 12 items 7, 8) ------------------------------
def test_wrong_topic_types_are_refused_up_front_with_one_line(tmp_path, synthetic_frames, capsys):
    from ppd_ros.cli import main as ppd_main

    camera, frames = synthetic_frames
    bag = write_bag(tmp_path / "bag", "mcap", camera, frames)
    common = ["eval-bag", str(bag), "--model", "tiny-random", "--target-area", "1024", "--device", "cpu",
              "--output", str(tmp_path / "out")]
    for extra, phrase in ((["--image-topic", "/camera/camera_info"], "has type sensor_msgs/msg/CameraInfo"),
                          (["--image-topic", "/camera/image", "--gt-points-topic", "/camera/gt_depth"],
                           "gt_points topic"),
                          (["--image-topic", "/camera/none"], "is not in the bag")):
        assert ppd_main(common + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and phrase.lower() in err[0].lower(), err
    assert not (tmp_path / "out").exists()  # refused before anything was written
    missing = tmp_path / "no_such_bag"
    assert ppd_main(["eval-bag", str(missing), "--image-topic", "/x"]) == 2
    assert "no such bag" in capsys.readouterr().err and not (tmp_path / "no_such_bag_eval").exists()


def test_report_is_written_when_no_frame_has_ground_truth(tmp_path, synthetic_frames):
    camera, frames = synthetic_frames
    bag = write_bag(tmp_path / "bag", "mcap", camera, frames, gt_offset_ns=30_000_000)  # 30 ms > 0.02 s
    out = tmp_path / "out"
    assert run(eval_args(bag, out)) == 0
    rows, _ = read_output(out)
    assert len(rows) == FRAMES and all(row["has_gt"] == "False" for row in rows)
    report = (out / "report.md").read_text()
    assert "| AbsRel (mean of frames) | n/a |" in report and "no frame had GT" in report
    args = eval_args(bag, tmp_path / "out2")
    args.gt_depth_topic = None
    assert run(args) == 0 and (tmp_path / "out2" / "report.md").is_file()


def test_rerun_into_the_same_folder_needs_overwrite(tmp_path, synthetic_frames):
    camera, frames = synthetic_frames
    bag = write_bag(tmp_path / "bag", "mcap", camera, frames)
    out = tmp_path / "out"
    assert run(eval_args(bag, out)) == 0
    with pytest.raises(ValueError, match="--overwrite"):
        run(eval_args(bag, out))
    assert run(eval_args(bag, out, "--overwrite")) == 0
    assert len(read_output(out)[0]) == FRAMES


def test_camera_info_of_another_size_follows_the_node_rule(tmp_path, synthetic_frames):
    camera, frames = synthetic_frames
    bag = write_bag(tmp_path / "bag", "mcap", camera, frames, info_scale=2)  # calibrated at twice the size
    out = tmp_path / "reject"
    assert run(eval_args(bag, out)) == 1  # the node's default rejects every frame: nothing evaluated
    report = (out / "report.md").read_text()
    assert f"| frames skipped (bad message / rejected like the node) | 0 / {FRAMES} |" in report
    assert "camera_info_size_mismatch=reject" in report
    out = tmp_path / "scale"
    assert run(eval_args(bag, out, "-p", "camera_info_size_mismatch:=scale")) == 0
    assert len(read_output(out)[0]) == FRAMES


def test_bad_compressed_frames_are_skipped_counted_and_the_run_goes_on(tmp_path, synthetic_frames):
    from test_decode_limits import jpeg_bomb, png_bomb

    camera, frames = synthetic_frames
    bad = {1: jpeg_bomb(), 2: png_bomb(40000, 40000)}  # above the pixel limit / OpenCV's own limit
    bag = write_bag(tmp_path / "bag", "mcap", camera, frames, compressed=True, image_data=bad.get)
    out = tmp_path / "out"
    assert run(eval_args(bag, out)) == 0
    rows, _ = read_output(out)
    assert [int(row["frame"]) for row in rows] == [0, 1]  # frames 0 and 3 of the bag
    report = (out / "report.md").read_text()
    assert "| frames skipped (bad message / rejected like the node) | 2 / 0 |" in report
    assert report.count("- skipped:") == 2


def test_skip_and_max_frames_select_a_part_of_the_log(tmp_path, synthetic_frames):
    camera, frames = synthetic_frames
    bag = write_bag(tmp_path / "bag", "mcap", camera, frames)
    out = tmp_path / "out"
    assert run(eval_args(bag, out, "--skip-frames", "1", "--max-frames", "2")) == 0
    rows, _ = read_output(out)
    assert [int(row["stamp_ns"]) for row in rows] == [2 * NS // 10, 3 * NS // 10]  # the bag's frames 1 and 2
