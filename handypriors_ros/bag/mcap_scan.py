"""Read what a damaged MCAP file still holds: every complete message before the damage.

A recorder killed mid-write leaves an MCAP file without its summary, footer and closing magic;
``rosbags`` (like every reader that seeks to the footer first) then refuses the whole file.
This module walks the file front to back instead, as the MCAP specification
(https://mcap.dev/spec) lays it out::

    MAGIC  record*  MAGIC          MAGIC = 0x89 'MCAP' '0' CR LF
    record = opcode: u8, length: u64 (little endian), content: length bytes

It keeps every Schema, Channel and Message record it can read completely, inside Chunk records
too (uncompressed, zstd or lz4), and stops at the first record that is cut off or whose length
runs past the end of the file. A chunk cut off by the truncation still gives the complete
messages at its start (the decompressors stream), which is where a recorder killed mid-chunk
leaves its last seconds. A complete chunk that fails its CRC or cannot be decompressed is
skipped and reported; the scan goes on after it (its length is still known).

Pure Python: struct, the zstd and lz4 decompressors ``rosbags`` depends on, no rosbags reader.
:func:`scan_mcap` reads the file once and keeps offsets only (no payload);
:meth:`McapScan.messages` reads the payloads again in log-time order, one block at a time.
"""
from __future__ import annotations

import heapq
import os
import struct
import sys
from binascii import crc32
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import lz4.frame

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

MAGIC = b'\x89MCAP0\r\n'

OP_HEADER = 0x01
OP_FOOTER = 0x02
OP_SCHEMA = 0x03
OP_CHANNEL = 0x04
OP_MESSAGE = 0x05
OP_CHUNK = 0x06
OP_DATA_END = 0x0F

RECORD_NAMES = {0x01: 'Header', 0x02: 'Footer', 0x03: 'Schema', 0x04: 'Channel',
                0x05: 'Message', 0x06: 'Chunk', 0x07: 'MessageIndex', 0x08: 'ChunkIndex',
                0x09: 'Attachment', 0x0A: 'AttachmentIndex', 0x0B: 'Statistics',
                0x0C: 'Metadata', 0x0D: 'MetadataIndex', 0x0E: 'SummaryOffset',
                0x0F: 'DataEnd'}

_RECORD_HEAD = struct.Struct('<BQ')             # opcode, content length
_MESSAGE_HEAD = struct.Struct('<HIQQ')          # channel id, sequence, log time, publish time
_CHUNK_HEAD = struct.Struct('<QQQI')            # start, end, uncompressed size, uncompressed crc
_SEGMENT_BYTES = 8 << 20                        # top-level messages read back per block (bytes)


class McapDamageError(Exception):
    """The file is not an MCAP file at all (wrong leading magic)."""


@dataclass(frozen=True)
class McapChannel:
    """A Channel record joined with its Schema's name (the ROS type for the ros2 profile)."""

    id: int
    topic: str
    msgtype: str
    message_encoding: str
    metadata: dict[str, str] = field(repr=False)


@dataclass(eq=False)
class _Block:
    """A run of message records read back together: one chunk, or top-level records.

    ``payload_offset``/``payload_size``: the bytes in the file (compressed for a chunk);
    ``messages``: ``(log_time_ns, channel_id, start, end)`` with start/end into the decoded
    payload; ``partial``: a chunk cut off by the end of the file (decoded as far as it goes);
    ``used_end``: for a partial chunk, the file offset up to which its bytes gave complete
    records (uncompressed: exact; compressed: every byte present, as the decompressor used them).
    """

    payload_offset: int
    payload_size: int
    compression: str
    partial: bool
    messages: list[tuple[int, int, int, int]] = field(default_factory=list)
    used_end: int = 0


@dataclass(frozen=True)
class McapScan:
    """What :func:`scan_mcap` found in one file.

    Attributes:
        path: the file.
        file_size: its size (bytes).
        complete: it ends with a Footer record and the closing magic.
        data_complete: its data section is complete (a DataEnd record, or a complete file):
            the damage, if any, lies in the summary and no message is lost.
        readable_bytes: end of the last record used (bytes from the start of the file; inside a
            chunk cut off by the end of the file when messages were read from it).
        lost_bytes: bytes present but not used: after ``readable_bytes`` and in skipped
            chunks.
        damage: one line per problem met (the first is where the file breaks off); empty
            when the file is complete and every chunk decoded.
        damage_offset: byte where the (first) damage starts, or None.
        partial_messages: complete messages recovered from a chunk cut off by the end of file.
        channels: ``{channel id: McapChannel}``.
    """

    path: Path
    file_size: int
    complete: bool
    data_complete: bool
    readable_bytes: int
    lost_bytes: int
    damage: tuple[str, ...]
    damage_offset: int | None
    partial_messages: int
    channels: dict[int, McapChannel]
    _blocks: tuple[_Block, ...] = field(repr=False)

    @property
    def message_count(self) -> int:
        """Complete messages found (all channels)."""
        return sum(len(b.messages) for b in self._blocks)

    def message_counts(self) -> dict[int, int]:
        """``{channel id: complete messages found}``."""
        counts: dict[int, int] = {}
        for block in self._blocks:
            for _, channel_id, _, _ in block.messages:
                counts[channel_id] = counts.get(channel_id, 0) + 1
        return counts

    @property
    def last_log_time_ns(self) -> int | None:
        """Latest log time among the messages found, or None without messages."""
        times = [m[0] for b in self._blocks for m in b.messages]
        return max(times) if times else None

    def messages(self, channel_ids: Iterable[int] | None = None
                 ) -> Iterator[tuple[McapChannel, int, bytes]]:
        """``(channel, log_time_ns, data)`` of the messages found, in log-time order.

        Equal log times keep file order. Blocks are decoded lazily: only the blocks whose
        messages are due are held in memory.
        """
        return _merge([self], channel_ids)


def merge_messages(scans: Iterable[McapScan], channel_ids: Iterable[tuple[int, int]] | None = None
                   ) -> Iterator[tuple[int, McapChannel, int, bytes]]:
    """Messages of several scanned files (a split bag) merged in log-time order.

    Args:
        scans: the files, in bag order (ties in log time keep this order).
        channel_ids: ``(file index, channel id)`` pairs to read; all when None.
    Yields:
        ``(file index, channel, log_time_ns, data)``.
    """
    scans = list(scans)
    wanted = None if channel_ids is None else set(channel_ids)
    # One heap entry per open block: (next log time, block order, position in the block).
    order: list[tuple[int, int, int, _Block, list[int]]] = []  # (min time, seq, file, block, idx)
    for file_index, scan in enumerate(scans):
        for block in scan._blocks:
            keep = [i for i, m in enumerate(block.messages)
                    if wanted is None or (file_index, m[1]) in wanted]
            if keep:
                keep.sort(key=lambda i: block.messages[i][0])  # stable: file order on ties
                order.append((block.messages[keep[0]][0], len(order), file_index, block, keep))
    order.sort(key=lambda o: (o[0], o[1]))
    heap: list[tuple[int, int, int]] = []
    opened: dict[int, tuple[int, _Block, list[int], bytes]] = {}
    next_block = 0
    while True:
        # Open every block that may hold a message due before the earliest pending one.
        while next_block < len(order) and (not heap or order[next_block][0] <= heap[0][0]):
            _, seq, file_index, block, keep = order[next_block]
            data = _decode_block(scans[file_index].path, block)
            opened[seq] = (file_index, block, keep, data)
            heapq.heappush(heap, (block.messages[keep[0]][0], seq, 0))
            next_block += 1
        if not heap:
            return
        _, seq, pos = heapq.heappop(heap)
        file_index, block, keep, data = opened[seq]
        log_time, channel_id, start, end = block.messages[keep[pos]]
        yield file_index, scans[file_index].channels[channel_id], log_time, data[start:end]
        if pos + 1 < len(keep):
            heapq.heappush(heap, (block.messages[keep[pos + 1]][0], seq, pos + 1))
        else:
            del opened[seq]


def _merge(scans: list[McapScan], channel_ids: Iterable[int] | None
           ) -> Iterator[tuple[McapChannel, int, bytes]]:
    pairs = None if channel_ids is None else [(0, c) for c in channel_ids]
    for _, channel, log_time, data in merge_messages(scans, pairs):
        yield channel, log_time, data


# --- decoding ---------------------------------------------------------------------------------

def _decompress(data: bytes, compression: str, partial: bool) -> bytes:
    """Decoded chunk records; for a ``partial`` chunk, as much as the bytes present give."""
    if compression == '':
        return data
    if compression == 'zstd':
        if partial:
            return zstd.ZstdDecompressor().decompress(data)
        return zstd.decompress(data)
    if compression == 'lz4':
        if partial:
            return lz4.frame.LZ4FrameDecompressor().decompress(data)
        return lz4.frame.decompress(data)
    raise ValueError(f'unsupported chunk compression {compression!r}')


def _decode_block(path: Path, block: _Block) -> bytes:
    with open(path, 'rb') as f:
        f.seek(block.payload_offset)
        data = f.read(block.payload_size)
    return _decompress(data, block.compression, block.partial)


def _string(buf: memoryview, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from('<I', buf, pos)
    end = pos + 4 + n
    if end > len(buf):
        raise ValueError('string runs past its record')
    return bytes(buf[pos + 4:end]).decode('utf-8'), end


def _string_map(buf: memoryview, pos: int) -> tuple[dict[str, str], int]:
    (n,) = struct.unpack_from('<I', buf, pos)
    end = pos + 4 + n
    if end > len(buf):
        raise ValueError('map runs past its record')
    out: dict[str, str] = {}
    pos += 4
    while pos < end:
        key, pos = _string(buf, pos)
        value, pos = _string(buf, pos)
        out[key] = value
    return out, end


class _Records:
    """Schema/Channel bookkeeping shared by the file-level and chunk-level walks."""

    def __init__(self) -> None:
        self.schemas: dict[int, str] = {}
        self.channels: dict[int, McapChannel] = {}

    def schema(self, body: memoryview) -> None:
        (schema_id,) = struct.unpack_from('<H', body, 0)
        name, _ = _string(body, 2)
        self.schemas[schema_id] = name

    def channel(self, body: memoryview) -> None:
        channel_id, schema_id = struct.unpack_from('<HH', body, 0)
        topic, pos = _string(body, 4)
        encoding, pos = _string(body, pos)
        metadata, _ = _string_map(body, pos)
        self.channels[channel_id] = McapChannel(channel_id, topic,
                                                self.schemas.get(schema_id, ''), encoding,
                                                metadata)


def _walk_chunk(data: bytes, records: _Records, block: _Block) -> int:
    """Read the records of decoded chunk ``data`` into ``records``/``block``.

    Returns the number of bytes of complete records: it stops at the first incomplete one,
    and at zero bytes where a record should start (opcode 0 is invalid: a crash left zeros
    where data never landed; without a chunk CRC the message just before them cannot be
    told from an intact one).
    """
    buf = memoryview(data)
    pos = 0
    while pos + _RECORD_HEAD.size <= len(buf):
        op, length = _RECORD_HEAD.unpack_from(buf, pos)
        if op == 0:
            break
        start = pos + _RECORD_HEAD.size
        end = start + length
        if end > len(buf):
            break
        body = buf[start:end]
        if op == OP_SCHEMA:
            records.schema(body)
        elif op == OP_CHANNEL:
            records.channel(body)
        elif op == OP_MESSAGE:
            channel_id, _, log_time, _ = _MESSAGE_HEAD.unpack_from(body, 0)
            block.messages.append((log_time, channel_id, start + _MESSAGE_HEAD.size, end))
        pos = end
    return pos


def _chunk(f, pos: int, length: int, file_size: int, records: _Records
           ) -> tuple[_Block | None, str]:
    """Read the Chunk record at ``pos``: (its block, '') or (block or None, problem)."""
    start = pos + _RECORD_HEAD.size
    available = min(length, file_size - start)
    f.seek(start)
    head = f.read(min(available, _CHUNK_HEAD.size + 4))
    if len(head) < _CHUNK_HEAD.size + 4:
        return None, 'its header is cut off'
    _, _, uncompressed_size, crc = _CHUNK_HEAD.unpack_from(head, 0)
    (n,) = struct.unpack_from('<I', head, _CHUNK_HEAD.size)
    comp_start = start + _CHUNK_HEAD.size + 4
    f.seek(comp_start)
    rest = f.read(min(n + 8, max(0, start + available - comp_start)))
    if len(rest) < n + 8:
        return None, 'its header is cut off'
    compression = rest[:n].decode('utf-8', 'replace')
    (records_size,) = struct.unpack_from('<Q', rest, n)
    payload_offset = comp_start + n + 8
    partial = length > file_size - start
    payload_size = (min(records_size, file_size - payload_offset) if partial else records_size)
    if payload_offset + records_size > start + length:
        return None, 'its records run past the record length'
    block = _Block(payload_offset, payload_size, compression, partial)
    f.seek(payload_offset)
    payload = f.read(payload_size)
    try:
        data = _decompress(payload, compression, partial)
    except (ValueError, RuntimeError, zstd.ZstdError) as exc:
        return (block if partial else None), f'it cannot be decompressed ({exc})'
    if not partial:
        if len(data) != uncompressed_size:
            return None, (f'it decompresses to {len(data)} bytes, its header says '
                          f'{uncompressed_size}')
        if crc and crc32(data) != crc:
            return None, 'it fails its CRC check'
    try:
        consumed = _walk_chunk(data, records, block)
    except (ValueError, struct.error, UnicodeDecodeError) as exc:
        return None, f'its records are corrupt ({exc})'
    block.used_end = (payload_offset + consumed if compression == ''
                      else payload_offset + payload_size)
    if not partial and consumed < len(data):
        return block, (f'it holds zero bytes from byte {consumed} of its {len(data)} on (not '
                       'completely written); the messages before them are kept')
    return block, ''


def scan_mcap(path: str | Path) -> McapScan:
    """Walk an MCAP file front to back and index every complete message (module docstring).

    Raises:
        McapDamageError: the file does not start with the MCAP magic.
        OSError: the file cannot be read.
    """
    path = Path(path)
    records = _Records()
    blocks: list[_Block] = []
    damage: list[str] = []
    damage_offset: int | None = None
    skipped = 0
    partial_messages = 0
    complete = False
    segment: _Block | None = None  # top-level messages being gathered

    def problem(offset: int, text: str) -> None:
        nonlocal damage_offset
        if damage_offset is None:
            damage_offset = offset
        damage.append(text)

    with open(path, 'rb') as f:
        size = os.fstat(f.fileno()).st_size
        magic = f.read(len(MAGIC))
        if magic != MAGIC:
            if len(magic) < len(MAGIC) and MAGIC.startswith(magic):
                problem(0, f'ends at byte {size}, inside the leading magic')
                return McapScan(path, size, False, False, 0, size, tuple(damage), damage_offset,
                                0, {}, ())
            raise McapDamageError(f'{path} is not an MCAP file (it does not start with the '
                                  'MCAP magic)')
        pos = readable = len(MAGIC)
        data_ended = False
        while True:
            f.seek(pos)
            head = f.read(_RECORD_HEAD.size)
            if not head:
                problem(pos, f'ends at byte {pos} after a complete record, without the footer'
                        + (', after the data section' if data_ended else ''))
                break
            if len(head) < _RECORD_HEAD.size:
                problem(pos, f'ends at byte {size} inside the head of a record starting at '
                        f'byte {pos}')
                break
            op, length = _RECORD_HEAD.unpack(head)
            if op == 0:  # opcode 0 is invalid: zeros a crash left where data was not written
                problem(pos, f'has zero bytes instead of a record at byte {pos} (the file was '
                        'not completely written)')
                break
            start = pos + _RECORD_HEAD.size
            end = start + length
            name = RECORD_NAMES.get(op, f'0x{op:02x}')
            if end > size:
                if op == OP_CHUNK and not data_ended:
                    block, _ = _chunk(f, pos, length, size, records)
                    if block is not None and block.messages:
                        blocks.append(block)
                        partial_messages = len(block.messages)
                        readable = block.used_end
                problem(pos, f'ends at byte {size} inside a {name} record starting at byte '
                        f'{pos} ({size - pos} of its {_RECORD_HEAD.size + length} bytes present)'
                        + (', after the data section' if data_ended else ''))
                break
            if op == OP_FOOTER:
                f.seek(end)
                if f.read(len(MAGIC)) == MAGIC:
                    complete = True
                    readable = end + len(MAGIC)
                else:
                    readable = end
                    problem(end, f'has its footer but not the closing magic at byte {end}')
                break
            if op != OP_MESSAGE and segment is not None:
                blocks.append(segment)
                segment = None
            try:
                if op == OP_CHUNK and not data_ended:
                    block, why = _chunk(f, pos, length, size, records)
                    if block is None:
                        problem(pos, f'has a Chunk record at byte {pos} that is skipped: {why}')
                        skipped += _RECORD_HEAD.size + length
                    else:
                        if why:  # read up to zero bytes inside it
                            problem(pos, f'has a Chunk record at byte {pos} that is read in '
                                    f'part: {why}')
                            skipped += max(0, end - block.used_end)
                        if block.messages:
                            blocks.append(block)
                elif op in (OP_SCHEMA, OP_CHANNEL):
                    body = memoryview(f.read(length))
                    (records.schema if op == OP_SCHEMA else records.channel)(body)
                elif op == OP_MESSAGE and not data_ended:
                    body = f.read(_MESSAGE_HEAD.size)
                    channel_id, _, log_time, _ = _MESSAGE_HEAD.unpack(body)
                    if segment is None or end - segment.payload_offset > _SEGMENT_BYTES:
                        if segment is not None:
                            blocks.append(segment)
                        segment = _Block(pos, 0, '', False)
                    segment.payload_size = end - segment.payload_offset
                    segment.messages.append((log_time, channel_id,
                                             start + _MESSAGE_HEAD.size - segment.payload_offset,
                                             end - segment.payload_offset))
                elif op == OP_DATA_END:
                    data_ended = True
            except (ValueError, struct.error, UnicodeDecodeError) as exc:
                problem(pos, f'has a corrupt {name} record at byte {pos} ({exc})')
                break
            pos = readable = end
        if segment is not None:
            blocks.append(segment)
    orphans = 0  # messages whose Channel record was in a skipped chunk: no topic, no type
    for block in blocks:
        kept = [m for m in block.messages if m[1] in records.channels]
        orphans += len(block.messages) - len(kept)
        block.messages[:] = kept
    if orphans:
        problem(pos, f'has {orphans} messages whose channel was defined in a skipped chunk')
    blocks = [b for b in blocks if b.messages]
    lost = size - readable + skipped
    return McapScan(path, size, complete, complete or (data_ended and not skipped), readable,
                    lost, tuple(damage), damage_offset, partial_messages, dict(records.channels),
                    tuple(blocks))


def describe_bytes(n: int) -> str:
    """``'1.2 MB'``-style size for messages."""
    for unit, scale in (('GB', 1e9), ('MB', 1e6), ('kB', 1e3)):
        if n >= scale:
            return f'{n / scale:.1f} {unit}'
    return f'{n} bytes'


__all__ = ['MAGIC', 'McapChannel', 'McapDamageError', 'McapScan', 'describe_bytes',
           'merge_messages', 'scan_mcap']
