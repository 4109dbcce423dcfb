"""numpy <-> ROS message conversions (our own replacement for cv_bridge and sensor_msgs_py).

Big buffers are always moved as ``bytes`` (``msg.data = arr.tobytes()``) and read with
``np.frombuffer``: assigning an ndarray to ``msg.data`` is converted element by element and costs
hundreds of milliseconds per megabyte.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header


class ConversionError(ValueError):
    """A message or array that cannot be converted; the message names the problem and the numbers."""


# ----------------------------------------------------------------------------------------------
# Image encodings
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PixelFormat:
    """How one encoding lays out a pixel: element dtype (native order) and channels per pixel."""

    dtype: np.dtype
    channels: int

    @property
    def pixel_bytes(self) -> int:
        return self.dtype.itemsize * self.channels


_NAMED_ENCODINGS = {
    "rgb8": ("u1", 3), "bgr8": ("u1", 3), "rgba8": ("u1", 4), "bgra8": ("u1", 4),
    "rgb16": ("u2", 3), "bgr16": ("u2", 3), "rgba16": ("u2", 4), "bgra16": ("u2", 4),
    "mono8": ("u1", 1), "mono16": ("u2", 1),
    "bayer_rggb8": ("u1", 1), "bayer_bggr8": ("u1", 1),
    "bayer_gbrg8": ("u1", 1), "bayer_grbg8": ("u1", 1),
    "bayer_rggb16": ("u2", 1), "bayer_bggr16": ("u2", 1),
    "bayer_gbrg16": ("u2", 1), "bayer_grbg16": ("u2", 1),
    # Packed 4:2:2, two bytes per pixel. ROS names: "uyvy" (old name "yuv422") and
    # "yuyv" (old name "yuv422_yuy2").
    "uyvy": ("u1", 2), "yuv422": ("u1", 2), "yuyv": ("u1", 2), "yuv422_yuy2": ("u1", 2),
}

# OpenCV-style TYPE encodings: "<bits><U|S|F>C<channels>", only the depths ROS defines.
_TYPE_ENCODING = re.compile(r"^(8|16|32|64)([USF])C([1-4])$")
_TYPE_DEPTHS = {("8", "U"): "u1", ("8", "S"): "i1", ("16", "U"): "u2", ("16", "S"): "i2",
                ("32", "S"): "i4", ("32", "F"): "f4", ("64", "F"): "f8"}

# Supported encodings, listed in error messages.
IMAGE_ENCODINGS = tuple(_NAMED_ENCODINGS) + tuple(
    f"{bits}{kind}C{c}" for (bits, kind) in _TYPE_DEPTHS for c in range(1, 5))


def pixel_format(encoding: str) -> PixelFormat:
    """Element dtype and channel count of a sensor_msgs/Image encoding; ConversionError if unknown."""
    if encoding in _NAMED_ENCODINGS:
        code, channels = _NAMED_ENCODINGS[encoding]
        return PixelFormat(np.dtype(code), channels)
    match = _TYPE_ENCODING.match(encoding)
    if match and (match.group(1), match.group(2)) in _TYPE_DEPTHS:
        code = _TYPE_DEPTHS[(match.group(1), match.group(2))]
        return PixelFormat(np.dtype(code), int(match.group(3)))
    raise ConversionError(
        f"unsupported image encoding {encoding!r}; supported: {', '.join(IMAGE_ENCODINGS)}")


def header_copy(header: Header | None) -> Header:
    """An independent copy of a std_msgs/Header (an empty Header for None)."""
    out = Header()
    if header is not None:
        out.stamp.sec = header.stamp.sec
        out.stamp.nanosec = header.stamp.nanosec
        out.frame_id = header.frame_id
    return out


def image_to_numpy(msg: Image) -> np.ndarray:
    """Pixels of a sensor_msgs/Image as (H, W) or (H, W, C) in the encoding's dtype, native byte order.

    Row padding (``step`` larger than the pixel bytes of a row) is dropped and ``is_bigendian`` is
    honoured. Packed YUV 4:2:2 comes back as (H, W, 2) uint8 bytes. The result may share memory
    with ``msg.data`` when no copy is needed.
    """
    fmt = pixel_format(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ConversionError(f"image has zero size: {width}x{height} (width x height)")
    row_bytes = width * fmt.pixel_bytes
    if step < row_bytes:
        raise ConversionError(
            f"image step {step} is smaller than width {width} x {fmt.pixel_bytes} bytes per pixel "
            f"({msg.encoding}) = {row_bytes}")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != step * height:
        relation = "shorter" if data.size < step * height else "longer"
        raise ConversionError(
            f"image data is {relation} than step x height: {data.size} bytes, expected "
            f"{step} x {height} = {step * height}")
    rows = data.reshape(height, step)[:, :row_bytes]
    stored = fmt.dtype.newbyteorder(">" if msg.is_bigendian else "<")
    pixels = np.ascontiguousarray(rows).view(stored).astype(fmt.dtype, copy=False)
    if fmt.channels == 1:
        return pixels.reshape(height, width)
    return pixels.reshape(height, width, fmt.channels)


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


# ----------------------------------------------------------------------------------------------
# Colour for the model
# ----------------------------------------------------------------------------------------------

# ROS Bayer names give the top-left 2x2 tile; OpenCV names its codes after the tile one pixel
# down and right, hence the shifted pairs.
_BAYER_TO_RGB = {"rggb": cv2.COLOR_BayerBG2RGB, "bggr": cv2.COLOR_BayerRG2RGB,
                 "gbrg": cv2.COLOR_BayerGR2RGB, "grbg": cv2.COLOR_BayerGB2RGB}
_YUV422_TO_RGB = {"uyvy": cv2.COLOR_YUV2RGB_UYVY, "yuv422": cv2.COLOR_YUV2RGB_UYVY,
                  "yuyv": cv2.COLOR_YUV2RGB_YUY2, "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2}


def _to_8bit(pixels: np.ndarray) -> np.ndarray:
    """Scale uint16 to uint8 (65535 -> 255, rounded); uint8 passes through."""
    if pixels.dtype == np.uint8:
        return pixels
    return ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _pixels_to_rgb8(pixels: np.ndarray, order: str) -> np.ndarray:
    """(H, W) grey or (H, W, 3|4) pixels in channel ``order`` ("rgb"/"bgr") -> uint8 (H, W, 3)."""
    pixels = np.ascontiguousarray(_to_8bit(pixels))
    if pixels.ndim == 2:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    # cv2.cvtColor is several times faster than numpy's strided channel shuffles.
    codes = {("rgb", 3): None, ("bgr", 3): cv2.COLOR_BGR2RGB,
             ("rgb", 4): cv2.COLOR_RGBA2RGB, ("bgr", 4): cv2.COLOR_BGRA2RGB}
    code = codes[(order, pixels.shape[2])]
    return pixels if code is None else cv2.cvtColor(pixels, code)


def image_to_rgb8(msg: Image) -> np.ndarray:
    """A sensor_msgs/Image as contiguous uint8 (H, W, 3) RGB, the model's input.

    rgb/bgr(a) 8 and 16 bit, mono8/mono16 (replicated to three channels), Bayer (demosaiced),
    packed YUV 4:2:2 (uyvy/yuv422, yuyv/yuv422_yuy2) and the unsigned TYPE encodings with 1, 3 or 4
    channels (8UC1/16UC1 as grey, 8UC3/8UC4/16UC3/16UC4 in OpenCV's BGR(A) order). 16-bit values
    are scaled to 8 bit (65535 -> 255). An unpadded rgb8 image is returned without a copy, so the
    result may share memory with ``msg.data``.
    """
    encoding = msg.encoding
    pixels = image_to_numpy(msg)
    if encoding in ("rgb8", "rgba8", "rgb16", "rgba16"):
        return _pixels_to_rgb8(pixels, "rgb")
    if encoding in ("bgr8", "bgra8", "bgr16", "bgra16"):
        return _pixels_to_rgb8(pixels, "bgr")
    if encoding in ("mono8", "mono16", "8UC1", "16UC1"):
        return _pixels_to_rgb8(pixels, "rgb")
    if encoding in ("8UC3", "8UC4", "16UC3", "16UC4"):
        return _pixels_to_rgb8(pixels, "bgr")
    if encoding.startswith("bayer_"):
        if pixels.shape[0] < 2 or pixels.shape[1] < 2:
            raise ConversionError(
                f"Bayer image {pixels.shape[1]}x{pixels.shape[0]} is too small to demosaic "
                f"(needs at least 2x2)")
        return _to_8bit(cv2.cvtColor(pixels, _BAYER_TO_RGB[encoding[6:10]]))
    if encoding in _YUV422_TO_RGB:
        if pixels.shape[1] % 2:
            raise ConversionError(
                f"{encoding} image width {pixels.shape[1]} is odd; 4:2:2 needs pixel pairs")
        return cv2.cvtColor(pixels, _YUV422_TO_RGB[encoding])
    raise ConversionError(
        f"encoding {encoding!r} is not a colour or grey image and cannot be converted to rgb8")


def compressed_to_rgb8(msg: CompressedImage) -> np.ndarray:
    """A JPEG or PNG sensor_msgs/CompressedImage as uint8 (H, W, 3) RGB.

    ``format`` may be a bare codec ("jpeg", "png") or image_transport's
    "<encoding>; <codec> compressed <stored encoding>"; a stored encoding starting with "rgb"
    means the compressed channels are already in RGB order (OpenCV otherwise assumes BGR).
    """
    fmt = msg.format.strip().lower()
    if "compresseddepth" in fmt:
        raise ConversionError(
            f"compressed format {msg.format!r} is compressedDepth (depth data), not a colour image")
    codec_part = fmt.split(";", 1)[1] if ";" in fmt else fmt
    if not any(name in codec_part for name in ("jpeg", "jpg", "png")):
        raise ConversionError(
            f"unsupported compressed image format {msg.format!r}; supported codecs: jpeg, png")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ConversionError(f"compressed image ({msg.format!r}) has no data (0 bytes)")
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0:
        raise ConversionError(
            f"compressed image data ({data.size} bytes, format {msg.format!r}) could not be "
            f"decoded: corrupt or not {codec_part.split()[0]}")
    if decoded.dtype not in (np.uint8, np.uint16):
        raise ConversionError(f"compressed image decoded to unsupported dtype {decoded.dtype}")
    stored_encoding = fmt.split("compressed", 1)[1].strip() if "compressed" in fmt else ""
    order = "rgb" if stored_encoding.startswith("rgb") else "bgr"
    if decoded.ndim == 3 and decoded.shape[2] == 1:
        decoded = decoded[:, :, 0]
    if decoded.ndim == 3 and decoded.shape[2] not in (3, 4):
        raise ConversionError(f"compressed image decoded to {decoded.shape[2]} channels")
    return _pixels_to_rgb8(decoded, order)


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

def camera_info_to_model(msg: CameraInfo, rectified: bool = False):
    """A ``ppd_ros.geometry.camera.CameraModel`` from a sensor_msgs/CameraInfo.

    ``rectified`` says the images are already rectified (use P, no distortion).
    Invalid calibration (zero size, zero focal length, unknown distortion model, non-finite
    values) raises ConversionError.
    """
    from ppd_ros.geometry.camera import CameraModel

    roi = msg.roi
    try:
        model = CameraModel.from_camera_info_fields(
            int(msg.width), int(msg.height),
            np.asarray(msg.k, dtype=np.float64).reshape(3, 3),
            np.asarray(msg.d, dtype=np.float64),
            np.asarray(msg.r, dtype=np.float64).reshape(3, 3),
            np.asarray(msg.p, dtype=np.float64).reshape(3, 4),
            msg.distortion_model,
            binning_x=int(msg.binning_x), binning_y=int(msg.binning_y),
            roi=(int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)),
            rectified=rectified)
        model.validate()
    except ValueError as exc:
        raise ConversionError(f"invalid CameraInfo (frame {msg.header.frame_id!r}): {exc}") from exc
    return model


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

_POINTFIELD_DTYPES = {
    PointField.INT8: np.dtype("i1"), PointField.UINT8: np.dtype("u1"),
    PointField.INT16: np.dtype("i2"), PointField.UINT16: np.dtype("u2"),
    PointField.INT32: np.dtype("i4"), PointField.UINT32: np.dtype("u4"),
    PointField.FLOAT32: np.dtype("f4"), PointField.FLOAT64: np.dtype("f8"),
}
_DTYPE_TO_POINTFIELD = {(dt.kind, dt.itemsize): code for code, dt in _POINTFIELD_DTYPES.items()}


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


def pointcloud2_dtype(msg: PointCloud2) -> np.dtype:
    """The structured dtype (native byte order, itemsize point_step) of a PointCloud2's points."""
    names, formats, offsets = [], [], []
    for field in msg.fields:
        base = _POINTFIELD_DTYPES.get(field.datatype)
        if base is None:
            raise ConversionError(
                f"point field {field.name!r} has unknown PointField datatype {field.datatype}")
        if field.count < 1:
            raise ConversionError(f"point field {field.name!r} has count {field.count}; needs >= 1")
        end = field.offset + base.itemsize * field.count
        if end > msg.point_step:
            raise ConversionError(
                f"point field {field.name!r} (offset {field.offset}, {field.count} x "
                f"{base.itemsize} bytes) ends at byte {end}, past point_step {msg.point_step}")
        if field.name in names:
            raise ConversionError(f"point field name {field.name!r} appears twice")
        names.append(field.name)
        formats.append((base, (field.count,)) if field.count > 1 else base)
        offsets.append(field.offset)
    try:
        return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                         "itemsize": int(msg.point_step)})
    except (ValueError, TypeError) as exc:
        raise ConversionError(f"point fields do not form a valid layout: {exc}") from exc


def pointcloud2_to_structured(msg: PointCloud2) -> np.ndarray:
    """Points of a PointCloud2 as a structured (H, W) array in native byte order.

    Field offsets, point_step and row_step padding are honoured; the dtype keeps the message's
    point layout (itemsize = point_step).
    """
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    if not msg.fields:
        raise ConversionError("point cloud has no fields")
    if point_step == 0:
        raise ConversionError("point cloud point_step is 0")
    native = pointcloud2_dtype(msg)
    if row_step < width * point_step:
        raise ConversionError(
            f"point cloud row_step {row_step} is smaller than width {width} x point_step "
            f"{point_step} = {width * point_step}")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != row_step * height:
        relation = "shorter" if data.size < row_step * height else "longer"
        raise ConversionError(
            f"point cloud data is {relation} than row_step x height: {data.size} bytes, expected "
            f"{row_step} x {height} = {row_step * height}")
    stored = native.newbyteorder(">" if msg.is_bigendian else "<")
    rows = data.reshape(height, row_step)[:, :width * point_step]
    return np.ascontiguousarray(rows).view(stored).reshape(height, width).astype(native, copy=False)
