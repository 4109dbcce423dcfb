"""Reading recorded bags without ROS: rosbag2 (mcap, sqlite3) and ROS 1 bags via `rosbags`.

:func:`read_messages` yields deserialised messages of chosen topics in log-time order and records
in a :class:`ReadLog` what could not be read. A bag that `rosbags` cannot open (a recording cut
short: no MCAP summary, a sqlite file shorter than its header says) is scanned record by record
up to the damage. Decoders turn the `rosbags` message objects of sensor_msgs Image,
CompressedImage, CameraInfo and PointCloud2 into numpy arrays; :class:`StampPairer` pairs each
image with the ground truth of the nearest header stamp.
"""
from __future__ import annotations

import shutil
import sqlite3
import struct
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from ppd_ros.metric.sparse import depth_image_to_metres

STORAGE_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3", ".bag": "ros1"}
MCAP_MAGIC = b"\x89MCAP0\r\n"


def typestore():
    """The Jazzy message typestore (sensor_msgs, std_msgs, ...) shared by readers and writers."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


@dataclass
class BagMessage:
    topic: str
    msgtype: str
    log_time_ns: int
    msg: Any


@dataclass
class ReadLog:
    """What happened while reading: counts, the damage that stopped the read, skipped messages."""

    path: str
    storage: str = "unknown"
    reader: str = "rosbags"  # or "recovery scan"
    expected_messages: int | None = None  # of the chosen topics, from the bag's index / metadata
    messages_read: int = 0
    damage: str | None = None
    skipped: list[str] = field(default_factory=list)

    def skip(self, reason: str) -> None:
        self.skipped.append(reason)

    def summary(self) -> str:
        parts = [f"{self.messages_read} messages read ({self.storage}, {self.reader})"]
        if self.expected_messages is not None:
            parts.append(f"{self.expected_messages} expected")
        if self.damage:
            parts.append(f"damage: {self.damage}")
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped")
        return "; ".join(parts)


def storage_files(path: Path) -> list[tuple[Path, str]]:
    """(file, storage) of each storage file of a bag folder or a single bag file, in order."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES)
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"no such bag: {path}")
    found = [(p, STORAGE_SUFFIXES[p.suffix]) for p in files if p.suffix in STORAGE_SUFFIXES]
    if not found:
        raise ValueError(f"{path} holds no .mcap, .db3 or .bag file")
    return found


def list_topics(path: str | Path) -> dict[str, str]:
    """topic -> message type of a bag (empty when the bag cannot be opened)."""
    from rosbags.highlevel import AnyReader

    try:
        with AnyReader([Path(path)], default_typestore=typestore()) as reader:
            return {c.topic: c.msgtype for c in reader.connections}
    except Exception:  # noqa: BLE001 - a damaged bag simply lists nothing here
        return {}


def read_messages(path: str | Path, topics: set[str], log: ReadLog) -> Iterator[BagMessage]:
    """Messages of ``topics`` in log-time order; stops at damage and records it in ``log``."""
    from rosbags.highlevel import AnyReader

    path = Path(path)
    files = storage_files(path)
    log.storage = "+".join(sorted({kind for _, kind in files}))
    store = typestore()
    reader = AnyReader([path], default_typestore=store)
    try:
        reader.open()
    except Exception as error:  # noqa: BLE001 - rosbags raises several error types for damage
        log.reader = "recovery scan"
        log.damage = f"rosbags could not open the bag ({error})"
        for file, kind in files:
            scan = {"mcap": _scan_mcap, "sqlite3": _scan_sqlite}.get(kind)
            if scan is None:
                log.damage += f"; no recovery for {kind} file {file.name}: nothing read from it"
                continue
            for message in scan(file, topics, store, log):
                log.messages_read += 1
                yield message
        return
    try:
        connections = [c for c in reader.connections if c.topic in topics]
        log.expected_messages = sum(c.msgcount for c in connections)
        if not connections:
            return
        iterator = reader.messages(connections=connections)
        while True:
            try:
                connection, log_time, raw = next(iterator)
            except StopIteration:
                break
            except Exception as error:  # noqa: BLE001
                log.damage = f"read stopped after {log.messages_read} messages: {error}"
                break
            try:
                msg = reader.deserialize(raw, connection.msgtype)
            except Exception as error:  # noqa: BLE001
                log.skip(f"{connection.topic} @ {log_time}: cannot deserialise ({error})")
                continue
            log.messages_read += 1
            yield BagMessage(connection.topic, connection.msgtype, int(log_time), msg)
    finally:
        reader.close()


# ------------------------------------------------------------------------------- recovery scans
def _deserialize(store, raw: bytes, msgtype: str, topic: str, log_time: int, log: ReadLog):
    if msgtype not in store.types:
        log.skip(f"{topic} @ {log_time}: unknown type {msgtype}")
        return None
    try:
        return store.deserialize_cdr(raw, msgtype)
    except Exception as error:  # noqa: BLE001
        log.skip(f"{topic} @ {log_time}: cannot deserialise ({error})")
        return None


def _mcap_string(buffer: bytes, offset: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<I", buffer, offset)
    end = offset + 4 + length
    if end > len(buffer):
        raise struct.error("string runs past the record")
    return buffer[offset + 4:end].decode(), end


def _scan_mcap(file: Path, topics: set[str], store, log: ReadLog) -> Iterator[BagMessage]:
    """Walk MCAP records from the start (chunks included, uncompressed ones only) until the
    file ends or a record is cut; messages are yielded in file order."""
    data = file.read_bytes()
    if not data.startswith(MCAP_MAGIC):
        log.damage += f"; {file.name} is not an MCAP file"
        return
    channels: dict[int, tuple[str, str]] = {}  # channel id -> (topic, message type)
    schemas: dict[int, str] = {}

    def walk(buffer: bytes, start: int, where: str) -> Iterator[BagMessage]:
        position = start
        while position + 9 <= len(buffer):
            opcode = buffer[position]
            (length,) = struct.unpack_from("<Q", buffer, position + 1)
            body_start = position + 9
            body_end = body_start + length
            body = buffer[body_start:min(body_end, len(buffer))]
            cut = body_end > len(buffer)
            if opcode == 0x03 and not cut:  # schema
                (schema_id,) = struct.unpack_from("<H", body, 0)
                schemas[schema_id], _ = _mcap_string(body, 2)
            elif opcode == 0x04 and not cut:  # channel
                channel_id, schema_id = struct.unpack_from("<HH", body, 0)
                topic, _ = _mcap_string(body, 4)
                channels[channel_id] = (topic, schemas.get(schema_id, ""))
            elif opcode == 0x05 and not cut:  # message
                channel_id, _sequence, log_time, _publish = struct.unpack_from("<HIQQ", body, 0)
                topic, msgtype = channels.get(channel_id, ("", ""))
                if topic in topics:
                    msg = _deserialize(store, bytes(body[22:]), msgtype, topic, log_time, log)
                    if msg is not None:
                        yield BagMessage(topic, msgtype, int(log_time), msg)
            elif opcode == 0x06:  # chunk: walk its records, even a cut one
                try:
                    compression, offset = _mcap_string(body, 28)
                except struct.error:
                    break
                if compression:
                    log.skip(f"{where}: chunk compressed with {compression}, not recoverable")
                elif offset + 8 <= len(body):
                    yield from walk(body[offset + 8:], 0, where + " chunk")
            if cut:
                log.damage += f"; {where} cut inside a record at byte {position}"
                return
            position = body_end

    try:
        yield from walk(data, len(MCAP_MAGIC), file.name)
    except struct.error as error:
        log.damage += f"; {file.name}: unreadable record ({error})"


def _open_truncated_sqlite(file: Path, directory: Path) -> sqlite3.Connection:
    """A read-only connection to a copy of ``file`` whose header page count is made to match the
    pages actually present, so SQLite reads what is there and fails only past the damage."""
    copy = directory / file.name
    shutil.copyfile(file, copy)
    with open(copy, "r+b") as handle:
        header = handle.read(100)
        if len(header) < 100:
            raise sqlite3.DatabaseError("file shorter than the SQLite header")
        (page_size,) = struct.unpack(">H", header[16:18])
        page_size = 65536 if page_size == 1 else page_size
        pages = copy.stat().st_size // page_size
        handle.truncate(pages * page_size)
        handle.seek(28)
        handle.write(struct.pack(">I", pages))
    return sqlite3.connect(f"file:{copy}?mode=ro", uri=True)


def _scan_sqlite(file: Path, topics: set[str], store, log: ReadLog) -> Iterator[BagMessage]:
    """Rows of the messages table in storage order until SQLite meets a missing/corrupt page."""
    with tempfile.TemporaryDirectory(prefix="ppd_bag_") as directory:
        try:
            connection = _open_truncated_sqlite(file, Path(directory))
            rows = connection.execute("SELECT id, name, type FROM topics").fetchall()
        except sqlite3.DatabaseError as error:
            log.damage += f"; {file.name}: topic table unreadable ({error}), nothing recovered"
            return
        wanted = {topic_id: (name, msgtype) for topic_id, name, msgtype in rows if name in topics}
        try:
            for topic_id, log_time, raw in connection.execute("SELECT topic_id, timestamp, data FROM messages"):
                if topic_id in wanted:
                    topic, msgtype = wanted[topic_id]
                    msg = _deserialize(store, bytes(raw), msgtype, topic, log_time, log)
                    if msg is not None:
                        yield BagMessage(topic, msgtype, int(log_time), msg)
        except sqlite3.DatabaseError as error:
            log.damage += f"; {file.name}: rows stop at a damaged page ({error})"
        finally:
            connection.close()


# ------------------------------------------------------------------------------- decoders
def _get(msg, *names):
    """First present attribute of ``names`` (ROS 2 lower-case vs ROS 1 upper-case fields)."""
    for name in names:
        if hasattr(msg, name):
            return getattr(msg, name)
    raise AttributeError(f"{type(msg).__name__} has none of {names}")


def stamp_ns(msg) -> int:
    """Header stamp in nanoseconds."""
    stamp = msg.header.stamp
    return int(_get(stamp, "sec", "secs")) * 1_000_000_000 + int(_get(stamp, "nanosec", "nsecs"))


def _pixels(msg, dtype: np.dtype, channels: int) -> np.ndarray:
    """(H, W[, C]) view of an Image's data honouring step and endianness."""
    dtype = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = msg.width * channels * dtype.itemsize
    if msg.step < row_bytes:
        raise ValueError(f"step {msg.step} is smaller than width x pixel size {row_bytes}")
    data = np.asarray(msg.data, dtype=np.uint8)
    if data.size < msg.step * msg.height:
        raise ValueError(f"image data has {data.size} bytes, {msg.step * msg.height} expected")
    rows = data[: msg.step * msg.height].reshape(msg.height, msg.step)[:, :row_bytes]
    array = np.ascontiguousarray(rows).view(dtype).astype(dtype.newbyteorder("="))
    return array.reshape(msg.height, msg.width, channels) if channels > 1 else array.reshape(msg.height, msg.width)


_BAYER = {"bayer_rggb8": cv2.COLOR_BayerBG2RGB, "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
          "bayer_gbrg8": cv2.COLOR_BayerGR2RGB, "bayer_grbg8": cv2.COLOR_BayerGB2RGB}


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB (rgb8, bgr8, rgba8, bgra8, mono8, mono16, bayer)."""
    encoding = msg.encoding.lower()
    if encoding in ("rgb8", "bgr8", "8uc3"):
        rgb = _pixels(msg, np.uint8, 3)
        return rgb[..., ::-1].copy() if encoding != "rgb8" else rgb
    if encoding in ("rgba8", "bgra8", "8uc4"):
        rgba = _pixels(msg, np.uint8, 4)[..., :3]
        return np.ascontiguousarray(rgba[..., ::-1] if encoding != "rgba8" else rgba)
    if encoding in ("mono8", "8uc1"):
        return np.repeat(_pixels(msg, np.uint8, 1)[..., None], 3, axis=2)
    if encoding in ("mono16", "16uc1"):
        gray = (_pixels(msg, np.uint16, 1) >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if encoding in _BAYER:
        return cv2.cvtColor(_pixels(msg, np.uint8, 1), _BAYER[encoding])
    raise ValueError(f"unsupported image encoding {msg.encoding!r}")


def compressed_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> (H, W, 3) uint8 RGB."""
    bgr = cv2.imdecode(np.asarray(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot decode compressed image (format {msg.format!r})")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def depth_image_msg_to_metres(msg) -> np.ndarray:
    """Depth Image (32FC1 metres, 16UC1/mono16 millimetres) -> float32 metres, NaN invalid."""
    encoding = msg.encoding.upper() if msg.encoding.lower() != "mono16" else "mono16"
    if encoding == "32FC1":
        return depth_image_to_metres(_pixels(msg, np.float32, 1), "32FC1")
    if encoding in ("16UC1", "mono16"):
        return depth_image_to_metres(_pixels(msg, np.uint16, 1), encoding)
    raise ValueError(f"unsupported depth encoding {msg.encoding!r}")


def compressed_depth_to_metres(msg) -> np.ndarray:
    """compressed_depth_image_transport payload ("16UC1; compressedDepth png" or 32FC1 with
    quantised inverse depth) -> float32 metres, NaN invalid."""
    data = np.asarray(msg.data, dtype=np.uint8)
    if "compresseddepth" not in msg.format.lower() or data.size <= 12:
        raise ValueError(f"unsupported compressed depth format {msg.format!r}")
    image = cv2.imdecode(data[12:], cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError("cannot decode compressedDepth PNG payload")
    if "32fc1" in msg.format.lower():
        a, b = struct.unpack_from("<ff", data.tobytes(), 4)
        with np.errstate(divide="ignore"):
            depth = np.where(image > 0, a / (image.astype(np.float32) - b), np.nan).astype(np.float32)
        return depth_image_to_metres(depth, "32FC1")
    return depth_image_to_metres(image.astype(np.uint16), "16UC1")


def camera_from_info(msg, rectified: bool = False):
    """sensor_msgs/CameraInfo -> :class:`ppd_ros.geometry.camera.CameraModel`."""
    from ppd_ros.geometry.camera import CameraModel

    roi = msg.roi
    return CameraModel.from_camera_info_fields(
        msg.width, msg.height, _get(msg, "k", "K"), _get(msg, "d", "D"), _get(msg, "r", "R"),
        _get(msg, "p", "P"), msg.distortion_model, msg.binning_x, msg.binning_y,
        (roi.x_offset, roi.y_offset, roi.width, roi.height), rectified,
    )


_POINT_TYPES = {1: np.int8, 2: np.uint8, 3: np.int16, 4: np.uint16, 5: np.int32, 6: np.uint32,
                7: np.float32, 8: np.float64}


def cloud_to_xyz(msg) -> np.ndarray:
    """sensor_msgs/PointCloud2 -> (N, 3) float64 x, y, z of every point (NaN kept)."""
    fields = {f.name: f for f in msg.fields}
    if not {"x", "y", "z"} <= set(fields):
        raise ValueError(f"point cloud has no x/y/z fields (fields: {sorted(fields)})")
    order = ">" if msg.is_bigendian else "<"
    dtype = np.dtype({
        "names": ["x", "y", "z"],
        "formats": [np.dtype(_POINT_TYPES[fields[n].datatype]).newbyteorder(order) for n in "xyz"],
        "offsets": [fields[n].offset for n in "xyz"],
        "itemsize": msg.point_step,
    })
    data = np.asarray(msg.data, dtype=np.uint8)
    rows = data[: msg.row_step * msg.height].reshape(msg.height, msg.row_step)[:, : msg.width * msg.point_step]
    points = np.ascontiguousarray(rows).view(dtype).reshape(-1)
    return np.stack([points[n].astype(np.float64) for n in "xyz"], axis=1)


# ------------------------------------------------------------------------------- pairing
class StampPairer:
    """Pairs each image with the reference (GT) whose header stamp is nearest, within a tolerance.

    Streaming: images wait until a reference beyond ``stamp + tolerance`` arrives (or
    :meth:`finish`), so references may come before or after their image in the bag. References
    older than every waiting image minus the tolerance are dropped. Without any reference topic
    (``expect_references=False``) images pass straight through with ``None``.
    """

    def __init__(self, tolerance_ns: int, expect_references: bool = True):
        self.tolerance_ns = int(tolerance_ns)
        self.expect_references = expect_references
        self._images: deque[tuple[int, Any]] = deque()
        self._references: deque[tuple[int, Any]] = deque()
        self._newest_reference: int | None = None
        self._last_image: int | None = None

    def add_image(self, stamp: int, item) -> list[tuple[Any, Any]]:
        self._images.append((stamp, item))
        self._last_image = stamp
        return self._ready(final=not self.expect_references)

    def add_reference(self, stamp: int, item) -> list[tuple[Any, Any]]:
        self._references.append((stamp, item))
        self._newest_reference = stamp if self._newest_reference is None else max(self._newest_reference, stamp)
        return self._ready(final=False)

    def finish(self) -> list[tuple[Any, Any]]:
        return self._ready(final=True)

    def _nearest(self, stamp: int):
        best, best_gap = None, None
        for ref_stamp, ref in self._references:
            gap = abs(ref_stamp - stamp)
            if gap <= self.tolerance_ns and (best_gap is None or gap < best_gap):
                best, best_gap = ref, gap
        return best

    def _ready(self, final: bool) -> list[tuple[Any, Any]]:
        out = []
        while self._images:
            stamp, item = self._images[0]
            settled = final or (self._newest_reference is not None
                                and self._newest_reference > stamp + self.tolerance_ns)
            if not settled:
                break
            self._images.popleft()
            out.append((item, self._nearest(stamp)))
        # references before the oldest image still to pair (or the last image) can no longer match
        anchor = self._images[0][0] if self._images else self._last_image
        if anchor is not None:
            while self._references and self._references[0][0] < anchor - self.tolerance_ns:
                self._references.popleft()
        return out
