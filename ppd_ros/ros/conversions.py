"""numpy <-> ROS message conversions (our own replacement for cv_bridge and sensor_msgs_py).

The decoders (message -> numpy) are ROS-free and live in :mod:`ppd_ros.msg_decode`; they are
re-exported here. This module adds the builders (numpy -> message), which need the message classes.

Big buffers are always moved as ``bytes`` (``msg.data = arr.tobytes()``) and read with
``np.frombuffer``: assigning an ndarray to ``msg.data`` is converted element by element and costs
hundreds of milliseconds per megabyte.
"""
from __future__ import annotations

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from ppd_ros.msg_decode import (  # noqa: F401 - re-exported decoders
    IMAGE_ENCODINGS,
    POINTFIELD_DTYPES,
    ConversionError,
    PixelFormat,
    camera_info_to_model,
    compressed_to_rgb8,
    image_to_numpy,
    image_to_rgb8,
    pixel_format,
    pointcloud2_dtype,
    pointcloud2_to_structured,
)


def header_copy(header: Header | None) -> Header:
    """An independent copy of a std_msgs/Header (an empty Header for None)."""
    out = Header()
    if header is not None:
        out.stamp.sec = header.stamp.sec
        out.stamp.nanosec = header.stamp.nanosec
        out.frame_id = header.frame_id
    return out


def numpy_to_image(array: np.ndarray, encoding: str, header: Header | None = None,
                   step: int | None = None, big_endian: bool = False) -> Image:
    """A sensor_msgs/Image holding ``array`` ((H, W) or (H, W, C)) in ``encoding``.

    ``step`` (bytes per row, default: no padding) may exceed the row's pixel bytes; the padding
    is zero. ``big_endian`` stores multi-byte elements big-endian and sets ``is_bigendian``.
    """
    fmt = pixel_format(encoding)
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1 and fmt.channels == 1:
        array = array[:, :, 0]
    expected_ndim = 2 if fmt.channels == 1 else 3
    if array.ndim != expected_ndim or (expected_ndim == 3 and array.shape[2] != fmt.channels):
        wanted = "(H, W)" if fmt.channels == 1 else f"(H, W, {fmt.channels})"
        raise ConversionError(
            f"array of shape {array.shape} does not fit encoding {encoding!r}, which needs {wanted}")
    if array.dtype.kind != fmt.dtype.kind or array.dtype.itemsize != fmt.dtype.itemsize:
        raise ConversionError(
            f"array dtype {array.dtype} does not fit encoding {encoding!r}, which needs {fmt.dtype}")
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise ConversionError(f"image has zero size: {width}x{height} (width x height)")
    row_bytes = width * fmt.pixel_bytes
    step = row_bytes if step is None else int(step)
    if step < row_bytes:
        raise ConversionError(
            f"image step {step} is smaller than width {width} x {fmt.pixel_bytes} bytes per pixel "
            f"({encoding}) = {row_bytes}")
    stored = np.ascontiguousarray(array, dtype=fmt.dtype.newbyteorder(">" if big_endian else "<"))
    if step == row_bytes:
        data = stored.tobytes()
    else:
        padded = np.zeros((height, step), dtype=np.uint8)
        padded[:, :row_bytes] = stored.view(np.uint8).reshape(height, row_bytes)
        data = padded.tobytes()
    msg = Image()
    msg.header = header_copy(header)
    msg.height, msg.width, msg.step = height, width, step
    msg.encoding = encoding
    msg.is_bigendian = bool(big_endian)
    msg.data = data
    return msg


def rgb8_to_compressed(rgb: np.ndarray, fmt: str = "jpeg", header: Header | None = None
                       ) -> CompressedImage:
    """Encode uint8 (H, W, 3) RGB as a JPEG or PNG CompressedImage (image_transport's format string)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ConversionError(f"rgb8 image must be uint8 (H, W, 3); got {rgb.dtype} {rgb.shape}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ConversionError(f"image has zero size: {rgb.shape[1]}x{rgb.shape[0]} (width x height)")
    codec = fmt.strip().lower()
    extensions = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}
    if codec not in extensions:
        raise ConversionError(f"unsupported compressed image format {fmt!r}; supported: jpeg, png")
    ok, encoded = cv2.imencode(extensions[codec], np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise ConversionError(f"OpenCV failed to encode a {rgb.shape[1]}x{rgb.shape[0]} {codec} image")
    msg = CompressedImage()
    msg.header = header_copy(header)
    msg.format = f"rgb8; {'jpeg' if codec == 'jpg' else codec} compressed bgr8"
    msg.data = encoded.tobytes()
    return msg


# ----------------------------------------------------------------------------------------------
# CameraInfo
# ----------------------------------------------------------------------------------------------

def camera_model_to_info(model, header: Header | None = None) -> CameraInfo:
    """A sensor_msgs/CameraInfo describing ``model`` at its own width/height.

    R is identity, binning and ROI are zero (already applied to the model). A model without P gets
    P = [K | 0]; distortion model "none" is written the way ROS spells it: "plumb_bob" with five
    zero coefficients.
    """
    K = np.asarray(model.K, dtype=np.float64).reshape(3, 3)
    P = np.hstack([K, np.zeros((3, 1))]) if model.P is None else np.asarray(model.P, dtype=np.float64)
    info = CameraInfo()
    info.header = header_copy(header)
    info.width, info.height = int(model.width), int(model.height)
    if model.distortion_model == "none":
        info.distortion_model, distortion = "plumb_bob", np.zeros(5)
    else:
        info.distortion_model = str(model.distortion_model)
        distortion = np.asarray(model.D, dtype=np.float64).ravel()
    info.d = [float(v) for v in distortion]
    info.k = K.reshape(9)
    info.r = np.eye(3, dtype=np.float64).reshape(9)
    info.p = P.reshape(12)
    return info


# ----------------------------------------------------------------------------------------------
# PointCloud2
# ----------------------------------------------------------------------------------------------

_DTYPE_TO_POINTFIELD = {(dt.kind, dt.itemsize): code for code, dt in POINTFIELD_DTYPES.items()}


def structured_to_pointcloud2(array: np.ndarray, header: Header | None = None) -> PointCloud2:
    """A little-endian PointCloud2 from a structured array, (H, W) organised or (N,) unorganised.

    Each named field becomes a PointField at its dtype offset (subarray fields give count > 1);
    point_step is the dtype's itemsize, so padding in the dtype is kept. is_dense is False.
    """
    array = np.asarray(array)
    if array.dtype.names is None:
        raise ConversionError(f"point cloud array must have a structured dtype; got {array.dtype}")
    if array.ndim == 1:
        height, width = 1, array.shape[0]
    elif array.ndim == 2:
        height, width = array.shape
    else:
        raise ConversionError(f"point cloud array must be (N,) or (H, W); got shape {array.shape}")
    fields, little = [], {"names": [], "formats": [], "offsets": [], "itemsize": array.dtype.itemsize}
    for name in array.dtype.names:
        field_dtype, offset = array.dtype.fields[name][:2]
        base, shape = field_dtype.base, field_dtype.shape
        code = _DTYPE_TO_POINTFIELD.get((base.kind, base.itemsize))
        if code is None or base.names is not None:
            raise ConversionError(
                f"point field {name!r} has dtype {field_dtype}, which PointField cannot describe "
                f"(int8/16/32, uint8/16/32, float32/64 only)")
        count = int(np.prod(shape)) if shape else 1
        fields.append(PointField(name=name, offset=int(offset), datatype=code, count=count))
        little["names"].append(name)
        little["formats"].append((base.newbyteorder("<"), shape) if shape else base.newbyteorder("<"))
        little["offsets"].append(offset)
    stored = np.ascontiguousarray(array.astype(np.dtype(little), copy=False))
    msg = PointCloud2()
    msg.header = header_copy(header)
    msg.height, msg.width = int(height), int(width)
    msg.fields = fields
    msg.is_bigendian = False
    msg.point_step = int(array.dtype.itemsize)
    msg.row_step = int(width * array.dtype.itemsize)
    msg.is_dense = False
    msg.data = stored.tobytes()
    return msg
