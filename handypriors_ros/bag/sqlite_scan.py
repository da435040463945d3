"""Read what a truncated rosbag2 sqlite3 file (.db3) still holds.

A recorder killed mid-write, or a copy cut short, leaves a .db3 whose header still counts the
pages that are gone; SQLite then calls the whole file malformed and reads nothing. The pages
that are present are intact, though, and rosbag2 appends messages in rowid order, so the rows
stored in them can be read back: :func:`scan_sqlite` works on a copy of the file (the
original is never written) trimmed to whole pages, with the header's page count set to the
pages present (the "in-header database size", bytes 28-31 of the SQLite file header:
https://www.sqlite.org/fileformat.html#in_header_database_size), reads the topics, then the
messages in rowid order until the first row SQLite cannot read.

The copy needs as much free space as the file (in the folder given, a temporary one by
default). Pure Python: the standard library's sqlite3.
"""
from __future__ import annotations

import shutil
import sqlite3
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

_HEADER_MAGIC = b'SQLite format 3\x00'


class SqliteDamageError(Exception):
    """The file is not an SQLite database, or too little of it is left to read anything."""


@dataclass(frozen=True)
class SqliteScan:
    """What :func:`scan_sqlite` found in one .db3 file.

    Attributes:
        path: the original file.
        copy: the trimmed copy the rows are read from (deleted with its folder by the caller).
        file_size: size of the original (bytes).
        claimed_size: size its header claims (page count x page size; bytes).
        lost_bytes: bytes present but not read: the cut-off last page (the missing
            ``claimed_size - file_size`` bytes are named in ``damage``).
        damage: one line per problem met; empty when every row was read.
        topics: ``{topic id: (name, type)}``.
        rows: ``(log_time_ns, rowid, topic id)`` of the readable messages, in log-time order
            (rowid order on ties).
    """

    path: Path
    copy: Path
    file_size: int
    claimed_size: int
    lost_bytes: int
    damage: tuple[str, ...]
    topics: dict[int, tuple[str, str]]
    rows: tuple[tuple[int, int, int], ...] = field(repr=False)

    @property
    def last_log_time_ns(self) -> int | None:
        return max((r[0] for r in self.rows), default=None)

    def message_counts(self) -> dict[int, int]:
        """``{topic id: readable messages}``."""
        counts: dict[int, int] = {}
        for _, _, topic_id in self.rows:
            counts[topic_id] = counts.get(topic_id, 0) + 1
        return counts

    def messages(self, topic_ids: Iterable[int] | None = None
                 ) -> Iterator[tuple[int, int, bytes]]:
        """``(topic id, log_time_ns, data)`` of the readable messages in log-time order."""
        wanted = None if topic_ids is None else set(topic_ids)
        con = sqlite3.connect(f'file:{self.copy}?mode=ro', uri=True)
        try:
            for log_time, rowid, topic_id in self.rows:
                if wanted is not None and topic_id not in wanted:
                    continue
                (data,) = con.execute('SELECT data FROM messages WHERE id = ?',
                                      (rowid,)).fetchone()
                yield topic_id, log_time, bytes(data)
        finally:
            con.close()


def scan_sqlite(path: str | Path, workdir: str | Path) -> SqliteScan:
    """Index the readable messages of a (possibly truncated) rosbag2 .db3 file (module doc).

    Args:
        path: the .db3 file (never modified).
        workdir: an existing folder for the trimmed copy.
    Raises:
        SqliteDamageError: not an SQLite file, or its topics table cannot be read.
        OSError: the file cannot be read or copied.
    """
    path, workdir = Path(path), Path(workdir)
    copy = workdir / path.name
    size = path.stat().st_size
    with open(path, 'rb') as f:
        header = f.read(100)
    if len(header) < 100 or not header.startswith(_HEADER_MAGIC):
        raise SqliteDamageError(f'{path} is not an SQLite database or lost its header '
                                f'({size} bytes)')
    (page_size,) = struct.unpack('>H', header[16:18])
    page_size = 65536 if page_size == 1 else page_size
    (claimed_pages,) = struct.unpack('>I', header[28:32])
    claimed = claimed_pages * page_size
    pages = size // page_size
    damage: list[str] = []
    with open(path, 'rb') as src, open(copy, 'wb') as dst:
        shutil.copyfileobj(src, dst)
    wal = path.with_name(path.name + '-wal')
    if wal.exists():
        shutil.copyfile(wal, copy.with_name(copy.name + '-wal'))
    if claimed > size or size % page_size:
        damage.append(f'{path.name} is {size} bytes, its header counts {claimed} '
                      f'({claimed_pages} pages of {page_size} bytes): cut off at byte {size}')
        with open(copy, 'r+b') as f:
            f.truncate(pages * page_size)
            f.seek(28)
            f.write(struct.pack('>I', pages))
    con = sqlite3.connect(f'file:{copy}?mode=ro', uri=True)
    try:
        try:
            topics = {int(i): (str(n), str(t)) for i, n, t in
                      con.execute('SELECT id, name, type FROM topics')}
        except sqlite3.DatabaseError as exc:
            raise SqliteDamageError(f'{path}: its topics table cannot be read ({exc})') from exc
        rows: list[tuple[int, int, int]] = []
        try:
            for rowid, topic_id, stamp in con.execute(
                    'SELECT id, topic_id, timestamp FROM messages'):
                rows.append((int(stamp), int(rowid), int(topic_id)))
        except sqlite3.DatabaseError as exc:
            last = rows[-1][1] if rows else None
            damage.append(f'{path.name}: SQLite cannot read the messages after row {last} '
                          f'({exc})')
    finally:
        con.close()
    rows.sort()
    return SqliteScan(path, copy, size, claimed, size - pages * page_size, tuple(damage),
                      topics, tuple(rows))


__all__ = ['SqliteDamageError', 'SqliteScan', 'scan_sqlite']
