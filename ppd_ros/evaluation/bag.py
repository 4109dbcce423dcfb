"""Reading recorded bags without ROS: rosbag2 (mcap, sqlite3) and ROS 1 bags via `rosbags`.

:func:`read_messages` yields deserialised messages of chosen topics in log-time order and records
in a :class:`ReadLog` what could not be read. A bag that `rosbags` cannot open (a recording cut
short: no MCAP summary, a sqlite file shorter than its header says) is scanned record by record
up to the damage. :class:`StampPairer` pairs each image with the ground truth of the nearest header
stamp. The messages are decoded into numpy by :mod:`ppd_ros.msg_decode`.
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

from ppd_ros.pipeline.pairing import nearest_within

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
    notes: list[str] = field(default_factory=list)  # how the bag was read, when not the usual way

    def skip(self, reason: str) -> None:
        self.skipped.append(reason)

    def summary(self) -> str:
        parts = [f"{self.messages_read} messages read ({self.storage}, {self.reader})"]
        if self.expected_messages is not None:
            parts.append(f"{self.expected_messages} expected")
        parts += self.notes
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


def _reader_sources(path: Path) -> tuple[list[Path], str | None]:
    """What to hand to rosbags' AnyReader: the bag itself, or, for a rosbag2 folder without
    metadata.yaml (a recording killed before it was written, a copied folder), its storage files
    one by one (each MCAP / sqlite3 file carries its own topic table); plus a note saying so."""
    files = storage_files(path)
    if not path.is_dir() or (path / "metadata.yaml").is_file():
        return [path], None
    names = ", ".join(file.name for file, _ in files)
    return [file for file, _ in files], f"{path} has no metadata.yaml: read its storage files directly ({names})"


def list_topics(path: str | Path) -> dict[str, str]:
    """topic -> message type of a bag (empty when the bag cannot be opened).

    Raises FileNotFoundError naming ``path`` when there is no such file or folder.
    """
    from rosbags.highlevel import AnyReader

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such bag: {path}")
    try:
        sources, _ = _reader_sources(path)
        with AnyReader(sources, default_typestore=typestore()) as reader:
            return {c.topic: c.msgtype for c in reader.connections}
    except Exception:  # noqa: BLE001 - a damaged bag simply lists nothing here
        return {}


# Message types ppd eval-bag accepts per topic role (rosbags spells them pkg/msg/Type).
EXPECTED_TOPIC_TYPES = {
    "image": ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"),
    "camera_info": ("sensor_msgs/msg/CameraInfo",),
    "gt_depth": ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"),
    "gt_points": ("sensor_msgs/msg/PointCloud2",),
    "metric_reference_depth_image": ("sensor_msgs/msg/Image",),
    "metric_reference_pointcloud": ("sensor_msgs/msg/PointCloud2",),
}


class TopicTypeError(ValueError):
    """A topic that is missing from the bag or has a message type its role cannot use."""


def check_topic_type(topics: dict[str, str], topic: str, role: str) -> None:
    """Raise :class:`TopicTypeError` (one line) when ``topic`` is missing from ``topics`` (from
    :func:`list_topics`) or its type is not one of ``EXPECTED_TOPIC_TYPES[role]``. An empty
    ``topics`` (a bag too damaged to list) passes: the read itself reports what it finds."""
    if not topics:
        return
    expected = EXPECTED_TOPIC_TYPES[role]
    if topic not in topics:
        listed = ", ".join(f"{name} ({kind})" for name, kind in sorted(topics.items()))
        raise TopicTypeError(f"{role} topic {topic!r} is not in the bag; its topics: {listed}")
    actual = topics[topic].replace("/msg/", "/")
    if actual not in {kind.replace("/msg/", "/") for kind in expected}:
        raise TopicTypeError(f"{role} topic {topic!r} has type {topics[topic]}, expected {' or '.join(expected)}")


def read_messages(path: str | Path, topics: set[str], log: ReadLog) -> Iterator[BagMessage]:
    """Messages of ``topics`` in log-time order; stops at damage and records it in ``log``."""
    from rosbags.highlevel import AnyReader

    path = Path(path)
    files = storage_files(path)
    log.storage = "+".join(sorted({kind for _, kind in files}))
    store = typestore()
    sources, note = _reader_sources(path)
    if note:
        log.notes.append(note)
    try:
        reader = AnyReader(sources, default_typestore=store)
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


# ------------------------------------------------------------------------------- pairing
class StampPairer:
    """Pairs each image with the reference (GT) whose header stamp is nearest, within a tolerance
    (the node's pairing rule, :func:`~ppd_ros.pipeline.pairing.nearest_within`).

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
        best = nearest_within(self._references, stamp, self.tolerance_ns)
        return None if best is None else best[1]

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
