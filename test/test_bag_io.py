"""Bag reading/writing: round trip, rclpy interop (an independent serializer), truncated bags
read up to the damage, output paths that never cost the user a file, metadata Humble reads."""
import shutil
import struct
import sys
import warnings
from binascii import crc32
from pathlib import Path

import lz4.frame
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from ruamel.yaml import YAML

from handypriors_ros.bag import (MARKER_NAME, BagError, BagReader, BagTruncatedWarning,
                                 BagWriter, check_output_bag, check_output_dir, make_typestore)
from handypriors_ros.bag.mcap_scan import scan_mcap
from handypriors_ros.core.errors import InputError

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

MAGIC = b'\x89MCAP0\r\n'  # https://mcap.dev/spec#magic


def _image(T, i: int, nbytes: int = 18):
    """An Image whose data is unique per ``i`` (so its bytes can be found in the file)."""
    header = T['std_msgs/msg/Header'](
        stamp=T['builtin_interfaces/msg/Time'](sec=100, nanosec=i), frame_id='cam')
    data = np.random.default_rng(i).integers(0, 256, nbytes, dtype=np.uint8)
    if nbytes == 18:
        data = ((np.arange(18) + i) % 256).astype(np.uint8)
    return T['sensor_msgs/msg/Image'](header=header, height=1, width=nbytes // 3,
                                      encoding='rgb8', is_bigendian=0, step=nbytes, data=data)


def _write(path: Path, n: int = 5, nbytes: int = 18, **kwargs) -> None:
    T = make_typestore().types
    with BagWriter(path, **kwargs) as writer:
        for i in range(n):
            writer.write('/img', 1000 + i, _image(T, i, nbytes))


def _read_all(path, **kwargs):
    with BagReader(path, **kwargs) as reader:
        return [(m.topic, m.log_time_ns, m.rawdata) for m in reader.messages()]


def test_round_trip(tmp_path):
    _write(tmp_path / 'bag', 5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bag']
    with BagReader(tmp_path / 'bag') as reader:
        assert reader.topics == {'/img': ('sensor_msgs/msg/Image', 5)}
        assert reader.truncation is None and not reader.recovered
        msgs = list(reader.messages())
    assert [m.log_time_ns for m in msgs] == [1000, 1001, 1002, 1003, 1004]
    img = msgs[3].deserialize()
    assert img.header.stamp.nanosec == 3 and img.encoding == 'rgb8'
    np.testing.assert_array_equal(img.data, np.arange(18) + 3)


def test_own_messages_match_rclpy_serialisation(tmp_path):
    rclpy_serialization = pytest.importorskip('rclpy.serialization',
                                              reason='rclpy is not installed')
    from handypriors_ros.msg import TrackedObject
    T = make_typestore().types
    msg = T['handypriors_ros/msg/TrackedObject'](
        header=T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=5, nanosec=7),
                                        frame_id='camera_color_optical_frame'),
        object_id='obj',
        pose=T['geometry_msgs/msg/PoseWithCovariance'](
            pose=T['geometry_msgs/msg/Pose'](
                position=T['geometry_msgs/msg/Point'](x=0.1, y=0.2, z=0.3),
                orientation=T['geometry_msgs/msg/Quaternion'](x=0.0, y=0.0, z=0.0, w=1.0)),
            covariance=np.arange(36, dtype=np.float64)),
        status=1, status_reason='ok', nis=2.0, contacts=[], residuals=[],
        latency=[T['handypriors_ros/msg/StageLatency'](stage='total', seconds=0.01)])
    with BagWriter(tmp_path / 'bag') as writer:
        writer.write('/handypriors/track', 1, msg)
    with BagReader(tmp_path / 'bag') as reader:
        raw = next(reader.messages()).rawdata
    back = rclpy_serialization.deserialize_message(raw, TrackedObject)
    assert back.header.frame_id == 'camera_color_optical_frame' and back.object_id == 'obj'
    assert back.pose.pose.position.z == pytest.approx(0.3)
    assert list(back.pose.covariance) == list(range(36))
    assert back.latency[0].stage == 'total'
    # and the other way: rclpy's bytes deserialise with the typestore
    again = make_typestore().deserialize_cdr(rclpy_serialization.serialize_message(back),
                                             'handypriors_ros/msg/TrackedObject')
    assert again.latency[0].seconds == pytest.approx(0.01)


def test_missing_bag_is_a_clear_error(tmp_path):
    with pytest.raises(BagError, match='bag not found'):
        BagReader(tmp_path / 'nope')


def test_tf_static_is_recorded_as_latched(tmp_path):
    """`ros2 bag play` republishes with the recorded QoS: /tf_static must be transient-local
    or tf2's static listener (transient-local) never gets the calibration."""
    T = make_typestore().types
    with BagWriter(tmp_path / 'bag') as writer:
        writer.write('/tf_static', 1, T['tf2_msgs/msg/TFMessage'](transforms=[]))
        writer.write('/img', 2, _image(T, 0))
    text = (tmp_path / 'bag' / 'metadata.yaml').read_text()
    with BagReader(tmp_path / 'bag') as reader:
        qos = {c.topic: c.ext.offered_qos_profiles for c in reader._reader.connections}
    assert qos['/img'] == []
    (profile,) = qos['/tf_static']
    assert profile.durability.name == 'TRANSIENT_LOCAL' and profile.depth == 1
    assert 'offered_qos_profiles' in text


# --- truncated MCAP: the project's writer ------------------------------------------------------

N_BIG = 400  # 4 kB images: 1.6 MB, two rosbags chunks (rosbags closes a chunk at 1 MiB)


@pytest.fixture(scope='module')
def big_bag(tmp_path_factory):
    """The project's bag (uncompressed chunks), its bytes and each message's payload end."""
    path = tmp_path_factory.mktemp('big') / 'bag'
    _write(path, N_BIG, nbytes=4002)
    with BagReader(path) as reader:
        msgs = [(m.topic, m.log_time_ns, m.rawdata) for m in reader.messages()]
    data = (path / 'bag.mcap').read_bytes()
    # Independent of the scanner: where each message's bytes end in the file.
    ends = [data.index(raw) + len(raw) for _, _, raw in msgs]
    assert ends == sorted(ends)
    return path, data, msgs, ends


def _cut_copy(src: Path, dst: Path, data: bytes, cut: int, *, keep_metadata: bool = True) -> Path:
    dst.mkdir()
    if keep_metadata:
        shutil.copy(src / 'metadata.yaml', dst / 'metadata.yaml')
    mcap = next(src.glob('*.mcap'))
    (dst / mcap.name).write_bytes(data[:cut])
    return dst


def _header_end(data: bytes) -> int:
    """End of the Header record (spec: magic, then opcode u8 + length u64 + content)."""
    op, length = struct.unpack_from('<BQ', data, len(MAGIC))
    assert op == 0x01
    return len(MAGIC) + 9 + length


def _summary_start(data: bytes) -> int:
    """Footer (spec): opcode 0x02, length 20, summary_start u64, ... before the end magic."""
    footer = len(data) - len(MAGIC) - 9 - 20
    op, length, summary_start = struct.unpack_from('<BQQ', data, footer)
    assert op == 0x02 and length == 20
    return summary_start


@pytest.mark.parametrize('where', ['95%', '50%', 'mid-record', 'after-header', 'summary'])
def test_truncated_mcap_reads_every_complete_message(tmp_path, big_bag, where):
    src, data, msgs, ends = big_bag
    cut = {'95%': int(0.95 * len(data)), '50%': len(data) // 2,
           'mid-record': ends[250] - 1000, 'after-header': _header_end(data),
           'summary': _summary_start(data) + 30}[where]
    bag = _cut_copy(src, tmp_path / 'cut', data, cut)
    expected = [m for m, end in zip(msgs, ends) if end <= cut]
    with pytest.warns(BagTruncatedWarning, match='truncated') as caught:
        got = _read_all(bag)
    assert got == expected
    with BagReader(bag, on_truncated='recover') as reader:
        report = reader.truncation
        assert reader.recovered
        assert reader.topics == {'/img': ('sensor_msgs/msg/Image', len(expected))}
    assert report.messages_recovered == len(expected)
    assert report.messages_expected == N_BIG
    assert report.messages_lost == N_BIG - len(expected)
    assert report.topics_recovered == {'/img': len(expected)}
    assert report.topics_expected == {'/img': N_BIG}
    assert report.file_bytes == cut and 0 <= report.lost_bytes < cut
    assert report.last_log_time_ns == (expected[-1][1] if expected else None)
    assert report.summary_only == (where == 'summary')
    assert '\n' not in report.message and str(caught[0].message) == report.message
    assert f'byte {cut}' in report.message
    if where == 'after-header':
        assert expected == [] and report.lost_bytes == 0
        assert 'no complete message' in report.message
    if where == 'summary':
        assert len(expected) == N_BIG and 'no message is lost' in report.message
    if where == 'mid-record':
        assert len(expected) == 250 and report.lost_bytes == cut - ends[249]


def _first_chunk_end(data: bytes) -> int:
    """End of the first record after the Header (rosbags: the first Chunk), from the spec."""
    pos = _header_end(data)
    op, length = struct.unpack_from('<BQ', data, pos)
    assert op == 0x06
    return pos + 9 + length


@pytest.mark.parametrize('inside_chunk', [False, True])
def test_zero_filled_tail_is_damage_not_records(tmp_path, big_bag, inside_chunk):
    """After a power loss a file can keep its length with zeros where data never landed."""
    src, data, msgs, ends = big_bag
    cut = len(data) // 2 if inside_chunk else _first_chunk_end(data)
    bag = _cut_copy(src, tmp_path / 'cut', data[:cut] + bytes(len(data) - cut), len(data))
    with BagReader(bag, on_truncated='recover') as reader:
        got = [(m.topic, m.log_time_ns, m.rawdata) for m in reader.messages()]
        report = reader.truncation
    expected = [m for m, end in zip(msgs, ends) if end <= cut]
    assert 'zero bytes' in report.problems[0]
    assert report.messages_lost == N_BIG - len(got)
    if inside_chunk:
        # rosbags writes no chunk CRC: the message the zeros cut into cannot be told from an
        # intact one and is read with its zeroed tail; every one before it is intact.
        assert got[:len(expected)] == expected and len(got) == len(expected) + 1
    else:
        assert got == expected


def test_strict_mode_refuses_a_truncated_bag_and_says_where(tmp_path, big_bag):
    src, data, msgs, ends = big_bag
    cut = int(0.95 * len(data))
    bag = _cut_copy(src, tmp_path / 'cut', data, cut)
    n = sum(end <= cut for end in ends)
    with pytest.raises(BagError) as err:
        BagReader(bag, on_truncated='raise')
    text = str(err.value)
    assert '\n' not in text and 'truncated' in text and f'byte {cut}' in text
    assert f'read the {n} complete messages' in text and 'on_truncated="warn"' in text


def test_iteration_can_still_raise_after_the_readable_messages(tmp_path, big_bag):
    """sequence.py's contract: messages(on_truncated='raise') raises once the readable
    messages are out, so a job that needs every image fails loudly."""
    src, data, msgs, ends = big_bag
    bag = _cut_copy(src, tmp_path / 'cut', data, len(data) // 2)
    got = []
    with BagReader(bag, on_truncated='recover') as reader:
        with pytest.raises(BagError, match='truncated'):
            for m in reader.messages(on_truncated='raise'):
                got.append(m.log_time_ns)
    assert got == [m[1] for m, end in zip(msgs, ends) if end <= len(data) // 2]


def test_killed_recorder_without_metadata(tmp_path, big_bag):
    """A recorder killed mid-write leaves no metadata.yaml: the count of lost messages is
    unknown and said so; a complete .mcap without metadata.yaml is read silently."""
    src, data, msgs, ends = big_bag
    cut = int(0.95 * len(data))
    bag = _cut_copy(src, tmp_path / 'cut', data, cut, keep_metadata=False)
    with BagReader(bag, on_truncated='recover') as reader:
        got = [(m.topic, m.log_time_ns, m.rawdata) for m in reader.messages(['/img'])]
        report = reader.truncation
    assert got == [m for m, end in zip(msgs, ends) if end <= cut]
    assert report.messages_expected is None and report.messages_lost is None
    assert 'unknown number' in report.message
    whole = _cut_copy(src, tmp_path / 'whole', data, len(data), keep_metadata=False)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        with BagReader(whole) as reader:
            assert reader.truncation is None
            assert [(m.topic, m.log_time_ns, m.rawdata) for m in reader.messages()] == msgs


def test_single_truncated_mcap_file(tmp_path, big_bag):
    src, data, msgs, ends = big_bag
    cut = len(data) // 3
    (tmp_path / 'x.mcap').write_bytes(data[:cut])
    with BagReader(tmp_path / 'x.mcap', on_truncated='recover') as reader:
        got = [(m.topic, m.log_time_ns, m.rawdata) for m in reader.messages()]
    assert got == [m for m, end in zip(msgs, ends) if end <= cut]


def test_not_an_mcap_is_a_one_line_error(tmp_path):
    _write(tmp_path / 'bag', 3)
    (tmp_path / 'bag' / 'bag.mcap').write_bytes(b'this is not a bag at all' * 10)
    with pytest.raises(BagError, match='not an MCAP file') as err:
        BagReader(tmp_path / 'bag')
    assert '\n' not in str(err.value)


# --- truncated MCAP shaped like `ros2 bag record` ---------------------------------------------
# rosbag2_storage_mcap (jazzy, src/mcap_storage.cpp) writes with mcap's C++ writer defaults:
# zstd-compressed chunks (768 KiB) with a CRC, schema and channel records inside the chunks,
# message indexes after each chunk, then DataEnd, a summary and the footer. The writer below
# writes that layout from the spec (https://mcap.dev/spec); rosbags reads it back intact.

def _rec(op: int, body: bytes) -> bytes:
    return struct.pack('<BQ', op, len(body)) + body


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack('<I', len(b)) + b


def _ros2_like_mcap(folder: Path, compression: str, chunk_bytes: int, with_metadata: bool):
    """Write ``folder/rec_0.mcap``; returns (messages, per-message (chunk, end in chunk),
    chunk file ranges, chunk payload file offsets)."""
    store = make_typestore()
    T = store.types
    compress = {'zstd': zstd.compress, 'lz4': lz4.frame.compress, '': lambda b: b}[compression]
    topics = {'/camera/color/image_raw': (1, 'sensor_msgs/msg/Image'),
              '/joint_states': (2, 'sensor_msgs/msg/JointState')}
    msgs, where, chunk_ranges, payload_at, chunk_index = [], [], [], [], []
    out = bytearray(MAGIC + _rec(0x01, _str('ros2') + _str('test')))
    chunk, indexes, t_range, announced = bytearray(), {}, [], set()

    def close_chunk():
        raw = bytes(chunk)
        data = compress(raw)
        start = len(out)
        body = (struct.pack('<QQQI', t_range[0], t_range[-1], len(raw), crc32(raw))
                + _str(compression) + struct.pack('<Q', len(data)))
        payload_at.append(start + 9 + len(body))
        out.extend(_rec(0x06, body + data))
        chunk_ranges.append((start, len(out)))
        index_at = {}
        for cid, entries in indexes.items():
            index_at[cid] = len(out)
            out.extend(_rec(0x07, struct.pack('<HI', cid, 16 * len(entries))
                            + b''.join(struct.pack('<QQ', t, o) for t, o in entries)))
        chunk_index.append((t_range[0], t_range[-1], start, chunk_ranges[-1][1] - start,
                            index_at, len(out) - chunk_ranges[-1][1], len(data), len(raw)))
        chunk.clear(), indexes.clear(), t_range.clear()

    for k in range(300):
        t = 10**9 + k * 10**6
        if k % 3 == 0:
            topic, msg = '/camera/color/image_raw', _image(T, k, 19998)
        else:
            topic, msg = '/joint_states', T['sensor_msgs/msg/JointState'](
                header=T['std_msgs/msg/Header'](
                    stamp=T['builtin_interfaces/msg/Time'](sec=1, nanosec=k), frame_id=''),
                name=['j0', 'j1'], position=np.array([k, -k], float),
                velocity=np.zeros(0), effort=np.zeros(0))
        cid, msgtype = topics[topic]
        if cid not in announced:  # the C++ writer puts schema and channel into the chunk
            msgdef, _ = store.generate_msgdef(msgtype, ros_version=2)
            chunk.extend(_rec(0x03, struct.pack('<H', cid) + _str(msgtype) + _str('ros2msg')
                              + _str(msgdef)))
            qos = _str('offered_qos_profiles') + _str('')
            chunk.extend(_rec(0x04, struct.pack('<HH', cid, cid) + _str(topic) + _str('cdr')
                              + struct.pack('<I', len(qos)) + qos))
            announced.add(cid)
        raw = store.serialize_cdr(msg, msgtype)
        indexes.setdefault(cid, []).append((t, len(chunk)))
        chunk.extend(_rec(0x05, struct.pack('<HIQQ', cid, k, t, t) + raw))
        t_range.append(t)
        msgs.append((topic, t, bytes(raw)))
        where.append((len(chunk_ranges), len(chunk)))
        if len(chunk) >= chunk_bytes:
            close_chunk()
    if chunk:
        close_chunk()
    out.extend(_rec(0x0F, struct.pack('<I', 0)))
    summary_start = len(out)
    for topic, (cid, msgtype) in topics.items():
        msgdef, _ = store.generate_msgdef(msgtype, ros_version=2)
        out.extend(_rec(0x03, struct.pack('<H', cid) + _str(msgtype) + _str('ros2msg')
                        + _str(msgdef)))
    for topic, (cid, msgtype) in topics.items():
        qos = _str('offered_qos_profiles') + _str('')
        out.extend(_rec(0x04, struct.pack('<HH', cid, cid) + _str(topic) + _str('cdr')
                        + struct.pack('<I', len(qos)) + qos))
    for t0, t1, start, length, index_at, index_len, csize, usize in chunk_index:
        offsets = b''.join(struct.pack('<HQ', c, o) for c, o in index_at.items())
        out.extend(_rec(0x08, struct.pack('<QQQQ', t0, t1, start, length)
                        + struct.pack('<I', len(offsets)) + offsets
                        + struct.pack('<Q', index_len) + _str(compression)
                        + struct.pack('<QQ', csize, usize)))
    counts = {cid: sum(1 for m in msgs if m[0] == topic) for topic, (cid, _) in topics.items()}
    stats = b''.join(struct.pack('<HQ', c, n) for c, n in counts.items())
    out.extend(_rec(0x0B, struct.pack('<QHIIIIQQ', len(msgs), 2, 2, 0, 0, len(chunk_index),
                                      msgs[0][1], msgs[-1][1])
                    + struct.pack('<I', len(stats)) + stats))
    out.extend(_rec(0x02, struct.pack('<QQI', summary_start, 0, 0)))
    out.extend(MAGIC)
    folder.mkdir()
    (folder / 'rec_0.mcap').write_bytes(bytes(out))
    if with_metadata:  # what jazzy's recorder writes on a clean stop (version 9)
        info = {'version': 9, 'storage_identifier': 'mcap', 'relative_file_paths': ['rec_0.mcap'],
                'duration': {'nanoseconds': msgs[-1][1] - msgs[0][1]},
                'starting_time': {'nanoseconds_since_epoch': msgs[0][1]},
                'message_count': len(msgs),
                'topics_with_message_count': [
                    {'topic_metadata': {'name': topic, 'type': msgtype,
                                        'serialization_format': 'cdr',
                                        'offered_qos_profiles': [], 'type_description_hash': ''},
                     'message_count': counts[cid]} for topic, (cid, msgtype) in topics.items()],
                'compression_format': '', 'compression_mode': '', 'files': [],
                'custom_data': {}, 'ros_distro': 'jazzy'}
        yaml = YAML(typ='safe')
        with open(folder / 'metadata.yaml', 'w') as f:
            yaml.dump({'rosbag2_bagfile_information': info}, f)
    return msgs, where, chunk_ranges, payload_at, compress


@pytest.mark.parametrize('compression', ['zstd', 'lz4'])
@pytest.mark.parametrize('where', ['95%', 'mid-chunk', 'mid-chunk-header', 'after-header'])
def test_truncated_ros2_record_mcap(tmp_path, compression, where):
    chunk_bytes = 768 * 1024  # mcap's C++ writer default (zstd: 128 KiB blocks inside)
    src = tmp_path / 'rec'
    msgs, where_is, chunks, payload_at, compress = _ros2_like_mcap(src, compression, chunk_bytes,
                                                                   with_metadata=True)
    data = (src / 'rec_0.mcap').read_bytes()
    assert len(chunks) >= 3
    assert _read_all(src) == msgs  # intact: read by rosbags
    assert [(c.topic, t, d) for c, t, d in scan_mcap(src / 'rec_0.mcap').messages()] == msgs
    cut = {'95%': int(0.95 * chunks[-1][1]),
           'mid-chunk': (chunks[1][0] + chunks[1][1]) // 2,
           'mid-chunk-header': chunks[1][0] + 20,
           'after-header': _header_end(data)}[where]
    # Independent reference: complete chunks give all their messages; the cut chunk gives
    # those whose records the decompressor can produce from the bytes present.
    cut_chunk = next(i for i, (a, b) in enumerate(chunks) if a <= cut < b)
    decodable = 0
    if cut > payload_at[cut_chunk]:
        present = data[payload_at[cut_chunk]:cut]
        decodable = len(zstd.ZstdDecompressor().decompress(present) if compression == 'zstd'
                        else lz4.frame.LZ4FrameDecompressor().decompress(present))
    expected = [m for m, (c, end) in zip(msgs, where_is)
                if c < cut_chunk or (c == cut_chunk and end <= decodable)]
    bag = _cut_copy(src, tmp_path / 'cut', data, cut)
    with BagReader(bag, on_truncated='recover') as reader:
        got = [(m.topic, m.log_time_ns, m.rawdata) for m in reader.messages()]
        report = reader.truncation
    assert got == expected
    assert report.messages_recovered == len(expected)
    assert report.messages_lost == len(msgs) - len(expected)
    if where in ('95%', 'mid-chunk'):  # the streaming decompressors give the cut chunk's start
        assert any(c == cut_chunk for m, (c, _) in zip(expected, where_is))
    if where == 'after-header':
        assert expected == []
    assert 'Chunk record' in report.message or where == 'after-header'


def test_corrupt_chunk_is_skipped_and_reported(tmp_path):
    """A chunk failing its CRC in a truncated file: skipped, the chunks after it are read."""
    src = tmp_path / 'rec'
    msgs, where_is, chunks, payload_at, _ = _ros2_like_mcap(src, 'zstd', 512 * 1024,
                                                            with_metadata=True)
    data = bytearray((src / 'rec_0.mcap').read_bytes())
    data[payload_at[1] + 500] ^= 0xFF
    cut = chunks[-1][1]  # the summary is gone
    bag = _cut_copy(src, tmp_path / 'cut', bytes(data), cut)
    with BagReader(bag, on_truncated='recover') as reader:
        got = [(m.topic, m.log_time_ns, m.rawdata) for m in reader.messages()]
        report = reader.truncation
    assert got == [m for m, (c, _) in zip(msgs, where_is) if c != 1]
    assert f'Chunk record at byte {chunks[1][0]} that is skipped' in report.problems[0]
    assert report.lost_bytes >= chunks[1][1] - chunks[1][0] - 100
    assert report.messages_lost == sum(c == 1 for c, _ in where_is)


def test_messages_of_a_lost_channel_are_reported_lost(tmp_path):
    """The first chunk holds the Schema and Channel records: when it is corrupt, the later
    messages have no topic or type and count as lost (never a KeyError)."""
    src = tmp_path / 'rec'
    msgs, where_is, chunks, payload_at, _ = _ros2_like_mcap(src, 'zstd', 512 * 1024,
                                                            with_metadata=True)
    data = bytearray((src / 'rec_0.mcap').read_bytes())
    data[payload_at[0] + 500] ^= 0xFF
    bag = _cut_copy(src, tmp_path / 'cut', bytes(data), chunks[-1][1])
    with BagReader(bag, on_truncated='recover') as reader:
        assert list(reader.messages()) == []
        report = reader.truncation
    assert report.messages_lost == len(msgs)
    assert any('channel was defined in a skipped chunk' in p for p in report.problems)


# --- sqlite3 ---------------------------------------------------------------------------------

def _sqlite_bag(path: Path, n: int = 2000):
    store = make_typestore()
    T = store.types
    msgs = []
    with Writer(path, version=8, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conn = writer.add_connection('/img', 'sensor_msgs/msg/Image', typestore=store)
        for i in range(n):
            raw = store.serialize_cdr(_image(T, i), 'sensor_msgs/msg/Image')
            writer.write(conn, 1000 + i, raw)
            msgs.append(('/img', 1000 + i, bytes(raw)))
    return msgs


@pytest.mark.parametrize('fraction', [0.5, 0.95])
def test_truncated_sqlite_reads_the_rows_sqlite_can_read(tmp_path, fraction):
    msgs = _sqlite_bag(tmp_path / 'sq')
    db3 = tmp_path / 'sq' / 'sq.db3'
    data = db3.read_bytes()
    db3.write_bytes(data[:int(len(data) * fraction)])
    with BagReader(tmp_path / 'sq', on_truncated='recover') as reader:
        got = [(m.topic, m.log_time_ns, m.rawdata) for m in reader.messages()]
        report = reader.truncation
    assert db3.read_bytes() == data[:int(len(data) * fraction)]  # the original is untouched
    assert 0 < len(got) < len(msgs) and got == msgs[:len(got)]
    assert report.messages_recovered == len(got) and report.messages_lost == len(msgs) - len(got)
    assert 'cut off' in report.message and '\n' not in report.message
    assert report.file_bytes == len(data[:int(len(data) * fraction)])
    assert 0 <= report.lost_bytes < 4096  # the cut-off last page (rosbags: 4 kB pages)
    with pytest.raises(BagError, match='truncated'):
        BagReader(tmp_path / 'sq', on_truncated='raise')


def test_unreadable_sqlite_is_a_one_line_error(tmp_path):
    _sqlite_bag(tmp_path / 'sq', 10)
    (tmp_path / 'sq' / 'sq.db3').write_bytes(b'SQLite format 3\x00' + b'\x00' * 20)
    with pytest.raises(BagError) as err:
        BagReader(tmp_path / 'sq')
    assert '\n' not in str(err.value) and 'sq.db3' in str(err.value)


# --- writing: atomic, marked, never deleting what the user owns ------------------------------

def test_existing_output_is_not_overwritten(tmp_path):
    _write(tmp_path / 'bag', 1)
    with pytest.raises(BagError, match='already exists'):
        BagWriter(tmp_path / 'bag')


def test_failed_write_leaves_no_bag(tmp_path):
    T = make_typestore().types
    with pytest.raises(RuntimeError):
        with BagWriter(tmp_path / 'new' / 'deeper' / 'bag') as writer:
            writer.write('/img', 1, _image(T, 0))
            raise RuntimeError('job crashed')
    assert not list(tmp_path.iterdir())  # no bag, no staging folder, no created parents


def test_written_bags_are_marked(tmp_path):
    _write(tmp_path / 'bag', 2)
    assert (tmp_path / 'bag' / MARKER_NAME).is_file()
    info = YAML(typ='safe').load((tmp_path / 'bag' / 'metadata.yaml').read_text())
    assert 'handypriors_ros' in info['rosbag2_bagfile_information']['custom_data'][
        'handypriors_ros.writer']


def test_overwrite_replaces_only_our_own_bag(tmp_path):
    _write(tmp_path / 'bag', 2)
    _write(tmp_path / 'bag', 3, overwrite=True)
    assert len(_read_all(tmp_path / 'bag')) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bag']


def test_overwrite_refuses_a_users_folder(tmp_path):
    """The bug: `--out d --overwrite` deleted d/thesis.tex."""
    (tmp_path / 'd' / 'sub').mkdir(parents=True)
    (tmp_path / 'd' / 'thesis.tex').write_text('x')
    with pytest.raises(BagError, match='not a bag written by handypriors_ros') as err:
        _write(tmp_path / 'd', 2, overwrite=True)
    assert '\n' not in str(err.value) and str(tmp_path / 'd') in str(err.value)
    assert (tmp_path / 'd' / 'thesis.tex').read_text() == 'x' and (tmp_path / 'd' / 'sub').is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['d']


def test_overwrite_refuses_a_recording_and_our_bag_with_other_files(tmp_path):
    _sqlite_bag(tmp_path / 'recording', 3)  # like `ros2 bag record`: no marker
    with pytest.raises(BagError, match='no .* marker'):
        _write(tmp_path / 'recording', 1, overwrite=True)
    _write(tmp_path / 'ours', 1)
    (tmp_path / 'ours' / 'notes.txt').write_text('mine')
    with pytest.raises(BagError, match=r'contains files handypriors_ros did not write \(notes'):
        _write(tmp_path / 'ours', 1, overwrite=True)
    assert (tmp_path / 'ours' / 'notes.txt').exists() and len(_read_all(tmp_path / 'ours')) == 1
    (tmp_path / 'afile').write_text('x')
    with pytest.raises(BagError, match='is a file'):
        _write(tmp_path / 'afile', 1, overwrite=True)


def test_overwrite_refuses_an_input(tmp_path):
    """The bug: `--out BAG --overwrite` replaced the input recording (ours or not)."""
    _write(tmp_path / 'bag', 2)
    with pytest.raises(BagError, match='is the input'):
        _write(tmp_path / 'bag', 1, overwrite=True, inputs=[tmp_path / 'bag'])
    with pytest.raises(BagError, match='contains the input'):
        _write(tmp_path, 1, overwrite=True, inputs=[tmp_path / 'bag'])
    assert len(_read_all(tmp_path / 'bag')) == 2


def test_a_bag_open_for_reading_is_an_input_even_when_not_passed(tmp_path):
    """The bug: `track BAG --out BAG --overwrite` replaced the input it was reading."""
    _write(tmp_path / 'bag', 2)
    with BagReader(tmp_path / 'bag') as reader:
        with pytest.raises(BagError, match='is the input'):
            BagWriter(tmp_path / 'bag', overwrite=True)
        with pytest.raises(BagError, match='contains the input'):
            BagWriter(tmp_path, overwrite=True)
        assert len(list(reader.messages())) == 2
    writer = BagWriter(tmp_path / 'bag', overwrite=True)  # closed: no longer an input
    with BagReader(tmp_path / 'bag'):  # opened while the job ran: checked again at the end
        with pytest.raises(BagError, match='is the input .*: refusing to replace it; the new'):
            writer.close()
    assert len(_read_all(tmp_path / 'bag')) == 2
    _write(tmp_path / 'bag', 3, overwrite=True)
    assert len(_read_all(tmp_path / 'bag')) == 3


def test_a_file_added_during_the_job_stops_the_replacement(tmp_path):
    _write(tmp_path / 'bag', 2)
    T = make_typestore().types
    writer = BagWriter(tmp_path / 'bag', overwrite=True)
    writer.write('/img', 1, _image(T, 0))
    (tmp_path / 'bag' / 'thesis.tex').write_text('x')
    with pytest.raises(BagError, match='refusing to replace it; the new bag is kept at') as err:
        writer.close()
    kept = Path(str(err.value).rsplit('kept at ', 1)[1])
    assert len(_read_all(kept)) == 1
    assert (tmp_path / 'bag' / 'thesis.tex').exists() and len(_read_all(tmp_path / 'bag')) == 2


def test_check_output_bag(tmp_path):
    (tmp_path / 'file').write_text('x')
    cases = {
        str(tmp_path / 'file' / 'bag'): 'is a file, not a folder',
        '/proc/handypriors_bag': 'cannot write in /proc',
        str(tmp_path / 'in'): 'is the input',
        str(tmp_path / 'in' / 'sub'): 'is inside the input',
        str(tmp_path / 'file'): 'already exists',
    }
    for path, why in cases.items():
        with pytest.raises(InputError, match=why) as err:
            check_output_bag(path, inputs=[tmp_path / 'in'], name='--out')
        assert str(err.value).startswith(f'--out {path}: ') and '\n' not in str(err.value)
    with pytest.raises(InputError, match=r'exists \(use --overwrite to replace it\)'):
        check_output_bag(tmp_path / 'file', name='--out', flag='--overwrite')
    assert check_output_bag(tmp_path / 'new' / 'bag') == tmp_path / 'new' / 'bag'
    assert not (tmp_path / 'new').exists()  # checking creates nothing
    _write(tmp_path / 'ours', 1)
    check_output_bag(tmp_path / 'ours', overwrite=True)
    with pytest.raises(InputError, match='is a file, not a bag'):
        check_output_bag(tmp_path / 'file', overwrite=True)


def test_check_output_dir(tmp_path):
    (tmp_path / 'file').write_text('x')
    (tmp_path / 'report').mkdir()
    (tmp_path / 'report' / 'notes.md').write_text('mine')
    with pytest.raises(InputError, match='is a file, not a folder'):
        check_output_dir(tmp_path / 'file')
    with pytest.raises(InputError, match=r'already holds notes.md'):
        check_output_dir(tmp_path / 'report', name='--report')
    check_output_dir(tmp_path / 'report', files=['summary.json'])  # no clash with our names
    with pytest.raises(InputError, match='already holds notes.md'):
        check_output_dir(tmp_path / 'report', files=['notes.md'])
    check_output_dir(tmp_path / 'report', overwrite=True)
    with pytest.raises(InputError, match='is inside the input'):
        check_output_dir(tmp_path / 'bag' / 'report', inputs=[tmp_path / 'bag'])
    with pytest.raises(InputError, match='cannot write in /proc'):
        check_output_dir('/proc/handypriors_report')
    assert (tmp_path / 'report' / 'notes.md').read_text() == 'mine'


# --- metadata.yaml that Humble, Jazzy and Kilted read -----------------------------------------
# What each distribution's decoder requires, restated from rosbag2's sources
# (github.com/ros2/rosbag2):
# - humble: rosbag2_storage/src/rosbag2_storage/metadata_io.cpp, convert<BagMetadata>::decode
#   and convert<TopicMetadata>::decode (offered_qos_profiles `as<std::string>()` from version
#   4; compression_* from 3; files from 5; no upper bound on the version) and the player's
#   QoS decode, rosbag2_transport/src/rosbag2_transport/qos.cpp (integer enums, {sec, nsec}).
# - jazzy (and rolling 2024-10, the tree Kilted branched from: the same file):
#   rosbag2_storage/include/rosbag2_storage/yaml.hpp: up to version 9; offered_qos_profiles a
#   string below 9, a list from 9; custom_data from 6, type_description_hash from 7,
#   ros_distro from 8.

def _require(node, key, kind):
    assert key in node, f'missing {key}'
    value = node[key]
    if kind is str:  # yaml-cpp's as<std::string>() takes any scalar, not a list or a map
        assert not isinstance(value, (list, dict)), f'{key} must be a scalar, got {value!r}'
    else:
        assert isinstance(value, kind) and not isinstance(value, bool), f'{key}: {value!r}'
    return value


def _humble_reads(info: dict) -> None:
    version = _require(info, 'version', int)
    _require(info, 'storage_identifier', str)
    _require(_require(info, 'duration', dict), 'nanoseconds', int)
    _require(_require(info, 'starting_time', dict), 'nanoseconds_since_epoch', int)
    _require(info, 'message_count', int)
    for topic in _require(info, 'topics_with_message_count', list):
        meta = _require(topic, 'topic_metadata', dict)
        for key in ('name', 'type', 'serialization_format'):
            _require(meta, key, str)
        if version >= 4:
            qos = _require(meta, 'offered_qos_profiles', str)
            for profile in (YAML(typ='safe').load(qos) or []) if qos else []:
                for key in ('history', 'reliability', 'durability', 'liveliness', 'depth'):
                    _require(profile, key, int)
                for key in ('deadline', 'lifespan', 'liveliness_lease_duration'):
                    _require(profile[key], 'sec', int), _require(profile[key], 'nsec', int)
                assert isinstance(profile['avoid_ros_namespace_conventions'], bool)
        _require(topic, 'message_count', int)
    assert all(isinstance(p, str) for p in _require(info, 'relative_file_paths', list))
    if version >= 3:
        _require(info, 'compression_format', str), _require(info, 'compression_mode', str)
    if version >= 5:
        for f in _require(info, 'files', list):
            _require(f, 'path', str), _require(f, 'message_count', int)
            _require(f['starting_time'], 'nanoseconds_since_epoch', int)
            _require(f['duration'], 'nanoseconds', int)


def _jazzy_reads(info: dict) -> None:
    version = _require(info, 'version', int)
    assert version <= 9
    if version < 9:
        _humble_reads(info)  # the same fields, the QoS still a string
    else:
        for topic in info['topics_with_message_count']:
            _require(topic['topic_metadata'], 'offered_qos_profiles', list)
    if version >= 6:
        custom = _require(info, 'custom_data', dict)
        assert all(isinstance(v, str) for v in custom.values())
    if version >= 7:
        for topic in info['topics_with_message_count']:
            _require(topic['topic_metadata'], 'type_description_hash', str)
    if version >= 8:
        _require(info, 'ros_distro', str)


def _written_metadata(tmp_path, **kwargs) -> dict:
    T = make_typestore().types
    with BagWriter(tmp_path / 'bag', **kwargs) as writer:
        writer.write('/tf_static', 1, T['tf2_msgs/msg/TFMessage'](transforms=[]))
        writer.write('/img', 2, _image(T, 0))
    text = (tmp_path / 'bag' / 'metadata.yaml').read_text()
    return YAML(typ='safe').load(text)['rosbag2_bagfile_information']


def test_default_metadata_is_read_by_humble_jazzy_and_kilted(tmp_path):
    info = _written_metadata(tmp_path)
    assert info['version'] == 8
    _humble_reads(info)
    _jazzy_reads(info)
    qos = {t['topic_metadata']['name']: t['topic_metadata']['offered_qos_profiles']
           for t in info['topics_with_message_count']}
    (latched,) = YAML(typ='safe').load(qos['/tf_static'])
    assert latched['durability'] == 1 and latched['depth'] == 1  # TRANSIENT_LOCAL in rmw
    assert len(_read_all(tmp_path / 'bag')) == 2  # and rosbags reads it


def test_metadata_version_9_is_jazzy_only(tmp_path):
    info = _written_metadata(tmp_path, metadata_version=9)
    assert info['version'] == 9
    _jazzy_reads(info)
    with pytest.raises(AssertionError, match='offered_qos_profiles must be a scalar'):
        _humble_reads(info)
    assert len(_read_all(tmp_path / 'bag')) == 2
    with pytest.raises(ValueError, match='metadata_version'):
        BagWriter(tmp_path / 'other', metadata_version=5)
