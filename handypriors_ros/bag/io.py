"""Reading and writing rosbag2 bags with clear errors.

- :class:`BagReader` reads MCAP or sqlite3 bags (a bag directory with metadata.yaml, or a
  single .mcap / .db3 file) in log-time order; a truncated bag yields what it holds and then
  raises or warns (the caller chooses), so nothing readable is lost.
- :class:`BagWriter` writes an MCAP bag atomically: into ``<parent>/.<name>.partial/<name>``
  and moved into place on :meth:`BagWriter.close`, so a crashed job never leaves a half bag
  under the final name.
"""
from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,
                                QosTime)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.errors import ReaderError, WriterError

from handypriors_ros.bag.typestore import make_typestore
from handypriors_ros.core.errors import HandyPriorsError


class BagError(HandyPriorsError):
    """A bag cannot be opened, is truncated or inconsistent, or cannot be written."""


@dataclass(frozen=True)
class BagMessage:
    """One message of a bag.

    Attributes:
        topic: topic name.
        msgtype: ROS type name, e.g. ``sensor_msgs/msg/Image``.
        log_time_ns: time the message was recorded (ns).
        rawdata: CDR-serialised message (what rclpy's deserialize_message takes).
    """
    topic: str
    msgtype: str
    log_time_ns: int
    rawdata: bytes = field(repr=False)

    def deserialize(self) -> Any:
        """The message as a ``rosbags`` dataclass (attribute names as in ROS)."""
        return make_typestore().deserialize_cdr(self.rawdata, self.msgtype)


def _open_reader(path: Path) -> Reader:
    if not path.exists():
        raise BagError(f'bag not found: {path}')
    try:
        reader = Reader(path)
        reader.open()
    except (ReaderError, OSError, ValueError, KeyError) as exc:
        raise BagError(f'cannot open bag {path}: {exc}') from exc
    return reader


class BagReader:
    """Read a rosbag2 bag (MCAP or sqlite3). Use as a context manager.

    Args:
        path: bag directory (with metadata.yaml) or a single ``.mcap`` / ``.db3`` file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._reader = _open_reader(self.path)

    def __enter__(self) -> 'BagReader':
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()

    @property
    def topics(self) -> dict[str, tuple[str, int]]:
        """``{topic: (msgtype, message_count)}``."""
        return {name: (info.msgtype, info.msgcount) for name, info in self._reader.topics.items()}

    def messages(self, topics: Iterable[str] | None = None, *,
                 on_truncated: str = 'raise') -> Iterator[BagMessage]:
        """Messages of ``topics`` (all when None) in log-time order.

        Args:
            topics: topic names to read; unknown names are ignored.
            on_truncated: ``'raise'`` (BagError after the last readable message) or ``'warn'``
                (a warning, then the iteration ends normally).
        """
        if on_truncated not in ('raise', 'warn'):
            raise ValueError(f"on_truncated must be 'raise' or 'warn', got {on_truncated!r}")
        wanted = None if topics is None else set(topics)
        connections = [c for c in self._reader.connections if wanted is None or c.topic in wanted]
        if not connections:
            return
        count = 0
        try:
            for connection, log_time, rawdata in self._reader.messages(connections=connections):
                count += 1
                yield BagMessage(connection.topic, connection.msgtype, log_time, bytes(rawdata))
        except (ReaderError, EOFError, OSError, ValueError, KeyError) as exc:
            reason = f'bag {self.path} is truncated or corrupt after {count} messages: {exc}'
            if on_truncated == 'raise':
                raise BagError(reason) from exc
            warnings.warn(reason, stacklevel=2)


_NEVER = QosTime(sec=9223372036, nsec=854775807)  # rosbag2's "infinite" duration

# Topics whose publishers latch (TRANSIENT_LOCAL), as tf2's static broadcaster does: the bag
# records that, so `ros2 bag play` republishes them latched and late subscribers (tf2's static
# listener is transient-local) still get them.
LATCHED_TOPICS = ('/tf_static',)


def _offered_qos(topic: str) -> tuple[Qos, ...]:
    if topic not in LATCHED_TOPICS:
        return ()
    return (Qos(history=QosHistory.KEEP_LAST, depth=1, reliability=QosReliability.RELIABLE,
                durability=QosDurability.TRANSIENT_LOCAL, deadline=_NEVER, lifespan=_NEVER,
                liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=_NEVER,
                avoid_ros_namespace_conventions=False),)


class BagWriter:
    """Write an MCAP bag atomically. Use as a context manager.

    Args:
        path: the bag directory to create.
        overwrite: replace an existing bag at ``path`` (else BagError).
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise BagError(f'output bag already exists: {self.path} (choose another path or '
                           'allow overwriting)')
        # rosbags names the storage file after the bag directory: keep the final name inside
        # a hidden staging directory.
        self._staging = self.path.parent / f'.{self.path.name}.partial'
        if self._staging.exists():
            shutil.rmtree(self._staging)
        self._staging.mkdir(parents=True)
        self._partial = self._staging / self.path.name
        self._writer = Writer(self._partial, version=9, storage_plugin=StoragePlugin.MCAP)
        try:
            self._writer.open()
        except (WriterError, OSError) as exc:
            raise BagError(f'cannot create bag {self.path}: {exc}') from exc
        self._store = make_typestore()
        self._connections: dict[str, Any] = {}
        self._closed = False

    def __enter__(self) -> 'BagWriter':
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(commit=exc_type is None)

    def _connection(self, topic: str, msgtype: str) -> Any:
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=self._store,
                                               offered_qos_profiles=_offered_qos(topic))
            self._connections[topic] = conn
        elif conn.msgtype != msgtype:
            raise BagError(f'topic {topic} already carries {conn.msgtype}, not {msgtype}')
        return conn

    def write(self, topic: str, log_time_ns: int, msg: Any) -> None:
        """Serialise a ``rosbags`` message dataclass and write it."""
        msgtype = msg.__msgtype__
        self.write_raw(topic, msgtype, log_time_ns, self._store.serialize_cdr(msg, msgtype))

    def write_raw(self, topic: str, msgtype: str, log_time_ns: int, rawdata: bytes) -> None:
        """Write an already CDR-serialised message (e.g. from rclpy's serialize_message)."""
        self._writer.write(self._connection(topic, msgtype), int(log_time_ns), rawdata)

    def close(self, *, commit: bool = True) -> None:
        """Finish the bag; with ``commit`` move it into place, else delete the partial bag."""
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        if commit:
            if self.path.exists():
                shutil.rmtree(self.path)
            self._partial.rename(self.path)
        shutil.rmtree(self._staging, ignore_errors=True)

    @property
    def store(self):
        """The typestore (use ``store.types['pkg/msg/Name']`` to build messages)."""
        return self._store
