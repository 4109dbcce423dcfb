"""sensor_msgs-shaped messages -> numpy, without ROS (our own replacement for cv_bridge's and
sensor_msgs_py's reading half).

Decoders are duck-typed: they read the field names that rclpy messages and `rosbags` message
objects share (Image, CompressedImage, CameraInfo, PointCloud2, std_msgs/Header), so the ROS node
(:mod:`ppd_ros.ros.conversions`), ``ppd eval-bag`` and the rosbag training dataset decode with the
same code. Buffers are read with ``np.frombuffer``, which takes rclpy's ``array.array`` / ``bytes``
and rosbags' uint8 ndarrays without a copy.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import cv2
import numpy as np



class ConversionError(ValueError):
    """A message or array that cannot be converted; the message names the problem and the numbers."""


class ImageTooLargeError(ConversionError):
    """A compressed image whose header claims more pixels than the limit; refused before decoding."""


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
# Some recorders write encodings in another case ("8uc3", "MONO16"); they are read as the ROS name.
_ENCODING_BY_LOWER = {name.lower(): name for name in IMAGE_ENCODINGS}


def canonical_encoding(encoding: str) -> str:
    """The ROS spelling of a known encoding written in any case; unknown encodings unchanged."""
    return _ENCODING_BY_LOWER.get(encoding.lower(), encoding)


def pixel_format(encoding: str) -> PixelFormat:
    """Element dtype and channel count of a sensor_msgs/Image encoding; ConversionError if unknown."""
    encoding = canonical_encoding(encoding)
    if encoding in _NAMED_ENCODINGS:
        code, channels = _NAMED_ENCODINGS[encoding]
        return PixelFormat(np.dtype(code), channels)
    match = _TYPE_ENCODING.match(encoding)
    if match and (match.group(1), match.group(2)) in _TYPE_DEPTHS:
        code = _TYPE_DEPTHS[(match.group(1), match.group(2))]
        return PixelFormat(np.dtype(code), int(match.group(3)))
    raise ConversionError(
        f"unsupported image encoding {encoding!r}; supported: {', '.join(IMAGE_ENCODINGS)}")


def _rows(data, height: int, step: int, used_bytes: int, what: str, step_name: str) -> np.ndarray:
    """(height, used_bytes) contiguous uint8 rows of a buffer of ``height`` rows of ``step`` bytes,
    the padding after ``used_bytes`` dropped; ConversionError if the buffer size does not match."""
    data = np.frombuffer(data, dtype=np.uint8)
    if data.size != step * height:
        relation = "shorter" if data.size < step * height else "longer"
        raise ConversionError(
            f"{what} data is {relation} than {step_name} x height: {data.size} bytes, expected "
            f"{step} x {height} = {step * height}")
    return np.ascontiguousarray(data.reshape(height, step)[:, :used_bytes])


def image_to_numpy(msg) -> np.ndarray:
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
    rows = _rows(msg.data, height, step, row_bytes, "image", "step")
    stored = fmt.dtype.newbyteorder(">" if msg.is_bigendian else "<")
    pixels = rows.view(stored).astype(fmt.dtype, copy=False)
    if fmt.channels == 1:
        return pixels.reshape(height, width)
    return pixels.reshape(height, width, fmt.channels)


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
    """Scale uint16 to uint8 (65535 -> 255, rounded); uint8 passes through.

    round(v / 257) in one OpenCV pass straight into uint8 (1 byte per element, no wide
    temporaries); v / 257 is never exactly halfway, so this equals (v * 255 + 32767) // 65535.
    """
    if pixels.dtype == np.uint8:
        return pixels
    return cv2.convertScaleAbs(np.ascontiguousarray(pixels), alpha=1.0 / 257.0)


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


def image_to_rgb8(msg) -> np.ndarray:
    """A sensor_msgs/Image as contiguous uint8 (H, W, 3) RGB, the model's input.

    rgb/bgr(a) 8 and 16 bit, mono8/mono16 (replicated to three channels), Bayer (demosaiced),
    packed YUV 4:2:2 (uyvy/yuv422, yuyv/yuv422_yuy2) and the unsigned TYPE encodings with 1, 3 or 4
    channels (8UC1/16UC1 as grey, 8UC3/8UC4/16UC3/16UC4 in OpenCV's BGR(A) order). 16-bit values
    are scaled to 8 bit (65535 -> 255). An unpadded rgb8 image is returned without a copy, so the
    result may share memory with ``msg.data``.
    """
    encoding = canonical_encoding(msg.encoding)
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


# ----------------------------------------------------------------------------------------------
# Compressed images: header check before decoding
# ----------------------------------------------------------------------------------------------

# Refuse compressed images above this many pixels before decoding (8192 x 8192 covers real
# cameras; a 600-byte JPEG may claim 65535 x 65535 and make the decoder allocate gigabytes).
DEFAULT_MAX_PIXELS = 8192 * 8192
DECODED_CODECS = ("jpeg", "png")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
# Signatures of codecs we recognise in order to name them, and refuse.
_REFUSED_SIGNATURES = (
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"BM", "BMP"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"), (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"v/1\x01", "OpenEXR"), (b"#?RADIANCE", "Radiance HDR"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"), (b"\xff\x0a", "JPEG XL"),
)
_NETPBM = re.compile(rb"^P[1-7]\s")
# JPEG start-of-frame markers (SOF0..SOF15 without DHT C4, JPG C8 and DAC CC): they carry the size.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# PNG colour type -> channels cv2.imdecode(IMREAD_UNCHANGED) returns (palette expands to BGR).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 4, 6: 4}


@dataclass(frozen=True)
class ImageHeader:
    """What a JPEG or PNG header says about the image, read without decoding it."""

    codec: str  # "jpeg" or "png"
    width: int
    height: int
    channels: int
    bit_depth: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def sniff_codec(data) -> str:
    """The codec named by the first bytes of ``data``: "jpeg", "png", the name of a refused codec
    (TIFF, WebP, JPEG 2000, BMP, PPM/PGM, GIF, ...) or "unknown"."""
    head = bytes(memoryview(data)[:16])
    if head.startswith(_JPEG_SIGNATURE):
        return "jpeg"
    if head.startswith(_PNG_SIGNATURE):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[4:8] == b"ftyp":
        return "AVIF/HEIF"
    for signature, name in _REFUSED_SIGNATURES:
        if head.startswith(signature):
            return name
    if _NETPBM.match(head):
        return "PPM/PGM (Netpbm)"
    return "unknown"


def _jpeg_header(data) -> ImageHeader:
    """Size from the first SOF segment; walks the marker segments after SOI (no entropy data)."""
    size = len(data)
    position = 2
    while position + 4 <= size:
        if data[position] != 0xFF:
            raise ConversionError(f"no JPEG marker at byte {position} (corrupt header)")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # segments without a length
            position += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            break
        (length,) = struct.unpack_from(">H", data, position + 2)
        if length < 2:
            raise ConversionError(f"JPEG segment at byte {position} has length {length} (corrupt header)")
        if marker in _JPEG_SOF_MARKERS:
            if position + 10 > size:
                break
            precision, height, width, components = struct.unpack_from(">BHHB", data, position + 4)
            if height == 0:
                raise ConversionError("JPEG height is 0 (set later by a DNL marker; not supported)")
            if width == 0 or components == 0:
                raise ConversionError(f"JPEG frame header says {width}x{height}, {components} components")
            return ImageHeader("jpeg", width, height, components, precision)
        position += 2 + length
    raise ConversionError("no JPEG frame header (SOF) found: corrupt or truncated")


def _png_header(data) -> ImageHeader:
    if len(data) < 33:
        raise ConversionError(f"PNG of {len(data)} bytes is shorter than its header")
    length, kind, width, height, bit_depth, colour_type = struct.unpack_from(">I4sIIBB", data, 8)
    if kind != b"IHDR" or length != 13:
        raise ConversionError("PNG does not start with an IHDR chunk (corrupt header)")
    if width == 0 or height == 0 or colour_type not in _PNG_CHANNELS:
        raise ConversionError(f"PNG header says {width}x{height}, colour type {colour_type} (corrupt header)")
    # A PNG cut short loses its IEND chunk (normally its last 12 bytes); saying so here spares
    # libpng's raw stderr line. Data after IEND is rare: only then is the whole buffer searched.
    if b"IEND" not in bytes(memoryview(data)[-12:]) and b"IEND" not in bytes(data):
        raise ConversionError("PNG has no IEND chunk: truncated")
    return ImageHeader("png", width, height, _PNG_CHANNELS[colour_type], bit_depth)


def read_image_header(data) -> ImageHeader:
    """Codec, size, channels and bit depth of JPEG or PNG ``data`` (bytes or a uint8 buffer) from
    its header alone. Other codecs and corrupt headers raise :class:`ConversionError`."""
    codec = sniff_codec(data)
    if codec == "jpeg":
        return _jpeg_header(data)
    if codec == "png":
        return _png_header(data)
    if codec == "unknown":
        raise ConversionError("data is neither JPEG nor PNG (unknown signature)")
    raise ConversionError(f"data is a {codec} image; only JPEG and PNG are decoded")


def decode_image(data, what: str, max_pixels: int = DEFAULT_MAX_PIXELS,
                 expected_codec: str | None = None, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """JPEG or PNG bytes -> the array of ``cv2.imdecode(data, flags)`` (by default BGR(A) or grey,
    uint8 or uint16), after checking the header: ``expected_codec`` ("jpeg"/"png") must match the
    data's signature, and images above ``max_pixels`` are refused without decoding. ``what`` names
    the data in error messages (all :class:`ConversionError`)."""
    data = np.frombuffer(data, dtype=np.uint8)
    if data.size == 0:
        raise ConversionError(f"{what} has no data (0 bytes)")
    actual = sniff_codec(data)
    if expected_codec is not None and actual != expected_codec:
        if actual == "unknown":
            raise ConversionError(
                f"{what} could not be decoded: corrupt or not {expected_codec} (no {expected_codec} signature)")
        raise ConversionError(
            f"{what} says {expected_codec} but the data is {actual}; only JPEG and PNG are decoded and "
            f"the format must name the codec of the data")
    try:
        header = read_image_header(data)
    except ConversionError as error:
        raise ConversionError(f"{what} could not be decoded: {error}") from None
    if header.pixels > max_pixels:
        raise ImageTooLargeError(
            f"{what} is {header.width}x{header.height} = {header.pixels} pixels by its {header.codec} header, "
            f"above the limit of {max_pixels} pixels; refused without decoding")
    try:
        decoded = cv2.imdecode(data, flags)
    except cv2.error as error:  # e.g. above OpenCV's own size limits
        raise ConversionError(f"{what} could not be decoded: OpenCV: {str(error).strip()}") from None
    if decoded is None or decoded.size == 0:
        raise ConversionError(f"{what} could not be decoded: corrupt or not {header.codec}")
    return decoded


def parse_compressed_format(fmt: str) -> tuple[str, str]:
    """(codec, stored encoding) of a CompressedImage ``format``: a bare codec ("jpeg", "jpg", "png")
    or image_transport's "<encoding>; <codec> compressed <stored encoding>" (stored encoding "" when
    not given). Codecs other than jpeg and png raise :class:`ConversionError`."""
    text = fmt.strip().lower()
    if "compresseddepth" in text:
        raise ConversionError(
            f"compressed format {fmt!r} is compressedDepth (depth data), not a colour image")
    words = (text.split(";", 1)[1] if ";" in text else text).split()
    codec = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png"}.get(words[0] if words else "")
    if codec is None:
        raise ConversionError(
            f"unsupported compressed image format {fmt!r}; supported codecs: {', '.join(DECODED_CODECS)}")
    stored = words[2] if len(words) >= 3 and words[1] == "compressed" else ""
    return codec, stored


def compressed_to_rgb8(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A JPEG or PNG sensor_msgs/CompressedImage as uint8 (H, W, 3) RGB.

    ``format`` may be a bare codec ("jpeg", "png") or image_transport's
    "<encoding>; <codec> compressed <stored encoding>"; a stored encoding starting with "rgb"
    means the compressed channels are already in RGB order (OpenCV otherwise assumes BGR).
    The codec must match the data; images above ``max_pixels`` are refused before decoding.
    """
    codec, stored_encoding = parse_compressed_format(msg.format)
    size = np.frombuffer(msg.data, dtype=np.uint8).size
    what = (f"compressed image ({msg.format!r})" if size == 0
            else f"compressed image data ({size} bytes, format {msg.format!r})")
    decoded = decode_image(msg.data, what, max_pixels, expected_codec=codec)
    order = "rgb" if stored_encoding.startswith("rgb") else "bgr"
    if decoded.dtype not in (np.uint8, np.uint16):
        raise ConversionError(f"compressed image decoded to unsupported dtype {decoded.dtype}")
    if decoded.ndim == 3 and decoded.shape[2] == 1:
        decoded = decoded[:, :, 0]
    if decoded.ndim == 3 and decoded.shape[2] not in (3, 4):
        raise ConversionError(f"compressed image decoded to {decoded.shape[2]} channels")
    return _pixels_to_rgb8(decoded, order)


# ----------------------------------------------------------------------------------------------
# Depth
# ----------------------------------------------------------------------------------------------

DEPTH_ENCODINGS = ("32FC1", "16UC1", "mono16")


def depth_image_to_metres(data, encoding: str) -> np.ndarray:
    """A depth image as float32 metres, NaN where invalid.

    ``32FC1``: metres, 0 / NaN / inf / negative are invalid. ``16UC1`` (or ``mono16``): millimetres,
    0 is invalid (REP 118).
    """
    array = np.asarray(data.detach().cpu() if hasattr(data, "detach") else data)
    if array.ndim != 2:
        raise ValueError(f"depth image must be 2-D, got shape {array.shape}")
    if encoding == "32FC1":
        depth = array.astype(np.float32, copy=True)
        with np.errstate(invalid="ignore"):
            depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
        return depth
    if encoding in ("16UC1", "mono16"):
        if array.dtype != np.uint16:
            raise ValueError(f"{encoding} depth must be uint16 millimetres, got {array.dtype}")
        depth = array.astype(np.float32) / 1000.0
        depth[array == 0] = np.nan
        return depth
    raise ValueError(f"unsupported depth encoding {encoding!r}; expected one of {DEPTH_ENCODINGS}")


def depth_image_msg_to_metres(msg) -> np.ndarray:
    """A depth sensor_msgs/Image (32FC1 metres, 16UC1/mono16 millimetres) as float32 metres,
    NaN where invalid (see :func:`depth_image_to_metres`)."""
    encoding = canonical_encoding(msg.encoding)
    if encoding not in DEPTH_ENCODINGS:
        raise ConversionError(
            f"unsupported depth encoding {msg.encoding!r}; expected one of {DEPTH_ENCODINGS}")
    return depth_image_to_metres(image_to_numpy(msg), encoding)


_COMPRESSED_DEPTH_HEADER_BYTES = 12  # compressed_depth_image_transport: int32 format + float32 a, b


def _decode_depth_png(data, what: str, max_pixels: int) -> np.ndarray | None:
    """A single-channel 16-bit PNG as uint16 (H, W); None when the data is another kind of image."""
    try:
        header = read_image_header(np.frombuffer(data, dtype=np.uint8))
    except ConversionError:
        return None
    if header.codec != "png" or header.channels != 1 or header.bit_depth != 16:
        return None
    image = decode_image(data, what, max_pixels, expected_codec="png")
    return image if image.ndim == 2 and image.dtype == np.uint16 else None


def compressed_depth_to_metres(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A depth sensor_msgs/CompressedImage as float32 metres, NaN where invalid.

    compressed_depth_image_transport payloads ("16UC1; compressedDepth png": millimetres;
    "32FC1; compressedDepth png": inverse depth quantised as a / (v - b), v = 0 invalid), or a
    plain single-channel 16-bit PNG of millimetres. PNGs above ``max_pixels`` are refused before
    decoding.
    """
    fmt = msg.format.lower()
    data = np.frombuffer(msg.data, dtype=np.uint8)
    what = f"compressed depth ({data.size} bytes, format {msg.format!r})"
    if "compresseddepth" not in fmt:
        image = _decode_depth_png(data, what, max_pixels) if data.size else None
        if image is None:
            raise ConversionError(
                f"compressed depth ({msg.format!r}) is neither compressedDepth nor a single-channel "
                f"16-bit PNG of millimetres")
        return depth_image_to_metres(image, "16UC1")
    if data.size <= _COMPRESSED_DEPTH_HEADER_BYTES:
        raise ConversionError(f"compressedDepth image ({msg.format!r}) has only {data.size} bytes")
    image = _decode_depth_png(data[_COMPRESSED_DEPTH_HEADER_BYTES:], what, max_pixels)
    if image is None:
        raise ConversionError(f"cannot decode compressedDepth PNG payload ({msg.format!r})")
    if "32fc1" in fmt:
        a, b = struct.unpack_from("<ff", data, 4)
        with np.errstate(divide="ignore"):
            depth = np.where(image > 0, a / (image.astype(np.float32) - b), np.nan).astype(np.float32)
        return depth_image_to_metres(depth, "32FC1")
    return depth_image_to_metres(image, "16UC1")


# ----------------------------------------------------------------------------------------------
# CameraInfo
# ----------------------------------------------------------------------------------------------

def _field(msg, lower: str):
    """A CameraInfo matrix field: ROS 2 spells it lower case (k), ROS 1 upper case (K)."""
    return getattr(msg, lower) if hasattr(msg, lower) else getattr(msg, lower.upper())


def camera_info_to_model(msg, rectified: bool = False):
    """A ``ppd_ros.geometry.camera.CameraModel`` from a sensor_msgs/CameraInfo (ROS 1 or ROS 2).

    ``rectified`` says the images are already rectified (use P, no distortion).
    Invalid calibration (zero size, zero focal length, unknown distortion model, non-finite
    values) raises ConversionError.
    """
    from ppd_ros.geometry.camera import CameraModel  # torch: only when a camera is needed

    roi = msg.roi
    try:
        model = CameraModel.from_camera_info_fields(
            int(msg.width), int(msg.height),
            np.asarray(_field(msg, "k"), dtype=np.float64).reshape(3, 3),
            np.asarray(_field(msg, "d"), dtype=np.float64),
            np.asarray(_field(msg, "r"), dtype=np.float64).reshape(3, 3),
            np.asarray(_field(msg, "p"), dtype=np.float64).reshape(3, 4),
            msg.distortion_model,
            binning_x=int(msg.binning_x), binning_y=int(msg.binning_y),
            roi=(int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)),
            rectified=rectified)
        model.validate()
    except ValueError as exc:
        raise ConversionError(f"invalid CameraInfo (frame {msg.header.frame_id!r}): {exc}") from exc
    return model


# ----------------------------------------------------------------------------------------------
# PointCloud2 and Header
# ----------------------------------------------------------------------------------------------

# sensor_msgs/PointField datatype constants -> element dtype
POINTFIELD_DTYPES = {
    1: np.dtype("i1"), 2: np.dtype("u1"), 3: np.dtype("i2"), 4: np.dtype("u2"),
    5: np.dtype("i4"), 6: np.dtype("u4"), 7: np.dtype("f4"), 8: np.dtype("f8"),
}


def pointcloud2_dtype(msg) -> np.dtype:
    """The structured dtype (native byte order, itemsize point_step) of a PointCloud2's points."""
    names, formats, offsets = [], [], []
    for field in msg.fields:
        base = POINTFIELD_DTYPES.get(field.datatype)
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


def pointcloud2_to_structured(msg) -> np.ndarray:
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
    rows = _rows(msg.data, height, row_step, width * point_step, "point cloud", "row_step")
    stored = native.newbyteorder(">" if msg.is_bigendian else "<")
    return rows.view(stored).reshape(height, width).astype(native, copy=False)


def pointcloud2_xyz(msg) -> np.ndarray:
    """(N, 3) float64 x, y, z of every point of a PointCloud2 (NaN points kept), N = height x width."""
    points = pointcloud2_to_structured(msg)
    fields = points.dtype.names
    if not {"x", "y", "z"} <= set(fields):
        raise ConversionError(f"point cloud has no x/y/z fields (fields: {sorted(fields)})")
    for name in "xyz":
        if points.dtype[name].shape:
            raise ConversionError(f"point field {name!r} has count {points.dtype[name].shape[0]}; needs 1")
    return np.stack([points[name].reshape(-1).astype(np.float64) for name in "xyz"], axis=1)


def stamp_ns(msg) -> int:
    """The header stamp of a message in nanoseconds."""
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
