"""Hostile compressed images (issue 12 item 2): decompression bombs refused from the header before any
decoding, the CompressedImage `format` checked against the data, other codecs refused, and the 16-bit
path's memory bounded. Real JPEG/PNG/TIFF/... bytes made by OpenCV, in `rosbags` messages; peak memory is
measured in a fresh process (Linux VmHWM, reset just before the call)."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest

from ppd_ros.msg_decode import (
    DEFAULT_MAX_PIXELS, ConversionError, compressed_depth_to_metres, compressed_to_rgb8, parse_compressed_format,
    read_image_header,
)


def _types():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY).types


def _compressed(data, fmt: str):
    t = _types()
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="cam")
    return t["sensor_msgs/msg/CompressedImage"](header=header, format=fmt, data=np.frombuffer(bytes(data), np.uint8))


def _image(height=24, width=32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def jpeg_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A ~600-byte JPEG of a 16x16 image whose frame header (SOF0) claims ``width`` x ``height``:
    a decoder that trusts the header allocates width x height x 3 bytes and fills them."""
    data = bytearray(cv2.imencode(".jpg", _image(16, 16))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def png_bomb(width: int = 30000, height: int = 30000, image: np.ndarray | None = None) -> bytes:
    """A small PNG whose IHDR (CRC fixed) claims ``width`` x ``height``."""
    image = np.zeros((16, 16), np.uint8) if image is None else image
    data = bytearray(cv2.imencode(".png", image)[1].tobytes())
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


PEAK_SCRIPT = """
import json, sys, time
import numpy as np
from rosbags.typesys import Stores, get_typestore
from ppd_ros.msg_decode import ConversionError, compressed_to_rgb8, image_to_rgb8
t = get_typestore(Stores.ROS2_JAZZY).types
header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id="cam")
kind, path, fmt = sys.argv[1:4]
data = np.frombuffer(open(path, "rb").read(), np.uint8)
if kind == "compressed":
    msg = t["sensor_msgs/msg/CompressedImage"](header=header, format=fmt, data=data)
    warm = t["sensor_msgs/msg/CompressedImage"](header=header, format="jpeg", data=np.frombuffer(
        open(sys.argv[4], "rb").read(), np.uint8))
    compressed_to_rgb8(warm)  # the decoder's own start-up allocations happen before the measurement
    convert = compressed_to_rgb8
else:  # a raw Image of 16-bit pixels, data = the pixel bytes
    height, width = (int(v) for v in fmt.split("x"))
    msg = t["sensor_msgs/msg/Image"](header=header, height=height, width=width, encoding="rgb16",
                                     is_bigendian=0, step=width * 6, data=data)
    image_to_rgb8(t["sensor_msgs/msg/Image"](header=header, height=2, width=2, encoding="rgb16",
                                             is_bigendian=0, step=12, data=np.zeros(24, np.uint8)))
    convert = image_to_rgb8
def status_kib(key):
    return int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1])
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # Linux: reset the peak resident size (VmHWM) to the current one
before = status_kib("VmHWM")
start = time.perf_counter()
try:
    outcome = "decoded %s" % (convert(msg).shape,)
except ConversionError as error:
    outcome = str(error)
seconds = time.perf_counter() - start
growth = (status_kib("VmHWM") - before) * 1024
print(json.dumps({"outcome": outcome, "seconds": seconds, "peak_growth_bytes": growth}))
"""


def _peak(tmp_path, kind: str, payload: bytes, fmt: str) -> dict:
    (tmp_path / "payload").write_bytes(payload)
    cv2.imwrite(str(tmp_path / "warm.jpg"), _image())
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, kind, str(tmp_path / "payload"), fmt,
                          str(tmp_path / "warm.jpg")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_jpeg_bomb_is_refused_from_its_header_without_a_large_allocation(tmp_path):
    bomb = jpeg_bomb(20000, 20000)
    assert len(bomb) < 1000
    result = _peak(tmp_path, "compressed", bomb, "rgb8; jpeg compressed bgr8")
    assert "20000x20000 = 400000000 pixels" in result["outcome"]
    assert f"above the limit of {DEFAULT_MAX_PIXELS}" in result["outcome"]
    # decoding it would take 20000 * 20000 * 3 = 1.2 GB
    assert result["peak_growth_bytes"] < 4 * 2**20, result


def test_png_bomb_and_compressed_depth_bomb_are_refused(tmp_path):
    with pytest.raises(ConversionError, match=r"30000x30000 = 900000000 pixels by its png header, above the limit"):
        compressed_to_rgb8(_compressed(png_bomb(), "png"))
    depth_bomb = png_bomb(image=np.ones((16, 16), np.uint16))
    with pytest.raises(ConversionError, match=r"30000x30000 .* above the limit"):
        compressed_depth_to_metres(_compressed(depth_bomb, "png"))
    payload = struct.pack("<iff", 0, 0.0, 0.0) + depth_bomb
    with pytest.raises(ConversionError, match=r"30000x30000 .* above the limit"):
        compressed_depth_to_metres(_compressed(payload, "16UC1; compressedDepth png"))


def test_the_pixel_limit_is_an_argument():
    png = cv2.imencode(".png", _image(48, 64))[1].tobytes()
    assert compressed_to_rgb8(_compressed(png, "png"), max_pixels=48 * 64).shape == (48, 64, 3)
    with pytest.raises(ConversionError, match=r"64x48 = 3072 pixels .* above the limit of 3071"):
        compressed_to_rgb8(_compressed(png, "png"), max_pixels=48 * 64 - 1)
    header = read_image_header(png)
    assert (header.codec, header.width, header.height, header.channels, header.bit_depth) == ("png", 64, 48, 3, 8)
    jpeg = cv2.imencode(".jpg", _image(48, 64))[1].tobytes()
    header = read_image_header(jpeg)
    assert (header.codec, header.width, header.height, header.channels, header.bit_depth) == ("jpeg", 64, 48, 3, 8)


def test_sixteen_bit_conversion_memory_is_bounded(tmp_path):
    height, width = 1500, 2000
    pixels = np.empty((height, width, 3), np.uint16)
    pixels[:] = (np.arange(width * 3, dtype=np.uint16) * 21).reshape(1, width, 3)
    result = _peak(tmp_path, "image", pixels.tobytes(), f"{height}x{width}")
    assert result["outcome"] == f"decoded ({height}, {width}, 3)"
    # the uint8 RGB result is 3 bytes per pixel; wide (uint32) temporaries cost ~38
    assert result["peak_growth_bytes"] < 5 * height * width, result


def test_format_must_name_the_codec_of_the_data():
    rgb = _image()
    png = cv2.imencode(".png", rgb[:, :, ::-1].copy())[1].tobytes()
    jpeg = cv2.imencode(".jpg", rgb)[1].tobytes()
    with pytest.raises(ConversionError, match=r"format 'jpeg'\) says jpeg but the data is png"):
        compressed_to_rgb8(_compressed(png, "jpeg"))
    with pytest.raises(ConversionError, match=r"says png but the data is jpeg"):
        compressed_to_rgb8(_compressed(jpeg, "rgb8; png compressed bgr8"))
    # image_transport's format strings, any case
    np.testing.assert_array_equal(compressed_to_rgb8(_compressed(png, "bgr8; PNG compressed bgr8")), rgb)
    assert compressed_to_rgb8(_compressed(jpeg, "JPG")).shape == rgb.shape
    assert parse_compressed_format("rgb8; jpeg compressed rgb8") == ("jpeg", "rgb8")
    assert parse_compressed_format(" png ") == ("png", "")
    with pytest.raises(ConversionError, match=r"unsupported compressed image format 'bgr8; tiff compressed bgr8'"):
        parse_compressed_format("bgr8; tiff compressed bgr8")


@pytest.mark.parametrize("extension, name", [
    (".tiff", "TIFF"), (".webp", "WebP"), (".jp2", "JPEG 2000"), (".bmp", "BMP"), (".ppm", "PPM"),
    (".gif", "GIF")])
def test_other_codecs_are_refused_by_their_signature(extension, name):
    data = cv2.imencode(extension, _image(64, 64))[1].tobytes()
    with pytest.raises(ValueError, match=rf"says jpeg but the data is {name}.*only JPEG and PNG are decoded"):
        compressed_to_rgb8(_compressed(data, "rgb8; jpeg compressed bgr8"))
    with pytest.raises(ConversionError, match=rf"{name}.* only JPEG and PNG are decoded"):
        read_image_header(data)


def test_truncated_png_is_refused_by_us_not_libpng(capfd):
    png = cv2.imencode(".png", _image())[1].tobytes()
    with pytest.raises(ConversionError, match=r"PNG has no IEND chunk: truncated"):
        compressed_to_rgb8(_compressed(png[: len(png) * 2 // 3], "png"))
    assert capfd.readouterr().err == ""
