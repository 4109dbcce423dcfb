"""numpy <-> ROS message conversions (ppd_ros.ros.conversions) and the Fast DDS shared-memory profile."""
from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from ppd_ros.ros.conversions import (
    IMAGE_ENCODINGS,
    ConversionError,
    camera_info_to_model,
    camera_model_to_info,
    compressed_to_rgb8,
    header_copy,
    image_to_numpy,
    image_to_rgb8,
    numpy_to_image,
    pixel_format,
    pointcloud2_to_structured,
    rgb8_to_compressed,
    structured_to_pointcloud2,
)

REPO = Path(__file__).resolve().parents[1]
FAST = settings(max_examples=40, deadline=None)


def random_pixels(rng: np.random.Generator, dtype: np.dtype, shape: tuple) -> np.ndarray:
    """Random values over the dtype's full bit range (floats: any bit pattern, NaNs included)."""
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.ascontiguousarray(a).tobytes() == \
        np.ascontiguousarray(b).tobytes()


def make_header(sec=12, nanosec=345, frame_id="camera_optical") -> Header:
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = sec, nanosec
    return header


# ------------------------------------------------------------------------------------------------
# Image <-> numpy
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("encoding", IMAGE_ENCODINGS)
@settings(max_examples=8, deadline=None)
@given(height=st.integers(1, 5), width=st.integers(1, 6),
       padding=st.integers(0, 9), big_endian=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_image_round_trip_every_encoding(encoding, height, width, padding, big_endian, seed):
    fmt = pixel_format(encoding)
    shape = (height, width) if fmt.channels == 1 else (height, width, fmt.channels)
    pixels = random_pixels(np.random.default_rng(seed), fmt.dtype, shape)
    step = width * fmt.pixel_bytes + padding
    msg = numpy_to_image(pixels, encoding, header=make_header(), step=step, big_endian=big_endian)
    assert (msg.height, msg.width, msg.step, msg.encoding) == (height, width, step, encoding)
    assert msg.is_bigendian == big_endian and len(msg.data) == step * height
    assert msg.header.frame_id == "camera_optical" and msg.header.stamp.nanosec == 345
    back = image_to_numpy(msg)
    assert back.dtype.isnative
    assert same_bits(back, pixels)


@FAST
@given(values=st.lists(st.integers(0, 65535), min_size=6, max_size=6), big_endian=st.booleans(),
       padding=st.integers(0, 7))
def test_image_to_numpy_reads_hand_packed_rows(values, big_endian, padding):
    # 2x3 mono16 packed with struct, rows padded with garbage bytes.
    order = ">" if big_endian else "<"
    rows = [struct.pack(f"{order}3H", *values[r * 3:(r + 1) * 3]) + b"\xab" * padding for r in range(2)]
    msg = Image(height=2, width=3, encoding="mono16", is_bigendian=big_endian, step=6 + padding)
    msg.data = b"".join(rows)
    np.testing.assert_array_equal(image_to_numpy(msg), np.array(values, dtype=np.uint16).reshape(2, 3))


@FAST
@given(values=st.lists(st.floats(-1e6, 1e6, width=32), min_size=4, max_size=4), big_endian=st.booleans())
def test_numpy_to_image_writes_hand_checked_bytes(values, big_endian):
    depth = np.array(values, dtype=np.float32).reshape(2, 2)
    msg = numpy_to_image(depth, "32FC1", step=12, big_endian=big_endian)
    order = ">" if big_endian else "<"
    expected = b"".join(struct.pack(f"{order}2f", *values[r * 2:(r + 1) * 2]) + b"\0" * 4 for r in range(2))
    assert bytes(msg.data) == expected


def test_unpadded_little_endian_image_is_not_copied():
    depth = np.arange(12, dtype=np.float32).reshape(3, 4)
    msg = numpy_to_image(depth, "32FC1")
    view = image_to_numpy(msg)
    assert np.shares_memory(view, np.frombuffer(msg.data, np.uint8))


def test_header_copy_is_independent():
    original = make_header()
    copy = header_copy(original)
    original.frame_id = "changed"
    original.stamp.sec = 99
    assert (copy.frame_id, copy.stamp.sec, copy.stamp.nanosec) == ("camera_optical", 12, 345)
    assert header_copy(None).frame_id == ""


# ------------------------------------------------------------------------------------------------
# rgb8 for the model
# ------------------------------------------------------------------------------------------------

def to_8bit_reference(values: np.ndarray) -> np.ndarray:
    return np.round(values.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)


@FAST
@given(seed=st.integers(0, 2**32 - 1), padding=st.integers(0, 5), big_endian=st.booleans())
def test_image_to_rgb8_matches_independent_channel_maths(seed, padding, big_endian):
    rng = np.random.default_rng(seed)
    h, w = 3, 5
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (h, w, 1), dtype=np.uint8)
    rgb16 = rng.integers(0, 65536, (h, w, 3), dtype=np.uint16)
    grey = rng.integers(0, 256, (h, w), dtype=np.uint8)
    grey16 = rng.integers(0, 65536, (h, w), dtype=np.uint16)
    cases = [
        ("rgb8", rgb, rgb),
        ("bgr8", rgb[:, :, [2, 1, 0]], rgb),
        ("rgba8", np.concatenate([rgb, alpha], axis=2), rgb),
        ("bgra8", np.concatenate([rgb[:, :, [2, 1, 0]], alpha], axis=2), rgb),
        ("8UC3", rgb[:, :, [2, 1, 0]], rgb),  # OpenCV order
        ("rgb16", rgb16, to_8bit_reference(rgb16)),
        ("bgr16", rgb16[:, :, [2, 1, 0]], to_8bit_reference(rgb16)),
        ("mono8", grey, np.stack([grey] * 3, axis=2)),
        ("8UC1", grey, np.stack([grey] * 3, axis=2)),
        ("mono16", grey16, np.stack([to_8bit_reference(grey16)] * 3, axis=2)),
    ]
    for encoding, stored, expected in cases:
        fmt = pixel_format(encoding)
        msg = numpy_to_image(stored, encoding, step=w * fmt.pixel_bytes + padding, big_endian=big_endian)
        out = image_to_rgb8(msg)
        assert out.dtype == np.uint8 and out.shape == (h, w, 3) and out.flags.c_contiguous, encoding
        np.testing.assert_array_equal(out, expected, err_msg=encoding)


def pack_yuv422(y: np.ndarray, u: np.ndarray, v: np.ndarray, layout: str) -> np.ndarray:
    """(H, W, 2) packed bytes from Y per pixel and U, V per horizontal pixel pair."""
    h, w = y.shape
    packed = np.empty((h, w // 2, 4), dtype=np.uint8)
    if layout == "uyvy":
        packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = u, y[:, 0::2], v, y[:, 1::2]
    else:
        packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = y[:, 0::2], u, y[:, 1::2], v
    return packed.reshape(h, w, 2)


@FAST
@given(seed=st.integers(0, 2**32 - 1),
       encoding=st.sampled_from(["yuv422", "uyvy", "yuv422_yuy2", "yuyv"]), padding=st.integers(0, 6))
def test_yuv422_to_rgb8(seed, encoding, padding):
    rng = np.random.default_rng(seed)
    h, w = 4, 6
    y = rng.integers(16, 236, (h, w)).astype(np.uint8)
    u = rng.integers(16, 241, (h, w // 2)).astype(np.uint8)
    v = rng.integers(16, 241, (h, w // 2)).astype(np.uint8)
    layout = "uyvy" if encoding in ("yuv422", "uyvy") else "yuyv"
    packed = pack_yuv422(y, u, v, layout)
    msg = numpy_to_image(packed, encoding, step=w * 2 + padding)
    out = image_to_rgb8(msg)
    # OpenCV's own conversion of the packed buffer.
    code = cv2.COLOR_YUV2RGB_UYVY if layout == "uyvy" else cv2.COLOR_YUV2RGB_YUY2
    np.testing.assert_array_equal(out, cv2.cvtColor(packed, code))
    # Independent BT.601 video-range maths (chroma shared by each pixel pair).
    yf = 1.164 * (y.astype(np.float64) - 16)
    uf = np.repeat(u.astype(np.float64) - 128, 2, axis=1)
    vf = np.repeat(v.astype(np.float64) - 128, 2, axis=1)
    expected = np.stack([yf + 1.596 * vf, yf - 0.391 * uf - 0.813 * vf, yf + 2.018 * uf], axis=2)
    assert np.abs(out.astype(np.float64) - np.clip(expected, 0, 255)).max() <= 2.0


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_to_rgb8_constant_colour(pattern, bits):
    colour = {"r": 200, "g": 90, "b": 30}
    scale = 257 if bits == 16 else 1
    mosaic = np.empty((8, 10), dtype=np.uint16 if bits == 16 else np.uint8)
    for dy in range(2):
        for dx in range(2):
            mosaic[dy::2, dx::2] = colour[pattern[2 * dy + dx]] * scale
    out = image_to_rgb8(numpy_to_image(mosaic, f"bayer_{pattern}{bits}"))
    np.testing.assert_array_equal(out[2:-2, 2:-2], np.broadcast_to([200, 90, 30], (4, 6, 3)))


# ------------------------------------------------------------------------------------------------
# Errors users can cause
# ------------------------------------------------------------------------------------------------

def raw_image(encoding="rgb8", height=2, width=3, step=9, size=None) -> Image:
    msg = Image(height=height, width=width, encoding=encoding, step=step)
    msg.data = bytes(step * height if size is None else size)
    return msg


@pytest.mark.parametrize("msg, pattern", [
    (raw_image(encoding="rgb9"), r"unsupported image encoding 'rgb9'"),
    (raw_image(encoding="32UC1", step=12), r"unsupported image encoding '32UC1'"),
    (raw_image(size=17), r"image data is shorter than step x height: 17 bytes, expected 9 x 2 = 18"),
    (raw_image(size=20), r"image data is longer than step x height: 20 bytes, expected 9 x 2 = 18"),
    (raw_image(step=8), r"step 8 is smaller than width 3 x 3 bytes per pixel \(rgb8\) = 9"),
    (raw_image(encoding="32FC1", step=11), r"step 11 is smaller than width 3 x 4 bytes per pixel"),
    (raw_image(height=0, step=9, size=0), r"zero size: 3x0"),
    (raw_image(width=0, step=0, size=0), r"zero size: 0x2"),
])
def test_image_to_numpy_errors(msg, pattern):
    with pytest.raises(ConversionError, match=pattern):
        image_to_numpy(msg)


def test_image_to_rgb8_errors():
    with pytest.raises(ConversionError, match=r"'32FC1' is not a colour or grey image"):
        image_to_rgb8(numpy_to_image(np.zeros((2, 2), np.float32), "32FC1"))
    with pytest.raises(ConversionError, match=r"yuyv image width 3 is odd"):
        image_to_rgb8(numpy_to_image(np.zeros((2, 3, 2), np.uint8), "yuyv"))
    with pytest.raises(ConversionError, match=r"unsupported image encoding 'nv12'"):
        image_to_rgb8(raw_image(encoding="nv12"))


def test_numpy_to_image_errors():
    with pytest.raises(ConversionError, match=r"dtype float64 does not fit encoding '32FC1'.*float32"):
        numpy_to_image(np.zeros((2, 2)), "32FC1")
    with pytest.raises(ConversionError, match=r"shape \(2, 2\) does not fit encoding 'rgb8'.*\(H, W, 3\)"):
        numpy_to_image(np.zeros((2, 2), np.uint8), "rgb8")
    with pytest.raises(ConversionError, match=r"step 5 is smaller than width 2 x 3 bytes per pixel"):
        numpy_to_image(np.zeros((2, 2, 3), np.uint8), "rgb8", step=5)
    with pytest.raises(ConversionError, match=r"zero size: 0x4"):
        numpy_to_image(np.zeros((4, 0), np.uint8), "mono8")
    with pytest.raises(ConversionError, match=r"unsupported image encoding 'depth'"):
        numpy_to_image(np.zeros((2, 2), np.float32), "depth")


# ------------------------------------------------------------------------------------------------
# CompressedImage
# ------------------------------------------------------------------------------------------------

def smooth_rgb(h=24, w=32) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), (xx + yy) * 4 % 256], axis=2).astype(np.uint8)


def test_png_round_trip_is_exact_and_keeps_header():
    rgb = np.random.default_rng(3).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    msg = rgb8_to_compressed(rgb, "png", header=make_header())
    assert msg.format == "rgb8; png compressed bgr8" and msg.header.frame_id == "camera_optical"
    np.testing.assert_array_equal(compressed_to_rgb8(msg), rgb)


def test_jpeg_round_trip_is_close():
    rgb = smooth_rgb()
    msg = rgb8_to_compressed(rgb)
    assert msg.format == "rgb8; jpeg compressed bgr8" and bytes(msg.data[:3]) == b"\xff\xd8\xff"
    out = compressed_to_rgb8(msg)
    assert out.shape == rgb.shape and np.abs(out.astype(int) - rgb.astype(int)).mean() < 3.0


def test_compressed_formats_from_other_publishers():
    rgb = np.random.default_rng(4).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    # Plain "png" from an OpenCV (BGR) publisher.
    bgr_png = CompressedImage(format="png")
    bgr_png.data = cv2.imencode(".png", rgb[:, :, ::-1].copy())[1].tobytes()
    np.testing.assert_array_equal(compressed_to_rgb8(bgr_png), rgb)
    # RGB bytes compressed as they are: image_transport labels them "... compressed rgb8".
    rgb_png = CompressedImage(format="rgb8; png compressed rgb8")
    rgb_png.data = cv2.imencode(".png", rgb)[1].tobytes()
    np.testing.assert_array_equal(compressed_to_rgb8(rgb_png), rgb)
    # 16-bit grey PNG: replicated and scaled to 8 bit.
    grey16 = np.random.default_rng(5).integers(0, 65536, (5, 7), dtype=np.uint16)
    mono = CompressedImage(format="mono16; png compressed mono16")
    mono.data = cv2.imencode(".png", grey16)[1].tobytes()
    np.testing.assert_array_equal(compressed_to_rgb8(mono), np.stack([to_8bit_reference(grey16)] * 3, axis=2))


def test_compressed_errors():
    corrupt = rgb8_to_compressed(smooth_rgb())
    corrupt.data = b"\xff\xd8\xff" + bytes(200)
    with pytest.raises(ConversionError, match=r"\(203 bytes, format .*jpeg.*\) could not be decoded"):
        compressed_to_rgb8(corrupt)
    empty = CompressedImage(format="jpeg")
    with pytest.raises(ConversionError, match=r"has no data \(0 bytes\)"):
        compressed_to_rgb8(empty)
    with pytest.raises(ConversionError, match=r"unsupported compressed image format 'webp'"):
        compressed_to_rgb8(CompressedImage(format="webp", data=b"RIFF"))
    with pytest.raises(ConversionError, match=r"compressedDepth"):
        compressed_to_rgb8(CompressedImage(format="16UC1; compressedDepth png", data=b"x"))
    with pytest.raises(ConversionError, match=r"unsupported compressed image format 'bmp'"):
        rgb8_to_compressed(smooth_rgb(), "bmp")
    with pytest.raises(ConversionError, match=r"must be uint8 \(H, W, 3\); got float32 \(2, 2, 3\)"):
        rgb8_to_compressed(np.zeros((2, 2, 3), np.float32))


# ------------------------------------------------------------------------------------------------
# PointCloud2
# ------------------------------------------------------------------------------------------------

FIELD_TYPES = ["i1", "u1", "i2", "u2", "i4", "u4", "f4", "f8"]
POINTFIELD_CODE = {"i1": 1, "u1": 2, "i2": 3, "u2": 4, "i4": 5, "u4": 6, "f4": 7, "f8": 8}


@st.composite
def point_layouts(draw):
    """A structured dtype with gaps between fields, trailing padding and some subarray fields."""
    n_fields = draw(st.integers(1, 5))
    names, formats, offsets, offset = [], [], [], 0
    for i in range(n_fields):
        offset += draw(st.integers(0, 3))
        base = np.dtype(draw(st.sampled_from(FIELD_TYPES))).newbyteorder(draw(st.sampled_from("<>")))
        count = draw(st.sampled_from([1, 1, 3]))
        names.append(f"f{i}")
        formats.append((base, (count,)) if count > 1 else base)
        offsets.append(offset)
        offset += base.itemsize * count
    itemsize = offset + draw(st.integers(0, 5))
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": itemsize})


@FAST
@given(layout=point_layouts(), organised=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_pointcloud2_round_trip(layout, organised, seed):
    rng = np.random.default_rng(seed)
    shape = (3, 4) if organised else (7,)
    points = np.zeros(shape, dtype=layout)
    for name in layout.names:
        points[name] = random_pixels(rng, layout.fields[name][0].base, points[name].shape)
    msg = structured_to_pointcloud2(points, make_header())
    height, width = shape if organised else (1, 7)
    assert (msg.height, msg.width, msg.point_step) == (height, width, layout.itemsize)
    assert msg.row_step == width * layout.itemsize and len(msg.data) == msg.row_step * height
    assert msg.is_bigendian is False and msg.is_dense is False and msg.header.frame_id == "camera_optical"
    for field, name in zip(msg.fields, layout.names):
        dt, offset = layout.fields[name][:2]
        assert (field.name, field.offset) == (name, offset)
        assert field.datatype == POINTFIELD_CODE[dt.base.str[1:]]
        assert field.count == (dt.shape[0] if dt.shape else 1)
    back = pointcloud2_to_structured(msg)
    assert back.shape == (height, width) and back.dtype.itemsize == layout.itemsize
    for name in layout.names:
        assert back.dtype.fields[name][1] == layout.fields[name][1]
        assert back[name].dtype.isnative
        expected = points[name].reshape((height, width) + points[name].shape[len(shape):])
        assert same_bits(back[name], expected.astype(back[name].dtype))


@FAST
@given(xyz=st.lists(st.floats(-100, 100, width=32), min_size=6, max_size=6), big_endian=st.booleans(),
       row_padding=st.integers(0, 6))
def test_pointcloud2_to_structured_reads_hand_packed_cloud(xyz, big_endian, row_padding):
    # 2 rows x 1 point: x at 0, z at 8, a uint16 ring at 12, 2 pad bytes, then row padding.
    order = ">" if big_endian else "<"
    rows = [struct.pack(f"{order}f4xfH2x", xyz[3 * r], xyz[3 * r + 2], 40 + r) + b"\xcd" * row_padding
            for r in range(2)]
    msg = PointCloud2(height=2, width=1, point_step=16, row_step=16 + row_padding, is_bigendian=big_endian)
    msg.fields = [PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
                  PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
                  PointField(name="ring", offset=12, datatype=PointField.UINT16, count=1)]
    msg.data = b"".join(rows)
    cloud = pointcloud2_to_structured(msg)
    np.testing.assert_array_equal(cloud["x"][:, 0], np.float32([xyz[0], xyz[3]]))
    np.testing.assert_array_equal(cloud["z"][:, 0], np.float32([xyz[2], xyz[5]]))
    np.testing.assert_array_equal(cloud["ring"][:, 0], [40, 41])


def xyz_cloud() -> PointCloud2:
    return structured_to_pointcloud2(np.zeros((2, 3), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")]))


def test_pointcloud2_errors():
    short = xyz_cloud()
    short.data = bytes(70)
    with pytest.raises(ConversionError, match=r"shorter than row_step x height: 70 bytes, expected 36 x 2 = 72"):
        pointcloud2_to_structured(short)
    narrow = xyz_cloud()
    narrow.row_step = 30
    with pytest.raises(ConversionError, match=r"row_step 30 is smaller than width 3 x point_step 12 = 36"):
        pointcloud2_to_structured(narrow)
    overrun = xyz_cloud()
    overrun.fields[2].offset = 10
    with pytest.raises(ConversionError, match=r"'z' \(offset 10, 1 x 4 bytes\) ends at byte 14, past point_step 12"):
        pointcloud2_to_structured(overrun)
    unknown = xyz_cloud()
    unknown.fields[1].datatype = 9
    with pytest.raises(ConversionError, match=r"'y' has unknown PointField datatype 9"):
        pointcloud2_to_structured(unknown)
    with pytest.raises(ConversionError, match=r"'t' has dtype int64"):
        structured_to_pointcloud2(np.zeros(3, dtype=[("x", "f4"), ("t", "i8")]))
    with pytest.raises(ConversionError, match=r"structured dtype; got float32"):
        structured_to_pointcloud2(np.zeros((3, 3), np.float32))
    with pytest.raises(ConversionError, match=r"\(N,\) or \(H, W\); got shape \(1, 2, 3\)"):
        structured_to_pointcloud2(np.zeros((1, 2, 3), dtype=[("x", "f4")]))


def test_empty_pointcloud2_round_trip():
    msg = structured_to_pointcloud2(np.zeros(0, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")]))
    assert (msg.height, msg.width, len(msg.data)) == (1, 0, 0)
    assert pointcloud2_to_structured(msg).shape == (1, 0)


# ------------------------------------------------------------------------------------------------
# CameraInfo
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def camera():
    return pytest.importorskip(
        "ppd_ros.geometry.camera", reason="ppd_ros.geometry.camera (CameraModel) is not written yet")


def calibrated_info() -> CameraInfo:
    info = CameraInfo(width=640, height=480, distortion_model="plumb_bob", header=make_header())
    info.k = [500.0, 0.0, 320.5, 0.0, 505.0, 240.25, 0.0, 0.0, 1.0]
    info.d = [0.1, -0.05, 0.001, 0.002, 0.01]
    info.r = np.eye(3).ravel()
    info.p = [498.0, 0.0, 321.0, 0.0, 0.0, 503.0, 241.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def test_camera_info_round_trip(camera):
    info = calibrated_info()
    model = camera_info_to_model(info)
    assert isinstance(model, camera.CameraModel)
    back = camera_model_to_info(model, info.header)
    assert (back.width, back.height, back.distortion_model) == (640, 480, "plumb_bob")
    np.testing.assert_allclose(back.k, info.k)
    np.testing.assert_allclose(back.d, info.d)
    np.testing.assert_allclose(back.p, info.p)
    np.testing.assert_allclose(back.r, np.eye(3).ravel())
    assert back.header.frame_id == "camera_optical" and back.header.stamp.sec == 12


def test_camera_info_rectified_roi_and_binning_reach_the_model(camera):
    info = calibrated_info()
    rectified = camera_info_to_model(info, rectified=True)
    np.testing.assert_allclose(rectified.K, np.reshape(info.p, (3, 4))[:, :3])
    back = camera_model_to_info(rectified, None)
    assert back.distortion_model == "plumb_bob" and list(back.d) == [0.0] * 5
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 10, 20, 300, 200
    info.binning_x = info.binning_y = 2
    cropped = camera_info_to_model(info)
    assert (cropped.width, cropped.height) == (150, 100)
    np.testing.assert_allclose([cropped.fx, cropped.fy], [250.0, 252.5])
    np.testing.assert_allclose([cropped.cx, cropped.cy], [(320.5 - 10) / 2, (240.25 - 20) / 2])


def test_camera_info_errors(camera):
    uncalibrated = CameraInfo(width=640, height=480)
    with pytest.raises(ConversionError, match=r"invalid CameraInfo.*focal length must be > 0"):
        camera_info_to_model(uncalibrated)
    zero_size = calibrated_info()
    zero_size.width = 0
    with pytest.raises(ConversionError, match=r"invalid CameraInfo.*camera size 0x480"):
        camera_info_to_model(zero_size)
    no_p = calibrated_info()
    no_p.p = np.zeros(12)
    with pytest.raises(ConversionError, match=r"rectified image needs a non-zero CameraInfo.P"):
        camera_info_to_model(no_p, rectified=True)


# ------------------------------------------------------------------------------------------------
# Fast DDS shared-memory profile: two processes exchange one 12.6 MB cloud
# ------------------------------------------------------------------------------------------------

_DDS_SCRIPT = textwrap.dedent("""
    import hashlib, sys, time
    import numpy as np
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from ppd_ros.ros.conversions import pointcloud2_to_structured, structured_to_pointcloud2

    role = sys.argv[1]
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    rclpy.init()
    node = rclpy.create_node("profile_check_" + role)
    points = np.zeros((768, 1024), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("rgb", "f4")])
    points["z"] = np.arange(points.size, dtype=np.float32).reshape(points.shape)
    if role == "pub":
        msg = structured_to_pointcloud2(points)
        pub = node.create_publisher(PointCloud2, "big_cloud", qos)
        # Publish while the subscriber is there; leave cleanly once it has gone (a killed process
        # would leave its 64 MB shared-memory segment behind in /dev/shm).
        deadline, published = time.time() + 15, False
        while time.time() < deadline:
            if pub.get_subscription_count() > 0:
                pub.publish(msg)
                published = True
            elif published:
                break
            time.sleep(0.2)
    else:
        received = []
        node.create_subscription(PointCloud2, "big_cloud", received.append, qos)
        deadline = time.time() + 12
        while not received and time.time() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        if received:
            cloud = pointcloud2_to_structured(received[0])
            print("RESULT", len(received[0].data), bool(np.array_equal(cloud["z"], points["z"])), flush=True)
    node.destroy_node()
    rclpy.shutdown()
""")


@pytest.mark.ros
def test_two_processes_exchange_a_large_cloud_with_the_shm_profile():
    profile = REPO / "config" / "fastdds_shm.xml"
    env = dict(os.environ, FASTRTPS_DEFAULT_PROFILES_FILE=str(profile),
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_DOMAIN_ID=str(100 + int(hashlib.sha1(b"test_conversions").hexdigest(), 16) % 100))
    env.pop("ROS_LOCALHOST_ONLY", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    sub = subprocess.Popen([sys.executable, "-c", _DDS_SCRIPT, "sub"], env=env, cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pub = subprocess.Popen([sys.executable, "-c", _DDS_SCRIPT, "pub"], env=env, cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sub_out, sub_err = sub.communicate(timeout=20)
        _, pub_err = pub.communicate(timeout=10)
    finally:
        for process in (sub, pub):
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert "RESULT 12582912 True" in sub_out, f"subscriber got nothing.\nsub stderr:\n{sub_err}\npub stderr:\n{pub_err}"
    # A profile Fast DDS cannot parse is reported on stderr and silently replaced by the defaults.
    for err in (sub_err, pub_err):
        assert "XMLPARSER" not in err and "Error" not in err, err
