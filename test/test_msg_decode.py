"""ppd_ros.msg_decode on `rosbags` message objects (ROS 1 and ROS 2 type stores): the decoders the
node, eval-bag and the rosbag training dataset share. rclpy messages are covered by test_conversions."""
from __future__ import annotations

import struct
import subprocess
import sys

import cv2
import numpy as np
import pytest

from ppd_ros.msg_decode import (
    ConversionError, camera_info_to_model, compressed_depth_to_metres, depth_image_msg_to_metres, image_to_rgb8,
    pointcloud2_xyz, stamp_ns,
)


def _types(store_name: str):
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(getattr(Stores, store_name)).types


def _header(t, sec=3, nanosec=7):
    return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id="cam")


def test_module_imports_no_ros():
    code = ("import sys, ppd_ros.msg_decode; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'sensor_msgs', 'std_msgs')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_compressed_depth_16uc1_and_plain_png():
    t = _types("ROS2_JAZZY")
    mm = np.random.default_rng(0).integers(0, 6000, (6, 9)).astype(np.uint16)
    mm[0, 0] = 0
    png = cv2.imencode(".png", mm)[1].reshape(-1)
    expected = np.where(mm > 0, mm / 1000.0, np.nan)
    payload = np.concatenate([np.zeros(12, np.uint8), png])
    msg = t["sensor_msgs/msg/CompressedImage"](header=_header(t), format="16UC1; compressedDepth png", data=payload)
    np.testing.assert_allclose(compressed_depth_to_metres(msg), expected, rtol=1e-6)
    msg = t["sensor_msgs/msg/CompressedImage"](header=_header(t), format="png", data=png)
    np.testing.assert_allclose(compressed_depth_to_metres(msg), expected, rtol=1e-6)
    msg.format = "jpeg"
    msg.data = cv2.imencode(".jpg", np.zeros((4, 4, 3), np.uint8))[1].reshape(-1)
    with pytest.raises(ConversionError, match="single-channel 16-bit PNG"):
        compressed_depth_to_metres(msg)


def test_compressed_depth_32fc1_inverse_quantisation():
    # compressed_depth_image_transport: v = round(A / d + B), A = quantisation, B = 1 - A / max_depth
    t = _types("ROS2_JAZZY")
    quant_a, max_depth = 100.0, 10.0
    quant_b = 1.0 - quant_a / max_depth
    depth = np.random.default_rng(1).uniform(0.5, 9.0, (5, 8)).astype(np.float32)
    v = np.round(quant_a / depth + quant_b).astype(np.uint16)
    v[2, 3] = 0  # invalid
    header = struct.pack("<iff", 0, quant_a, quant_b)
    payload = np.concatenate([np.frombuffer(header, np.uint8), cv2.imencode(".png", v)[1].reshape(-1)])
    msg = t["sensor_msgs/msg/CompressedImage"](header=_header(t), format="32FC1; compressedDepth png", data=payload)
    decoded = compressed_depth_to_metres(msg)
    assert np.isnan(decoded[2, 3])
    valid = v > 0
    # one quantisation step at depth d is d^2 / A
    np.testing.assert_allclose(decoded[valid], depth[valid], atol=float((depth**2).max() / quant_a))


def test_camera_info_ros1_and_ros2_spellings_and_stamp():
    models = []
    for store in ("ROS1_NOETIC", "ROS2_JAZZY"):
        t = _types(store)
        info_type = t["sensor_msgs/msg/CameraInfo"]
        lower = "k" in info_type.__dataclass_fields__
        values = dict(K=np.array([50.0, 0, 31.5, 0, 52.0, 23.5, 0, 0, 1]), D=np.zeros(5), R=np.eye(3).reshape(-1),
                      P=np.array([50.0, 0, 31.5, 0, 0, 52.0, 23.5, 0, 0, 0, 1, 0]))
        fields = {(k.lower() if lower else k): v for k, v in values.items()}
        roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        header = t["std_msgs/msg/Header"](**({"seq": 0} if not lower else {}),
                                          stamp=t["builtin_interfaces/msg/Time"](sec=3, nanosec=7), frame_id="cam")
        info = info_type(header=header, height=48, width=64, distortion_model="plumb_bob", binning_x=0,
                         binning_y=0, roi=roi, **fields)
        models.append(camera_info_to_model(info))
        assert stamp_ns(info) == 3_000_000_007
    assert models[0] == models[1]
    assert (models[0].fx, models[0].fy, models[0].cx, models[0].cy) == (50.0, 52.0, 31.5, 23.5)


def test_encodings_in_any_case_and_depth_and_cloud():
    t = _types("ROS2_JAZZY")
    bgr = np.random.default_rng(2).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    image = t["sensor_msgs/msg/Image"](header=_header(t), height=3, width=4, encoding="8uc3", is_bigendian=0,
                                      step=12, data=bgr.reshape(-1))
    np.testing.assert_array_equal(image_to_rgb8(image), bgr[..., ::-1])
    mm = np.array([[0, 1500], [65535, 7]], dtype=np.uint16)
    depth = t["sensor_msgs/msg/Image"](header=_header(t), height=2, width=2, encoding="MONO16", is_bigendian=1,
                                      step=4, data=mm.astype(">u2").view(np.uint8).reshape(-1))
    np.testing.assert_allclose(depth_image_msg_to_metres(depth), [[np.nan, 1.5], [65.535, 0.007]], rtol=1e-6)
    depth.encoding = "rgb8"
    with pytest.raises(ConversionError, match="unsupported depth encoding 'rgb8'"):
        depth_image_msg_to_metres(depth)
    xyz = np.random.default_rng(3).normal(size=(2, 3, 3))
    points = np.zeros((2, 3), dtype=np.dtype({"names": ["x", "y", "z", "i"], "formats": ["<f8", "<f8", "<f4", "u1"],
                                               "offsets": [0, 8, 16, 20], "itemsize": 24}))
    points["x"], points["y"], points["z"] = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    field = t["sensor_msgs/msg/PointField"]
    cloud = t["sensor_msgs/msg/PointCloud2"](
        header=_header(t), height=2, width=3, is_bigendian=False, point_step=24, row_step=72, is_dense=False,
        fields=[field(name="x", offset=0, datatype=8, count=1), field(name="y", offset=8, datatype=8, count=1),
                field(name="z", offset=16, datatype=7, count=1), field(name="i", offset=20, datatype=2, count=1)],
        data=points.view(np.uint8).reshape(-1))
    expected = np.stack([xyz[..., 0], xyz[..., 1], xyz[..., 2].astype(np.float32)], axis=-1).reshape(-1, 3)
    np.testing.assert_array_equal(pointcloud2_xyz(cloud), expected)
