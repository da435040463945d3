"""Reading and writing rosbag2 bags with clear errors, losing nothing readable.

- :class:`BagReader` reads MCAP or sqlite3 bags (a bag directory with metadata.yaml, a
  directory a killed recorder left without one, or a single .mcap / .db3 file) in log-time
  order. A truncated bag (a recorder killed mid-write, a copy cut short) is read up to the
  damage: every complete message before it, with a :class:`TruncationReport` saying what was
  lost (bytes, messages, from which log time on). ``on_truncated`` chooses between reading it
  with a warning (default), reading it quietly (the caller reports) and refusing it.
- :class:`BagWriter` writes an MCAP bag atomically: into a hidden temporary folder next to the
  final path, moved into place on :meth:`BagWriter.close`, so a crashed job never leaves a
  half bag under the final name. It marks every bag it writes, and ``overwrite`` replaces only
  such a bag (:mod:`handypriors_ros.bag.output`). Its metadata.yaml is version 8 by default,
  which Humble, Jazzy and Kilted all read (:data:`METADATA_VERSIONS`).
"""
from __future__ import annotations

import heapq
import os
import re
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,
                                QosTime)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.errors import ReaderError, WriterError
from ruamel.yaml import YAML, YAMLError

from handypriors_ros.bag.mcap_scan import (McapDamageError, McapScan, describe_bytes,
                                           merge_messages, scan_mcap)
from handypriors_ros.bag.output import (CUSTOM_DATA_KEY, MARKER_NAME, MARKER_TEXT, bag_files,
                                        output_bag_problem, writer_name)
from handypriors_ros.bag.sqlite_scan import SqliteDamageError, SqliteScan, scan_sqlite
from handypriors_ros.bag.typestore import make_typestore
from handypriors_ros.core.errors import HandyPriorsError

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd


class BagError(HandyPriorsError):
    """A bag cannot be opened, is truncated or inconsistent, or cannot be written."""


class BagTruncatedWarning(UserWarning):
    """A bag was truncated or damaged; what it still holds is read (see the message)."""


ON_TRUNCATED = ('warn', 'recover', 'raise')
"""``on_truncated`` choices: read what is readable and warn / read it quietly / refuse."""


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


@dataclass(frozen=True)
class TruncationReport:
    """What a truncated or damaged bag lost, and what was read from it.

    Attributes:
        path: the bag.
        problems: one line per problem, each naming its file and byte (the first is where
            the bag breaks off).
        file_bytes: size of the bag's storage files (bytes).
        lost_bytes: bytes of them that could not be used (bytes).
        messages_recovered: complete messages read.
        messages_expected: messages metadata.yaml counts, or None without a usable one.
        last_log_time_ns: log time of the latest message read (messages after it may be lost),
            or None when none was read.
        topics_recovered: ``{topic: messages read}``.
        topics_expected: ``{topic: messages metadata.yaml counts}``, or None.
        summary_only: the damage lies after the messages (in the MCAP summary): nothing lost.
    """

    path: Path
    problems: tuple[str, ...]
    file_bytes: int
    lost_bytes: int
    messages_recovered: int
    messages_expected: int | None
    last_log_time_ns: int | None
    topics_recovered: dict[str, int]
    topics_expected: dict[str, int] | None = None
    summary_only: bool = False

    @property
    def messages_lost(self) -> int | None:
        """Messages metadata.yaml counts that were not read; 0 when only the summary is
        damaged; None when unknown (no metadata.yaml)."""
        if self.messages_expected is not None:
            return max(0, self.messages_expected - self.messages_recovered)
        return 0 if self.summary_only else None

    @property
    def message(self) -> str:
        """The whole report in one line (for a CLI warning or a log)."""
        more = len(self.problems) - 1
        first = self.problems[0] + (f' (and {more} more problem{"s" if more > 1 else ""})'
                                    if more else '')
        if self.last_log_time_ns is None:
            got = 'no complete message could be read'
        else:
            got = (f'read {self.messages_recovered} complete messages up to log time '
                   f'{self.last_log_time_ns} ns')
        if self.summary_only:
            lost = 'no message is lost (the damage is after the messages)'
        elif self.messages_expected is not None:
            lost = (f'lost {self.messages_lost} of the {self.messages_expected} messages '
                    'metadata.yaml counts')
        else:
            lost = ('an unknown number of later messages is lost (no metadata.yaml to count '
                    'them)')
        lost += (f'; {describe_bytes(self.lost_bytes)} of the {describe_bytes(self.file_bytes)} '
                 'present could not be used')
        return f'bag {self.path} is truncated or damaged: {first}; {got}; {lost}'


# --- reading ---------------------------------------------------------------------------------

def _load_metadata(folder: Path) -> dict | None:
    """``rosbag2_bagfile_information`` of ``folder/metadata.yaml``, or None."""
    try:
        meta = YAML(typ='safe').load((folder / 'metadata.yaml').read_text())
        info = meta['rosbag2_bagfile_information']
        return info if isinstance(info, dict) else None
    except (OSError, YAMLError, KeyError, TypeError):
        return None


def _expected_counts(info: dict | None) -> tuple[int | None, dict[str, int] | None]:
    if not info:
        return None, None
    try:
        topics = {str(t['topic_metadata']['name']): int(t['message_count'])
                  for t in info['topics_with_message_count']}
        return int(info['message_count']), topics
    except (KeyError, TypeError, ValueError):
        return None, None


def _listed_types(info: dict | None) -> dict[str, str]:
    """``{topic: msgtype}`` metadata.yaml lists."""
    try:
        return {str(t['topic_metadata']['name']): str(t['topic_metadata']['type'])
                for t in (info or {}).get('topics_with_message_count') or []}
    except (KeyError, TypeError):
        return {}


def _storage_files(path: Path, info: dict | None) -> tuple[str, list[Path]]:
    """(storage id, files) of a bag, for recovery; ('', []) when unknown."""
    if path.is_file():
        kind = {'.mcap': 'mcap', '.db3': 'sqlite3'}.get(path.suffix, '')
        return kind, [path] if kind else []
    if info is not None:
        kind = str(info.get('storage_identifier', ''))
        names = info.get('relative_file_paths') or []
        return kind, [path / Path(str(n)).name for n in names]
    for kind, pattern in (('mcap', '*.mcap'), ('sqlite3', '*.db3')):
        files = sorted(path.glob(pattern), key=_natural_key)
        if files:
            return kind, files
    return '', []


def _natural_key(p: Path) -> list:
    """``bag_2.mcap`` before ``bag_10.mcap``."""
    return [int(s) if s.isdigit() else s for s in re.split(r'(\d+)', p.name)]


class _Recovered:
    """Messages of a bag read by the recovering scanners (MCAP or sqlite3)."""

    def __init__(self, path: Path, kind: str, files: list[Path], info: dict | None) -> None:
        self.path = path
        self.compressed_messages = (info or {}).get('compression_mode', '') == 'message'
        if (info or {}).get('compression_mode', '') == 'file':
            raise BagError(f'bag {path}: its files are compressed whole (compression_mode '
                           'file); a damaged one cannot be read: decompress it with zstd first')
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.mcap: list[McapScan] = []
        self.sqlite: list[SqliteScan] = []
        for file in files:
            if not file.is_file():
                raise BagError(f'bag {path}: storage file {file.name} is missing')
            try:
                if kind == 'mcap':
                    self.mcap.append(scan_mcap(file))
                else:
                    if self._tmp is None:
                        self._tmp = tempfile.TemporaryDirectory(prefix='handypriors-db3-')
                    self.sqlite.append(scan_sqlite(file, self._tmp.name))
            except (McapDamageError, SqliteDamageError) as exc:
                self.close()
                raise BagError(f'bag {path}: {exc}') from exc
            except OSError as exc:
                self.close()
                raise BagError(f'bag {path}: cannot read {file}: {exc.strerror or exc}') from exc
        expected, topics_expected = _expected_counts(info)
        self._listed_types = _listed_types(info)
        self.report = self._report(expected, topics_expected)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _channels(self) -> list[tuple[int, int, str, str]]:
        """(file index, channel/topic id, topic, msgtype) of every connection."""
        out = [(i, c.id, c.topic, c.msgtype) for i, s in enumerate(self.mcap)
               for c in s.channels.values()]
        out += [(i, tid, name, msgtype) for i, s in enumerate(self.sqlite)
                for tid, (name, msgtype) in s.topics.items()]
        return out

    @property
    def topics(self) -> dict[str, tuple[str, int]]:
        counts = [s.message_counts() for s in (self.mcap or self.sqlite)]
        out: dict[str, tuple[str, int]] = {}
        for i, cid, topic, msgtype in self._channels():
            msgtype_known, n = out.get(topic, (msgtype, 0))
            out[topic] = (msgtype_known, n + counts[i].get(cid, 0))
        for topic, msgtype in self._listed_types.items():  # metadata.yaml's, none read
            out.setdefault(topic, (msgtype, 0))
        return out

    def _report(self, expected: int | None, topics_expected: dict[str, int] | None
                ) -> TruncationReport | None:
        scans = self.mcap or self.sqlite
        problems = [f'{s.path.name} {d}' if d.startswith(('ends', 'has')) else d
                    for s in scans for d in s.damage]
        if not problems:
            return None
        recovered = {t: n for t, (_, n) in self.topics.items()}
        last = max((t for s in scans if (t := s.last_log_time_ns) is not None), default=None)
        summary_only = bool(self.mcap) and all(s.data_complete for s in self.mcap)
        return TruncationReport(
            path=self.path, problems=tuple(problems),
            file_bytes=sum(s.file_size for s in scans),
            lost_bytes=sum(s.lost_bytes for s in scans),
            messages_recovered=sum(recovered.values()), messages_expected=expected,
            last_log_time_ns=last, topics_recovered=recovered, topics_expected=topics_expected,
            summary_only=summary_only)

    def messages(self, wanted: set[str] | None) -> Iterator[BagMessage]:
        chans = {(i, cid): (topic, msgtype) for i, cid, topic, msgtype in self._channels()
                 if wanted is None or topic in wanted}
        if not chans:
            return
        if self.mcap:
            stream = ((i, c.id, t, data) for i, c, t, data in merge_messages(self.mcap, chans))
        else:
            stream = self._sqlite_messages(set(chans))
        for i, cid, log_time, data in stream:
            if self.compressed_messages:
                data = zstd.decompress(data)
            topic, msgtype = chans[(i, cid)]
            yield BagMessage(topic, msgtype, log_time, bytes(data))

    def _sqlite_messages(self, chans: set[tuple[int, int]]
                         ) -> Iterator[tuple[int, int, int, bytes]]:
        def stream(i: int, scan: SqliteScan) -> Iterator[tuple[int, int, int, bytes]]:
            for tid, t, data in scan.messages([c for f, c in chans if f == i]):
                yield t, i, tid, data

        streams = [stream(i, s) for i, s in enumerate(self.sqlite)]
        for t, i, tid, data in heapq.merge(*streams, key=lambda m: (m[0], m[1])):
            yield i, tid, t, data


_OPEN_FOR_READING: dict[str, int] = {}
"""Real paths of the bags a :class:`BagReader` of this process holds open (with counts): a
:class:`BagWriter` never replaces one of them, even when its caller forgot ``inputs``."""


def open_bag_paths() -> tuple[str, ...]:
    """Real paths of the bags this process is reading now (inputs a writer must not touch)."""
    return tuple(_OPEN_FOR_READING)


def _open_rosbags(path: Path) -> Reader:
    reader = Reader(path)
    reader.open()
    return reader


class BagReader:
    """Read a rosbag2 bag (MCAP or sqlite3). Use as a context manager.

    A bag ``rosbags`` cannot open because its storage is truncated or damaged (or a bag
    folder without metadata.yaml) is read by the recovering scanners instead
    (:mod:`~handypriors_ros.bag.mcap_scan`, :mod:`~handypriors_ros.bag.sqlite_scan`): every
    complete message before the damage, in log-time order; :attr:`truncation` says what was
    lost.

    Args:
        path: bag directory (with metadata.yaml) or a single ``.mcap`` / ``.db3`` file.
        on_truncated: what a truncated or damaged bag does: ``'warn'`` (read what it holds;
            a :class:`BagTruncatedWarning` with :attr:`TruncationReport.message` now),
            ``'recover'`` (read it quietly: the caller reports :attr:`truncation`) or
            ``'raise'`` (BagError now, saying where it breaks off and how much is readable).
    Raises:
        BagError: the bag does not exist or cannot be read at all (one line), or is
            truncated and ``on_truncated='raise'``.
    """

    def __init__(self, path: str | Path, *, on_truncated: str = 'warn') -> None:
        if on_truncated not in ON_TRUNCATED:
            raise ValueError(f'on_truncated must be one of {ON_TRUNCATED}, got {on_truncated!r}')
        self.path = Path(path)
        self.on_truncated = on_truncated
        self.truncation: TruncationReport | None = None
        """What a truncated or damaged bag lost (None: the bag is intact)."""
        self._reader: Reader | None = None
        self._recovered: _Recovered | None = None
        self._registered: str | None = None
        if not self.path.exists():
            raise BagError(f'bag not found: {self.path}')
        try:
            self._reader = _open_rosbags(self.path)
            self._register()
            return
        except PermissionError as exc:
            raise BagError(f'cannot open bag {self.path}: {exc}') from exc
        except (ReaderError, OSError, ValueError, KeyError) as exc:
            first_error = exc
        info = _load_metadata(self.path) if self.path.is_dir() else None
        kind, files = _storage_files(self.path, info)
        if kind not in ('mcap', 'sqlite3') or not files:
            raise BagError(f'cannot open bag {self.path}: {first_error}') from first_error
        recovered = _Recovered(self.path, kind, files, info)
        if recovered.report is None and info is not None:
            recovered.close()  # intact storage: the bag is broken some other way
            raise BagError(f'cannot open bag {self.path}: {first_error}') from first_error
        self._recovered = recovered
        self._register()
        self.truncation = recovered.report
        if self.truncation is None:
            return
        if on_truncated == 'raise':
            self.close()
            raise BagError(f'{self.truncation.message}; open it with on_truncated="warn" to '
                           f'read the {self.truncation.messages_recovered} complete messages '
                           'before the damage')
        if on_truncated == 'warn':
            warnings.warn(self.truncation.message, BagTruncatedWarning, stacklevel=2)

    def __enter__(self) -> 'BagReader':
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _register(self) -> None:
        key = os.path.realpath(self.path)
        _OPEN_FOR_READING[key] = _OPEN_FOR_READING.get(key, 0) + 1
        self._registered = key

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._recovered is not None:
            self._recovered.close()
            self._recovered = None
        key, self._registered = self._registered, None
        if key is not None:
            left = _OPEN_FOR_READING.pop(key, 1) - 1
            if left > 0:
                _OPEN_FOR_READING[key] = left

    @property
    def recovered(self) -> bool:
        """The bag is read by the recovering scanners (truncated, damaged, or no
        metadata.yaml), not by ``rosbags``."""
        return self._recovered is not None

    @property
    def topics(self) -> dict[str, tuple[str, int]]:
        """``{topic: (msgtype, message_count)}`` (counts of readable messages when
        recovered)."""
        if self._recovered is not None:
            return self._recovered.topics
        return {name: (info.msgtype, info.msgcount) for name, info in self._reader.topics.items()}

    def messages(self, topics: Iterable[str] | None = None, *,
                 on_truncated: str | None = None) -> Iterator[BagMessage]:
        """Messages of ``topics`` (all when None) in log-time order.

        Args:
            topics: topic names to read; unknown names are ignored.
            on_truncated: what a truncated or damaged bag does once its readable messages
                have been yielded: ``'raise'`` (BagError), ``'warn'`` (a warning) or
                ``'recover'``/None (the iteration ends normally; None: the reader's
                ``on_truncated`` already reported it at opening). Damage ``rosbags`` only
                meets while reading (a corrupt chunk in an indexed file) ends the iteration
                the same way, None then following the reader's ``on_truncated``.
        """
        if on_truncated is not None and on_truncated not in ON_TRUNCATED:
            raise ValueError(f'on_truncated must be one of {ON_TRUNCATED} or None, '
                             f'got {on_truncated!r}')
        wanted = None if topics is None else set(topics)
        if self._recovered is not None:
            yield from self._recovered.messages(wanted)
            if self.truncation is not None and on_truncated in ('raise', 'warn'):
                reason = f'{self.truncation.message} (all readable messages were read)'
                if on_truncated == 'raise':
                    raise BagError(reason)
                warnings.warn(reason, BagTruncatedWarning, stacklevel=2)
            return
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
            policy = on_truncated or self.on_truncated
            if policy == 'raise':
                raise BagError(reason) from exc
            warnings.warn(reason, BagTruncatedWarning, stacklevel=2)


# --- writing ---------------------------------------------------------------------------------

METADATA_VERSIONS = {
    8: 'Humble, Iron, Jazzy, Kilted: offered_qos_profiles as a YAML string with integer enums',
    9: 'Jazzy, Kilted only: offered_qos_profiles as a YAML list (Humble fails to parse it)',
}
"""rosbag2 metadata.yaml versions the writer can write, and which distributions read them.

Facts, from rosbag2's sources (github.com/ros2/rosbag2):

- humble, ``rosbag2_storage/src/rosbag2_storage/metadata_io.cpp`` (``convert<BagMetadata>``
  and ``convert<TopicMetadata>::decode``): no upper bound on ``version``; it reads
  ``version``, ``storage_identifier``, ``duration.nanoseconds``,
  ``starting_time.nanoseconds_since_epoch``, ``message_count``, ``topics_with_message_count``
  (``name``, ``type``, ``serialization_format``; ``offered_qos_profiles`` with
  ``as<std::string>()`` from version 4), ``relative_file_paths``, ``compression_format`` and
  ``compression_mode`` (from 3), ``files`` (from 5); unknown keys are ignored. Its own writer
  writes version 5. A version-9 file, whose ``offered_qos_profiles`` is a YAML list, fails
  with a bad conversion. Its player parses the string with ``Rosbag2QoS`` decode
  (``rosbag2_transport/src/rosbag2_transport/qos.cpp``): integer enums, ``{sec, nsec}``.
- jazzy, ``rosbag2_storage/include/rosbag2_storage/yaml.hpp``: reads versions up to 9; below
  9 ``offered_qos_profiles`` is a string (``to_rclcpp_qos_vector``); also requires
  ``custom_data`` (from 6), ``type_description_hash`` (from 7), ``ros_distro`` (from 8).
  Its writer writes 9.
- rolling of 2024-10 (the tree Kilted branched from): the same decoder as jazzy. rosbags
  0.11 (which reads Kilted bags) refuses versions above 9.

So version 8 is the newest every one of them reads; ``rosbags`` writes 8 or 9.
"""

METADATA_VERSION = 8
"""Default metadata.yaml version of written bags (see :data:`METADATA_VERSIONS`)."""

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

    The bag is written into a hidden temporary folder next to ``path`` and moved into place by
    :meth:`close` (deleted instead when the ``with`` block raises). It carries the marker of
    :mod:`handypriors_ros.bag.output`, so a later ``overwrite`` may replace it.

    Args:
        path: the bag directory to create (missing parent folders are created).
        overwrite: replace an existing bag at ``path``, but only one this package wrote that
            holds nothing else (anything else: BagError, nothing touched).
        inputs: the job's input paths: ``path`` may not be, contain or lie inside one (nor
            inside a bag a :class:`BagReader` of this process holds open, passed or not).
        metadata_version: metadata.yaml version, a key of :data:`METADATA_VERSIONS` (default 8:
            Humble, Jazzy and Kilted read it).
    Raises:
        BagError: the path is refused (one line: the path and why) or cannot be created.
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False,
                 inputs: Iterable[str | os.PathLike] = (),
                 metadata_version: int = METADATA_VERSION) -> None:
        if metadata_version not in METADATA_VERSIONS:
            raise ValueError(f'metadata_version must be one of {sorted(METADATA_VERSIONS)}, '
                             f'got {metadata_version!r}')
        self.path = Path(path)
        self.overwrite = overwrite
        self._inputs = tuple(inputs)
        problem = output_bag_problem(self.path, overwrite=overwrite,
                                     inputs=(*self._inputs, *open_bag_paths()))
        if problem and problem.startswith('already exists'):
            raise BagError(f'output bag already exists: {self.path} (choose another path or '
                           'allow overwriting, which replaces only a bag written by '
                           'handypriors_ros)')
        if problem:
            raise BagError(f'output bag {self.path}: {problem}')
        self._created = self._make_parents(self.path.parent)
        # rosbags names the storage file after the bag directory: keep the final name inside
        # a fresh hidden staging directory (never one that existed before).
        try:
            self._staging = Path(tempfile.mkdtemp(prefix=f'.{self.path.name}.',
                                                  suffix='.partial', dir=self.path.parent))
        except OSError as exc:
            self._remove_created()
            raise BagError(f'cannot create bag {self.path}: {exc.strerror or exc}') from exc
        self._partial = self._staging / self.path.name
        self._writer = Writer(self._partial, version=metadata_version,
                              storage_plugin=StoragePlugin.MCAP)
        self._writer.set_custom_data(CUSTOM_DATA_KEY, writer_name())
        try:
            self._writer.open()
        except (WriterError, OSError) as exc:
            self._discard()
            raise BagError(f'cannot create bag {self.path}: {exc}') from exc
        self._store = make_typestore()
        self._connections: dict[str, Any] = {}
        self._closed = False

    @staticmethod
    def _make_parents(folder: Path) -> list[Path]:
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                pass
            except OSError as exc:
                raise BagError(f'cannot create folder {d}: {exc.strerror or exc}') from exc
        return missing

    def _remove_created(self) -> None:
        for d in self._created:  # deepest first; only folders this writer made, if empty
            try:
                d.rmdir()
            except OSError:
                break

    def _discard(self) -> None:
        shutil.rmtree(self._staging, ignore_errors=True)
        self._remove_created()

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
        """Finish the bag; with ``commit`` move it into place, else delete the partial bag.

        Raises:
            BagError: the bag cannot be finished or moved into place; when what is at
                ``path`` may no longer be replaced (it changed during the job), the new bag is
                kept in the staging folder and the message says where.
        """
        if self._closed:
            return
        self._closed = True
        if not commit:
            self._writer.abort()
            self._discard()
            return
        try:
            self._writer.close()
            (self._partial / MARKER_NAME).write_text(MARKER_TEXT)
        except (WriterError, OSError) as exc:
            self._discard()
            raise BagError(f'cannot finish bag {self.path}: {exc}') from exc
        self._commit()

    def _commit(self) -> None:
        """Move the finished bag into place, replacing an old bag of ours atomically."""
        if not (self.path.exists() or self.path.is_symlink()):
            try:
                self._partial.rename(self.path)
            except OSError as exc:
                raise BagError(f'cannot move the new bag into place at {self.path} '
                               f'({exc.strerror or exc}); it is kept at {self._partial}') from exc
            self._staging.rmdir()
            return
        # Checked again now: the folder may have changed while the job ran, and a bag this
        # process opened for reading since is an input too.
        problem = (output_bag_problem(self.path, overwrite=True,
                                      inputs=(*self._inputs, *open_bag_paths()))
                   if self.overwrite else 'appeared while the bag was written')
        if problem:
            problem = problem.removesuffix(': refusing to replace it')
            raise BagError(f'output bag {self.path} {problem}: refusing to replace it; the new '
                           f'bag is kept at {self._partial}')
        old_holder = Path(tempfile.mkdtemp(prefix=f'.{self.path.name}.', suffix='.old',
                                           dir=self.path.parent))
        old = old_holder / self.path.name
        try:
            self.path.rename(old)
            try:
                self._partial.rename(self.path)
            except OSError:
                old.rename(self.path)  # put the old bag back
                raise
        except OSError as exc:
            old_holder.rmdir()
            raise BagError(f'cannot replace {self.path} ({exc.strerror or exc}); the new bag '
                           f'is kept at {self._partial}') from exc
        self._staging.rmdir()
        # Delete the old bag file by file: only the files it was checked to consist of.
        for name in bag_files(old) or ():
            (old / name).unlink(missing_ok=True)
        try:
            old.rmdir()
            old_holder.rmdir()
        except OSError:
            warnings.warn(f'the replaced bag is left at {old} (it was not empty)', stacklevel=3)

    @property
    def store(self):
        """The typestore (use ``store.types['pkg/msg/Name']`` to build messages)."""
        return self._store
