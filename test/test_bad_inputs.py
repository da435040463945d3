"""The bad-input and fault corpus (issue 13): every command fed what a new user, a broken
recorder or a killed job gives it, table-driven.

Each case runs ``handypriors ...`` in this process (the command line's ``main``) and asserts:

- the exit status (0, 1 bad input, 2 usage, 143 SIGTERM: cli/main.py);
- on an error, exactly one ``handypriors CMD: error:`` line, naming the problem (``problem``)
  and the fix (``fix``), and no traceback anywhere in the output;
- nothing lost: every existing path the command line names and every file in the case's
  folder has the same content afterwards (SHA-256 of every file), except the output a
  successful case writes; a failed case leaves no output behind;
- case-specific checks (``check``): e.g. one answer per input image on the track topic.

The inputs (a 6-frame synthetic bag and its variants, broken meshes) are made once per module
from the session's tiny sequence. The summary (cases, handled, tracebacks, data lost) is
printed at the end of the module (``-s`` shows it; the README quotes it).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip('rclpy', reason='rclpy is not installed (./run.sh test)')
from ros_helpers.synthetic import tiny_sequence  # noqa: E402

from handypriors_ros import interfaces  # noqa: E402
from handypriors_ros.bag import BagReader, BagWriter  # noqa: E402
from handypriors_ros.cli.main import main  # noqa: E402

N_IMAGES = 6
REFINE_SETTINGS = {'iterations': 2, 'hand_points': 200, 'object_points': 80,
                   'checkpoint_every': 1}
IMG, INFO, JS, TF, TFS, MASK, INIT = (
    interfaces.IMAGE_TOPIC, interfaces.CAMERA_INFO_TOPIC, interfaces.JOINT_STATES_TOPIC,
    interfaces.TF_TOPIC, interfaces.TF_STATIC_TOPIC, interfaces.MASK_TOPIC,
    interfaces.INITIAL_POSE_TOPIC)
TRACEBACK = re.compile(r'Traceback \(most recent call last\)|^\s+File ".*", line \d+',
                       re.MULTILINE)
TALLY = {'cases': 0, 'handled': 0, 'tracebacks': 0, 'data_lost': 0}


# --------------------------------------------------------------------------------------------
# inputs, made once
# --------------------------------------------------------------------------------------------
def _stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def _restamp(msg, ns: int):
    from handypriors_ros.bag.typestore import make_typestore
    Time = make_typestore().types['builtin_interfaces/msg/Time']
    header = dataclasses.replace(msg.header, stamp=Time(sec=ns // 1_000_000_000,
                                                        nanosec=ns % 1_000_000_000))
    return dataclasses.replace(msg, header=header)


def rewrite(src: Path, dst: Path, fn: Callable | None = None, *, raw: Callable | None = None):
    """A copy of bag ``src`` at ``dst``: each message through ``fn(topic, msg, i)`` (i: its
    index on its topic) returning [(topic, msg)] to write at its log time (msg None: drop).
    ``raw(topic, rawdata, i)`` may return other bytes instead (corrupt CDR)."""
    counts: dict[str, int] = {}
    with BagReader(src) as reader, BagWriter(dst) as writer:
        for m in reader.messages():
            i = counts.get(m.topic, 0)
            counts[m.topic] = i + 1
            if raw is not None:
                data = raw(m.topic, m.rawdata, i)
                if data is not None:
                    writer.write_raw(m.topic, m.msgtype, m.log_time_ns, data)
                    continue
            out = [(m.topic, m.deserialize())] if fn is None else fn(m.topic, m.deserialize(), i)
            for k, (topic, msg) in enumerate(out):
                if msg is not None:
                    writer.write(topic, m.log_time_ns + k, msg)
    return dst


def _image_like(msg, *, encoding=None, width=None, data=None):
    h = msg.height
    w = width if width is not None else msg.width
    enc = encoding or msg.encoding
    bpp = {'rgb8': 3, 'bgr8': 3, 'mono8': 1, 'mono16': 2, 'rgba8': 4, '32FC1': 4}[enc]
    if data is None:
        data = np.zeros(h * w * bpp, np.uint8)
    return dataclasses.replace(msg, width=w, encoding=enc, step=w * bpp, data=data)


@dataclass
class Workspace:
    """Paths of the shared inputs."""
    root: Path
    seq: Path
    bag: Path
    mesh: Path
    bags: dict[str, Path] = field(default_factory=dict)
    meshes: dict[str, Path] = field(default_factory=dict)
    params: Path | None = None
    track_bag: Path | None = None
    kill9: object = None


def _make_bags(ws: Workspace) -> None:
    src, root = ws.bag, ws.root / 'bags'
    root.mkdir()
    with BagReader(src) as reader:
        image_stamps = [_stamp(m.deserialize()) for m in reader.messages([IMG])]
    first = image_stamps[0]
    b = ws.bags

    def only(drop):
        return lambda t, m, i: [] if t in drop else [(t, m)]

    for name, drop in (('no_camera_info', {INFO}), ('no_joint_states', {JS}),
                       ('no_tf', {TF, TFS}), ('no_images', {IMG}),
                       ('no_initial_pose', {INIT}), ('no_mask', {MASK}),
                       ('only_images', {INFO, JS, TF, TFS, MASK, INIT})):
        b[name] = rewrite(src, root / name, only(drop))

    def early(t, m, i):  # the recording starts 5 ms after the first image
        if t in (JS, TF) and _stamp(m if t == JS else m.transforms[0]) < first + 5_000_000:
            return []
        return [(t, m)]
    b['early_image'] = rewrite(src, root / 'early_image', early)

    def images(pick, change):
        return lambda t, m, i: [(t, change(m) if t == IMG and pick(i) else m)]
    b['mono16_all'] = rewrite(src, root / 'mono16_all', images(
        lambda i: True, lambda m: _image_like(m, encoding='mono16')))
    b['mono16_one'] = rewrite(src, root / 'mono16_one', images(
        lambda i: i == 2, lambda m: _image_like(m, encoding='mono16')))
    b['rgba_one'] = rewrite(src, root / 'rgba_one', images(
        lambda i: i == 3, lambda m: _image_like(m, encoding='rgba8')))
    b['bgr8'] = rewrite(src, root / 'bgr8', images(
        lambda i: True, lambda m: dataclasses.replace(
            m, encoding='bgr8', data=np.ascontiguousarray(
                m.data.reshape(m.height, m.width, 3)[:, :, ::-1]).reshape(-1))))
    b['short_data_one'] = rewrite(src, root / 'short_data_one', images(
        lambda i: i == 1, lambda m: dataclasses.replace(m, data=m.data[:100])))
    b['empty_frame_id_one'] = rewrite(src, root / 'empty_frame_id_one', images(
        lambda i: i == 4, lambda m: dataclasses.replace(
            m, header=dataclasses.replace(m.header, frame_id=''))))

    def infos(pick, change):
        return lambda t, m, i: [(t, change(m) if t == INFO and pick(i) else m)]
    b['info_size_all'] = rewrite(src, root / 'info_size_all', infos(
        lambda i: True, lambda m: dataclasses.replace(m, width=m.width * 2,
                                                      height=m.height * 2)))
    b['info_size_one'] = rewrite(src, root / 'info_size_one', infos(
        lambda i: i == 2, lambda m: dataclasses.replace(m, width=m.width * 2,
                                                        height=m.height * 2)))
    b['info_zero_k'] = rewrite(src, root / 'info_zero_k', infos(
        lambda i: True, lambda m: dataclasses.replace(m, k=np.zeros(9), p=np.zeros(12))))

    def joints(pick, change):
        return lambda t, m, i: [(t, change(m) if t == JS and pick(i) else m)]

    def nan_joint(m):
        p = np.array(m.position, dtype=np.float64)
        p[5] = np.nan
        return dataclasses.replace(m, position=p)
    b['nan_joint_one'] = rewrite(src, root / 'nan_joint_one', joints(lambda i: i == 10,
                                                                     nan_joint))
    b['nan_joint_all'] = rewrite(src, root / 'nan_joint_all', joints(lambda i: True, nan_joint))
    b['joint_prefix'] = rewrite(src, root / 'joint_prefix', joints(
        lambda i: True, lambda m: dataclasses.replace(
            m, name=[n.replace('ah_', 'rh_') for n in m.name])))
    b['joint_short'] = rewrite(src, root / 'joint_short', joints(
        lambda i: i == 8, lambda m: dataclasses.replace(m, position=np.asarray(m.position)[:3])))

    def extra_image(after, stamp_of):
        """After image ``after`` (and its camera_info), one more at ``stamp_of(stamps)``."""
        def fn(t, m, i):
            out = [(t, m)]
            if t in (IMG, INFO) and i == after:
                out.append((t, _restamp(m, stamp_of(image_stamps, after))))
            return out
        return fn
    b['backwards_one'] = rewrite(src, root / 'backwards_one', extra_image(
        3, lambda s, i: s[i] - 20_000_000))
    b['duplicate_one'] = rewrite(src, root / 'duplicate_one', extra_image(3, lambda s, i: s[i]))

    def tf_gap(t, m, i):  # no hand TF from image 3 on
        if t == TF and _stamp(m.transforms[0]) > image_stamps[3] - 40_000_000:
            return []
        return [(t, m)]
    b['tf_gap'] = rewrite(src, root / 'tf_gap', tf_gap)

    def bad_init(t, m, i):
        if t != INIT:
            return [(t, m)]
        o = dataclasses.replace(m.pose.orientation, x=0.0, y=0.0, z=0.0, w=0.0)
        return [(t, dataclasses.replace(m, pose=dataclasses.replace(m.pose, orientation=o)))]
    b['init_zero_quaternion'] = rewrite(src, root / 'init_zero_quaternion', bad_init)

    def mask_size(t, m, i):
        return [(t, _image_like(m, width=m.width // 2) if t == MASK else m)]
    b['mask_size'] = rewrite(src, root / 'mask_size', mask_size)

    b['corrupt_cdr_one'] = rewrite(src, root / 'corrupt_cdr_one', raw=lambda t, d, i: (
        b'\x00\x01\x00\x00' + b'\xff' * 40 if t == IMG and i == 2 else None))

    # damaged storage
    mcap = next(src.glob('*.mcap'))
    size = mcap.stat().st_size
    for pct in (99, 95, 80, 50, 20, 2):
        dst = root / f'truncated_{pct}'
        shutil.copytree(src, dst)
        target = next(dst.glob('*.mcap'))
        target.write_bytes(mcap.read_bytes()[:size * pct // 100])
        b[f'truncated_{pct}'] = dst
    dst = root / 'zero_tail'
    shutil.copytree(src, dst)
    data = bytearray(mcap.read_bytes())
    data[size * 7 // 10:] = bytes(size - size * 7 // 10)
    next(dst.glob('*.mcap')).write_bytes(bytes(data))
    b['zero_tail'] = dst
    dst = root / 'no_metadata'
    shutil.copytree(src, dst)
    (dst / 'metadata.yaml').unlink()
    b['no_metadata'] = dst
    dst = root / 'bad_metadata'
    shutil.copytree(src, dst)
    (dst / 'metadata.yaml').write_text('rosbag2_bagfile_information: [this is: not, {valid\n')
    b['bad_metadata'] = dst
    (root / 'empty_dir').mkdir()
    b['empty_dir'] = root / 'empty_dir'
    (root / 'text.mcap').write_text('not a bag\n')
    b['text_file'] = root / 'text.mcap'
    (root / 'garbage.db3').write_bytes(os.urandom(4096))
    b['garbage_db3'] = root / 'garbage.db3'
    (root / 'empty.mcap').write_bytes(b'')
    b['empty_file'] = root / 'empty.mcap'
    b['single_file'] = mcap  # a bag given as its .mcap file: fine


def _make_meshes(ws: Workspace) -> None:
    import trimesh
    root = ws.root / 'meshes'
    root.mkdir()
    m = ws.meshes
    good = trimesh.load(ws.mesh, process=False)
    for name, factor in (('mm', 1000.0), ('cm', 100.0), ('inch', 1 / 0.0254),
                         ('tiny', 0.001), ('huge_m', 20.0)):
        scaled = good.copy()
        scaled.apply_scale(factor)
        m[name] = root / f'{name}.ply'
        scaled.export(m[name])
    (root / 'empty.ply').write_bytes(b'')
    m['empty'] = root / 'empty.ply'
    (root / 'garbage.ply').write_text('ply\nthis is not a mesh\n')
    m['garbage'] = root / 'garbage.ply'
    (root / 'mesh.xyz').write_text('0 0 0\n1 0 0\n0 1 0\n')
    m['unsupported'] = root / 'mesh.xyz'
    (root / 'folder.ply').mkdir()
    m['folder'] = root / 'folder.ply'
    (root / 'nan.obj').write_text('v 0 0 0\nv 0.1 0 0\nv nan 0.1 0\nv 0 0 0.1\n'
                                  'f 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n')
    m['nan'] = root / 'nan.obj'
    (root / 'degenerate.obj').write_text('v 0 0 0\nv 0.05 0 0\nv 0.1 0 0\nv 0.15 0 0\n'
                                         'f 1 2 3\nf 2 3 4\n')
    m['degenerate'] = root / 'degenerate.obj'
    (root / 'point.obj').write_text('v 0.1 0.1 0.1\nv 0.1 0.1 0.1\nv 0.1 0.1 0.1\nf 1 2 3\n')
    m['point'] = root / 'point.obj'
    (root / 'no_faces.obj').write_text('v 0 0 0\nv 0.1 0 0\nv 0 0.1 0\n')
    m['no_faces'] = root / 'no_faces.obj'
    (root / 'bad_index.obj').write_text('v 0 0 0\nv 0.1 0 0\nv 0 0.1 0\nf 1 2 9\n')
    m['bad_index'] = root / 'bad_index.obj'


@pytest.fixture(scope='module')
def ws(tmp_path_factory) -> Workspace:
    seq = tiny_sequence(tmp_path_factory)
    root = tmp_path_factory.mktemp('bad_inputs')
    w = Workspace(root=root, seq=seq, bag=seq / 'bag', mesh=seq / 'object.ply')
    start_kill9(w)
    _make_bags(w)
    _make_meshes(w)
    w.params = root / 'refine.yaml'
    w.params.write_text(yaml.safe_dump({'/**': {'ros__parameters': REFINE_SETTINGS}}))
    w.track_bag = root / 'tracked'
    assert main(['track', str(w.bag), '--object', str(w.mesh), '--out', str(w.track_bag),
                 '--quiet']) == 0
    yield w
    print(f'\nbad-input corpus: {TALLY["cases"]} cases, {TALLY["handled"]} handled, '
          f'{TALLY["tracebacks"]} tracebacks, {TALLY["data_lost"]} data lost')


# --------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One corpus case.

    Attributes:
        id: its name. argv: the command line, from (workspace, case folder).
        code: the exit status expected.
        problem, fix: regexes the error line must match (its problem, its fix); None for a
            success.
        setup: prepares the case folder (user files, an earlier output, a checkpoint).
        check: more assertions, with (workspace, case folder, stdout, stderr).
        output: the paths (in the case folder) a success may write.
        action: runs instead of ``main(argv)`` (returns the exit status), e.g. a signal.
    """
    id: str
    argv: Callable[[Workspace, Path], list[str]]
    code: int = 1
    problem: str | None = None
    fix: str | None = None
    setup: Callable[[Workspace, Path], None] | None = None
    check: Callable[[Workspace, Path, str, str], None] | None = None
    output: str | tuple[str, ...] = 'out'
    action: Callable[[Workspace, Path, list[str]], int] | None = None


CASES: list[Case] = []


def case(*args, **kwargs) -> None:
    CASES.append(Case(*args, **kwargs))


def track(bag=None, mesh=None, out='out', *extra):
    """argv of ``track`` (bag: a key of ws.bags or None = the good bag; mesh likewise)."""
    def argv(w: Workspace, d: Path) -> list[str]:
        return ['track', _bag(w, d, bag), '--object', _mesh(w, d, mesh), '--out',
                _out(w, d, out), '--quiet', *[_sub(w, d, x) for x in extra]]
    return argv


def refine(bag=None, mesh=None, out='out', *extra, params=True):
    def argv(w: Workspace, d: Path) -> list[str]:
        return ['refine', _bag(w, d, bag), '--object', _mesh(w, d, mesh), '--out',
                _out(w, d, out), '--quiet', *(['--params', str(w.params)] if params else []),
                *[_sub(w, d, x) for x in extra]]
    return argv


def _bag(w, d, bag):
    if bag is None:
        return str(w.bag)
    if bag in w.bags:
        return str(w.bags[bag])
    return _sub(w, d, bag)


def _mesh(w, d, mesh):
    if mesh is None:
        return str(w.mesh)
    if mesh in w.meshes:
        return str(w.meshes[mesh])
    return _sub(w, d, mesh)


def _out(w, d, out):
    return _sub(w, d, out) if out.startswith(('{', '/')) else str(d / out)


def _sub(w: Workspace, d: Path, text: str) -> str:
    """``{bag}``, ``{mesh}``, ``{seq}``, ``{case}``, ``{params}``, ``{tracked}`` in ``text``."""
    return (text.replace('{bag}', str(w.bag)).replace('{mesh}', str(w.mesh))
            .replace('{seq}', str(w.seq)).replace('{case}', str(d))
            .replace('{params}', str(w.params)).replace('{tracked}', str(w.track_bag)))


def write(name: str, text: str | bytes):
    def setup(w: Workspace, d: Path) -> None:
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        (p.write_bytes if isinstance(text, bytes) else p.write_text)(text)
    return setup


def setups(*fns):
    def setup(w, d):
        for f in fns:
            f(w, d)
    return setup


def user_folder(name='out'):
    """A folder of the user's: a thesis and a sub-folder."""
    return setups(write(f'{name}/thesis.tex', 'my thesis\n'), write(f'{name}/sub/data.csv',
                                                                   '1,2,3\n'))


def earlier_output(name='out', extra: str | None = None):
    """A bag this package wrote (``track``'s output) at ``name``, optionally with a file of
    the user's put into it."""
    def setup(w, d):
        shutil.copytree(w.track_bag, d / name)
        if extra:
            (d / name / extra).write_text('notes\n')
    return setup


def recorded_bag(name='out'):
    """A bag from 'ros2 bag record' (no marker of ours)."""
    def setup(w, d):
        shutil.copytree(w.bag, d / name)
        (d / name / '.handypriors_ros_bag').unlink()
    return setup


def answers(n_lost: int, kinds: tuple[str, ...] = (), *, images: int = N_IMAGES):
    """Check: one TrackedObject per input image; ``n_lost`` skipped images (a reason naming one
    of ``kinds``), each answered once: after initialisation by a predict-only estimate (reason
    ``'predict only: [kind] ...'``, a positive covariance that grew from the last answer, pose
    and /tf written), before it LOST with covariance[0] = -1 (track topic only)."""
    def check(w, d, out, err):
        with BagReader(d / 'out') as reader:
            counts = {t: n for t, (_, n) in reader.topics.items()}
            tracks = [m.deserialize() for m in reader.messages([interfaces.TRACK_TOPIC])]
        assert len(tracks) == images, (len(tracks), images)
        no_estimate = [t for t in tracks if t.pose.covariance[0] == -1]
        predicted = [i for i, t in enumerate(tracks)
                     if t.status_reason.startswith('predict only: [')]
        assert len(no_estimate) + len(predicted) == n_lost, [t.status_reason for t in tracks]
        first = next((i for i, t in enumerate(tracks) if t.pose.covariance[0] != -1), images)
        for t in no_estimate:
            assert t.status == 2 and t.status_reason.startswith('skipped: [')
            # no estimate only before initialisation, or out of time order (its twin answered)
            assert (tracks.index(t) < first or '[time_backwards]' in t.status_reason
                    or '[bad_frame]' in t.status_reason), t.status_reason
            assert not kinds or any(f'[{k}]' in t.status_reason for k in kinds), t.status_reason
        for i in predicted:
            t = tracks[i]
            assert not kinds or any(f'[{k}]' in t.status_reason for k in kinds), t.status_reason
            cov = np.asarray(t.pose.covariance).reshape(6, 6)
            assert np.all(np.diag(cov) > 0), cov
            if i > 0 and tracks[i - 1].pose.covariance[0] > 0:  # grown by the predict
                prev = np.asarray(tracks[i - 1].pose.covariance).reshape(6, 6)
                assert np.trace(cov[:3, :3]) > np.trace(prev[:3, :3])
        assert counts.get(interfaces.OBJECT_POSE_TOPIC, 0) == images - len(no_estimate)
        stamps = [t.header.stamp.sec * 10**9 + t.header.stamp.nanosec for t in tracks]
        assert len(set(stamps)) >= images - 1  # a duplicate image answers at its own stamp
        if n_lost:
            assert f'skipped: {n_lost} images' in out, out
        if no_estimate:
            assert 'LOST answers' in out, out
    return check


def refined(n_frames: int):
    def check(w, d, out, err):
        with BagReader(d / 'out') as reader:
            counts = {t: n for t, (_, n) in reader.topics.items()}
        assert counts[interfaces.OBJECT_POSE_TOPIC] == n_frames
    return check


def err_contains(*texts):
    def check(w, d, out, err):
        for t in texts:
            assert t in err, (t, err)
    return check


def both(*checks):
    def check(w, d, out, err):
        for c in checks:
            c(w, d, out, err)
    return check


# -- outputs: nothing the user owns is replaced; checked before any work ---------------------
for cmd, argv in (('track', track), ('refine', refine)):
    case(f'{cmd}-out-user-folder-overwrite', argv(None, None, 'out', '--overwrite'),
         setup=user_folder(), problem=r'is not a bag written by handypriors_ros',
         fix=r'refusing to replace it')
    case(f'{cmd}-out-user-folder', argv(None, None, 'out'), setup=user_folder(),
         problem=r'--out .*: exists', fix=r'use --overwrite')
    case(f'{cmd}-out-is-input-bag-overwrite', argv(None, None, '{bag}', '--overwrite'),
         problem=r'--out .*: is the input', fix=None)
    case(f'{cmd}-out-is-input-bag', argv(None, None, '{bag}'), problem=r'is the input')
    case(f'{cmd}-out-inside-input-bag', argv(None, None, '{bag}/out'),
         problem=r'is inside the input')
    case(f'{cmd}-out-contains-input', argv(None, None, '{seq}', '--overwrite'),
         problem=r'contains the input')
    case(f'{cmd}-out-is-mesh', argv(None, None, '{mesh}', '--overwrite'),
         problem=r'is the input')
    case(f'{cmd}-out-in-proc', argv(None, None, '/proc/handypriors/x'),
         problem=r'cannot write in /proc', fix=r'writable')
    case(f'{cmd}-out-parent-is-file', argv(None, None, '{case}/afile/out'),
         setup=write('afile', 'x\n'), problem=r'its parent .*afile is a file, not a folder',
         fix=r'give')
    case(f'{cmd}-out-recorded-bag-overwrite', argv(None, None, 'out', '--overwrite'),
         setup=recorded_bag(), problem=r'no \.handypriors_ros_bag marker',
         fix=r'refusing to replace it')
    case(f'{cmd}-out-own-bag-with-user-file', argv(None, None, 'out', '--overwrite'),
         setup=earlier_output('out', 'notes.txt'),
         problem=r'contains files handypriors_ros did not write \(notes\.txt\)',
         fix=r'refusing to replace it')
    case(f'{cmd}-out-own-bag-no-overwrite', argv(None, None, 'out'), setup=earlier_output(),
         problem=r'exists', fix=r'use --overwrite')
    case(f'{cmd}-out-is-a-file', argv(None, None, 'out', '--overwrite'),
         setup=write('out', 'my data\n'), problem=r'is a file, not a bag',
         fix=r'refusing to replace it')
    case(f'{cmd}-out-symlink-to-user-folder', argv(None, None, 'link', '--overwrite'),
         setup=setups(user_folder('real'), lambda w, d: (d / 'link').symlink_to(d / 'real')),
         problem=r'symbolic link', fix=r'refusing to replace it')
case('track-out-own-bag-overwrite-replaced', track(None, None, 'out', '--overwrite'), code=0,
     setup=earlier_output(), check=answers(0))
case('refine-out-own-bag-overwrite-replaced', refine(None, None, 'out', '--overwrite'),
     code=0, setup=earlier_output(), check=refined(N_IMAGES))

# refine's other outputs and inputs, all checked before the work
case('refine-report-in-proc', refine(None, None, 'out', '--report', '/proc/handypriors/r'),
     problem=r'--report .*cannot write in /proc', fix=r'writable')
case('refine-report-is-file', refine(None, None, 'out', '--report', '{case}/report'),
     setup=write('report', 'x\n'), problem=r'--report .*is a file, not a folder', fix=r'give')
case('refine-report-holds-earlier-report', refine(None, None, 'out', '--report',
                                                  '{case}/report'),
     setup=setups(write('report/summary.md', 'old\n'), write('report/mine.txt', 'keep\n')),
     problem=r'--report .*already holds summary\.md', fix=r'use --overwrite')
case('refine-report-is-input-bag', refine(None, None, 'out', '--report', '{bag}'),
     problem=r'--report .*is the input')
case('refine-report-inside-output', refine(None, None, 'out', '--report', '{case}/out/r'),
     problem=r'--report .*is the output bag .* or inside it', fix=r'give another folder')
case('refine-report-user-folder-kept', refine(None, None, 'out', '--report', '{case}/rep'),
     code=0, setup=write('rep/mine.txt', 'keep\n'), output=('out', 'rep'),
     check=lambda w, d, o, e: (d / 'rep' / 'summary.json').is_file()
     and (d / 'rep' / 'mine.txt').read_text() == 'keep\n' or pytest.fail('report'))
case('refine-checkpoint-in-proc', refine(None, None, 'out', '--checkpoint', '/proc/hp/c'),
     problem=r'--checkpoint .*cannot write in /proc', fix=r'writable')
case('refine-checkpoint-is-file', refine(None, None, 'out', '--checkpoint', '{case}/ck'),
     setup=write('ck', 'x\n'), problem=r'--checkpoint .*is a file, not a folder', fix=r'give')
case('refine-checkpoint-is-output', refine(None, None, 'out', '--checkpoint', '{case}/out'),
     problem=r'--checkpoint .*is the output bag', fix=r'give another folder')
case('refine-ground-truth-missing', refine(None, None, 'out', '--ground-truth',
                                           '{case}/gt.npz'),
     problem=r'--ground-truth .*file not found', fix=r'give the ground_truth\.npz')
case('refine-ground-truth-garbage', refine(None, None, 'out', '--ground-truth',
                                           '{case}/gt.npz'),
     setup=write('gt.npz', b'not an npz'), problem=r'--ground-truth .*expected an npz',
     fix=r'as handypriors generate writes')
case('refine-ground-truth-wrong-keys', refine(None, None, 'out', '--ground-truth',
                                              '{case}/gt.npz'),
     setup=lambda w, d: np.savez(d / 'gt.npz', poses=np.eye(4)),
     problem=r'--ground-truth .*expected an npz with stamps_ns', fix=r'generate writes')
case('refine-ground-truth-other-bag', refine(None, None, 'out', '--ground-truth',
                                             '{case}/gt.npz'),
     setup=lambda w, d: np.savez(d / 'gt.npz', stamps_ns=np.arange(6), T_cam_obj=np.tile(
         np.eye(4), (6, 1, 1)), K=np.eye(3)),
     problem=r'no pose for 6 image stamps', fix=r'is it the ground truth of this bag')
case('refine-init-missing', refine(None, None, 'out', '--init', '{case}/nothing'),
     problem=r'--init: not found', fix=r"give the output bag of 'handypriors track'")
case('refine-init-not-track-output', refine(None, None, 'out', '--init', '{bag}'),
     problem=r'--init .*no messages on /handypriors/object_pose', fix=r'its topics')
case('refine-init-from-track', refine(None, None, 'out', '--init', '{tracked}'), code=0,
     check=refined(N_IMAGES))
case('refine-init-text-file', refine(None, None, 'out', '--init', '{case}/t.mcap'),
     setup=write('t.mcap', 'text\n'), problem=r'--init .*cannot be read as a rosbag2 bag',
     fix=r'give a bag folder')

# -- input bags ------------------------------------------------------------------------------
for cmd, argv in (('track', track), ('refine', refine)):
    case(f'{cmd}-bag-missing', argv('{case}/nobag'), problem=r'BAG: not found',
         fix=r'give a rosbag2 folder')
    for name, problem in (('empty_dir', r'Expected metadata file'),
                          ('text_file', r'not an MCAP file'),
                          ('garbage_db3', r'not an SQLite database')):
        case(f'{cmd}-bag-{name}', argv(name),
             problem=r'BAG .*: cannot be read as a rosbag2 bag \(.*' + problem,
             fix=r'give a bag folder \(metadata\.yaml with \.mcap or \.db3 files\)')
    case(f'{cmd}-bag-empty-file', argv('empty_file'),  # a recording killed at once
         problem=r'BAG .*: cannot be read as a rosbag2 bag \(it is truncated or damaged: '
                 r'empty\.mcap ends at byte 0, inside the leading magic; no complete message',
         fix=r'give a bag folder \(metadata\.yaml with \.mcap or \.db3 files\)')
    case(f'{cmd}-bag-no-images', argv('no_images'), problem=r'no images on|expected messages '
         r'on /camera/camera/color/image_raw', fix=r'its topics|the bag has|image_topic')
    case(f'{cmd}-bag-only-images', argv('only_images'),
         problem=r'expected messages on /camera/camera/color/camera_info|initial pose',
         fix=r'the bag has|--initial-pose')
    case(f'{cmd}-bag-no-camera-info', argv('no_camera_info'),
         problem=r'expected messages on /camera/camera/color/camera_info',
         fix=r'camera_info_topic')
    case(f'{cmd}-bag-no-joint-states', argv('no_joint_states'),
         problem=r'expected messages on /joint_states', fix=r'joint_states_topic')
    for name, kind in (('no_tf', 'missing_tf'), ('mono16_all', 'bad_image'),
                       ('info_size_all', 'bad_camera_info'), ('info_zero_k', 'bad_camera_info'),
                       ('nan_joint_all', 'no_joint_states'), ('joint_prefix', 'no_joint_states')):
        case(f'{cmd}-bag-{name}', argv(name),
             problem=r'(none of its 6 images could be used|no image of .* could be tracked) '
                     r'\(.*6 ' + kind, fix=r'the warnings above say why')
    case(f'{cmd}-bag-truncated-2', argv('truncated_2'), problem=r'truncated|expected messages',
         fix=r'the bag has|its topics')
    case(f'{cmd}-bag-truncated-95-strict', argv('truncated_95', None, 'out', '--strict'),
         problem=r'--strict: bag .* is truncated', fix=r'leave out --strict')
    case(f'{cmd}-bag-zero-tail-strict', argv('zero_tail', None, 'out', '--strict'),
         problem=r'--strict: bag .* is truncated or damaged', fix=r'leave out --strict')
    case(f'{cmd}-bag-mono16-one-strict', argv('mono16_one', None, 'out', '--strict'),
         problem=r'--strict: .*(bad_image|cannot be (used|tracked))', fix=r'leave out --strict')
case('track-bag-no-metadata', track('no_metadata'), code=0, check=answers(0))
case('track-bag-single-mcap-file', track('single_file'), code=0, check=answers(0))
case('track-bag-bad-metadata', track('bad_metadata'), code=0)  # read without it
# track: every image answered; refine: the usable frames refined, the others reported
GOOD_BUT = (('early_image', 0, ()), ('mono16_one', 1, ('bad_image',)),
            ('rgba_one', 1, ('bad_image',)), ('short_data_one', 1, ('bad_image',)),
            ('info_size_one', 1, ('bad_camera_info',)), ('nan_joint_one', 0, ()),
            ('backwards_one', 1, ('time_backwards',)), ('duplicate_one', 1, ('time_backwards',)),
            ('empty_frame_id_one', 1, ('bad_image',)), ('tf_gap', 2, ('missing_tf',)),
            ('mask_size', 0, ()), ('no_mask', 0, ()), ('bgr8', 0, ()), ('joint_short', 0, ()),
            ('corrupt_cdr_one', 0, ()), ('truncated_95', None, ()), ('zero_tail', None, ()))
REFINE_TOO = ('early_image', 'nan_joint_one', 'backwards_one', 'duplicate_one', 'mono16_one',
              'truncated_95')
for name, lost, kinds in GOOD_BUT:
    extra = 1 if name in ('backwards_one', 'duplicate_one') else 0
    images = N_IMAGES + extra - (1 if name == 'corrupt_cdr_one' else 0)  # with a stamp
    case(f'track-bag-{name}', track(name), code=0,
         check=answers(lost, kinds, images=images) if lost is not None else None)
    if name in REFINE_TOO:  # the same reader: the kinds that once failed refine's whole bag
        case(f'refine-bag-{name}', refine(name), code=0,
             check=refined(images - lost) if lost is not None else None)
case('track-bag-truncated-50', track('truncated_50'), code=0,
     check=err_contains('truncated_bag', 'complete messages'))
case('track-bag-truncated-99', track('truncated_99'), code=0, check=answers(0))
case('track-bag-no-initial-pose', track('no_initial_pose'),
     problem=r'no initial pose: .* has no /handypriors/initial_pose', fix=r'--initial-pose')
case('refine-bag-no-initial-pose', refine('no_initial_pose'),
     problem=r'no initial pose', fix=r'--init TRACK_BAG or --initial-pose')
case('track-bag-no-initial-pose-given', track('no_initial_pose', None, 'out',
                                              '--initial-pose', '0 0 0.5 0 0 0 1'), code=0)
case('track-bag-init-zero-quaternion', track('init_zero_quaternion'),
     problem=r'could be tracked|no_initial_pose|initial pose', fix=r'initial pose|--initial')
case('refine-bag-init-zero-quaternion', refine('init_zero_quaternion'),
     problem=r'no initial pose', fix=r'--initial-pose')

# -- meshes: unreadable, broken, wrong units -------------------------------------------------
MESH_FIX = r'give a readable triangle mesh \(OBJ, PLY'
MESHES = (('missing', r'mesh file not found', r'--object'),
          ('empty', r'(empty|cannot read|no triangle)', MESH_FIX),
          ('garbage', r'(cannot read|empty|no triangle)', MESH_FIX),
          ('unsupported', r'unsupported mesh file type', r'expected one of'),
          ('folder', r'mesh file not found|is a folder', r'--object'),
          ('nan', r'NaN or infinite', MESH_FIX),
          ('degenerate', r'degenerate|no extent|empty', MESH_FIX),
          ('point', r'no extent|degenerate|empty', r'all vertices at one point|' + MESH_FIX),
          ('no_faces', r'expected a triangle mesh, got a PointCloud', MESH_FIX),
          ('bad_index', r'out of range|cannot read|empty', MESH_FIX),
          ('mm', r'diameter 186 m .* outside 1 cm - 1 m', r'millimetres: use --object-scale 0\.001'),
          ('cm', r'diameter 18\.6 m', r'centimetres: use --object-scale 0\.01'),
          ('inch', r'diameter 7\.3\d m', r'(centimetres|inches): use --object-scale 0\.0'),
          ('tiny', r'diameter 0\.186 mm', r'give --object-scale'),
          ('huge_m', r'diameter 3\.7\d m', r'use --object-scale'))
for cmd, argv in (('track', track), ('refine', refine)):
    for name, problem, fix in MESHES:
        mesh = '{case}/none.ply' if name == 'missing' else name
        case(f'{cmd}-mesh-{name}', argv(None, mesh), problem=problem, fix=fix)
    case(f'{cmd}-mesh-mm-scaled', argv(None, 'mm', 'out', '--object-scale', '0.001'), code=0)
    case(f'{cmd}-mesh-wrong-scale', argv(None, None, 'out', '--object-scale', '0.001'),
         problem=r'diameter 0\.186 mm after --object-scale 0\.001',
         fix=r'metres: use --object-scale 1')
    for value in ('0', '-1', 'abc', 'nan'):
        case(f'{cmd}-object-scale-{value}', argv(None, None, 'out', '--object-scale', value),
             problem=r'--object-scale', fix=r'expected')

# -- parameters ------------------------------------------------------------------------------
PARAMS = (('unknown-key', 'object_scal: 0.001\n', r"unknown \w+ parameters \['object_scal'\]",
           r'known: \['),
          ('nested-unknown', 'weights: {masks: 1.0}\n', r"unknown \w+ parameters", r'known:'),
          ('ros-unknown', '/**:\n  ros__parameters:\n    devic: cpu\n',
           r"unknown \w+ parameters \['devic'\]", r'known:'),
          ('bad-yaml', 'a: [1, 2\n', r'not valid YAML', r'line|column'),
          ('tabs', 'a:\n\t- 1\n', r'not valid YAML', r'line|column'),
          ('list', '- 1\n- 2\n', r'expected a mapping, got list', r"write 'name: value' lines"),
          ('wrong-type', 'object_scale: big\n', r'object_scale: expected a finite number',
           r"got 'big'"),
          ('out-of-range', 'object_scale: 0\n', r'object_scale: expected a value in',
           r'got 0'),
          ('bad-choice', 'device: gpu\n', r"device: expected one of", r"'cpu'"),
          ('bool-as-text', 'overwrite: maybe\n', r'overwrite: expected true or false',
           r'maybe'),
          ('binary', b'\x00\xff\xfe garbage', r'--params .*: not a text file',
           r'give a YAML parameters file'))
for cmd, argv in (('track', track), ('refine', refine)):
    for name, text, problem, fix in PARAMS:
        case(f'{cmd}-params-{name}', argv(None, None, 'out', '--params', '{case}/p.yaml'),
             setup=write('p.yaml', text), problem=problem, fix=fix)
    case(f'{cmd}-params-missing', argv(None, None, 'out', '--params', '{case}/none.yaml'),
         problem=r'--params: parameter file not found', fix=r'none\.yaml')
    case(f'{cmd}-params-folder', argv(None, None, 'out', '--params', '{case}'),
         problem=r'--params: .* is a folder', fix=r'give a YAML parameters file')
    for name, value, problem in (('six', '0 0 0.5 0 0 1', r'expected 7'),
                                 ('text', 'a b c d e f g', r'expected 7 numbers'),
                                 ('zero-quaternion', '0 0 0.5 0 0 0 0',
                                  r'expected a non-zero quaternion'),
                                 ('nan', '0 0 nan 0 0 0 1', r'expected 7 finite')):
        case(f'{cmd}-initial-pose-{name}', argv(None, None, 'out', '--initial-pose', value),
             problem=r'--initial-pose: ' + problem, fix=r'x y z qx qy qz qw|got')
    case(f'{cmd}-device-cuda', argv(None, None, 'out', '--device', 'cuda'),
         problem=r"device: 'cuda' requested but torch sees no CUDA device",
         fix=r'use --device cpu')
    case(f'{cmd}-device-bogus', argv(None, None, 'out', '--device', 'tpu'),
         problem=r'device: expected one of', fix=r"'cpu'")
    case(f'{cmd}-image-topic-wrong', argv(None, None, 'out', '--params', '{case}/p.yaml'),
         setup=write('p.yaml', 'image_topic: /camera/color/image_raw\n'),
         problem=r'/camera/color/image_raw', fix=r'its topics|the bag has')
    case(f'{cmd}-joint-prefix-wrong', argv(None, None, 'out', '--params', '{case}/p.yaml'),
         setup=write('p.yaml', 'joint_prefix: xx_\n'),
         problem=r'(none of its 6 images could be used|no image of .* could be tracked)',
         fix=r'joint_prefix')
case('refine-iterations-zero', refine(None, None, 'out', '--iterations', '0'),
     problem=r'iterations', fix=r'expected|got')
case('refine-iterations-text', refine(None, None, 'out', '--iterations', 'many'),
     problem=r'--iterations: expected an integer', fix=r"got 'many'")
case('refine-resume-and-fresh', refine(None, None, 'out', '--resume', '--fresh'),
     problem=r'--resume and --fresh', fix=r'give one')
case('refine-settings-bad', refine(None, None, 'out', '--params', '{case}/p.yaml',
                                   params=False),
     setup=write('p.yaml', 'iterations: -5\n'), problem=r'iterations', fix=r'expected|got')

# -- usage (argparse, exit 2) ----------------------------------------------------------------
case('usage-unknown-flag', lambda w, d: ['track', str(w.bag), '--object', str(w.mesh), '--out',
                                         str(d / 'out'), '--frobnicate'], code=2)
case('usage-missing-object', lambda w, d: ['track', str(w.bag), '--out', str(d / 'out')],
     code=2)
case('usage-missing-bag', lambda w, d: ['refine', '--object', str(w.mesh), '--out',
                                        str(d / 'out')], code=2)
case('usage-no-command', lambda w, d: [], code=2)
case('usage-unknown-command', lambda w, d: ['trak'], code=2)


# -- checkpoints: kill, stop, resume ---------------------------------------------------------
def _interrupted(w: Workspace, d: Path, argv: list[str], *, at: int = 1) -> None:
    """Run ``argv`` (a refine) until iteration ``at`` is checkpointed, then stop it by an
    exception (a kill: no clean-up runs)."""
    import handypriors_ros.jobs.refine as job_module

    class Killed(BaseException):
        pass
    original = job_module.run_refine

    def run(job, **kwargs):
        def progress(done, total):
            if done > at:
                raise Killed
        return original(job, **{**kwargs, 'progress': progress})
    job_module.run_refine = run
    try:
        import handypriors_ros.cli.refine as cli_refine
        cli_refine.run_refine = run
        with pytest.raises(Killed):
            main(argv)
    finally:
        job_module.run_refine = original
        cli_refine.run_refine = original


def _settings(iterations):
    return yaml.safe_dump({'iterations': iterations, 'hand_points': 200, 'object_points': 80,
                           'checkpoint_every': 1})


def interrupted_run(iterations=4):
    def setup(w, d):
        (d / 'p.yaml').write_text(_settings(iterations))
        _interrupted(w, d, ['refine', str(w.bag), '--object', str(w.mesh), '--out',
                            str(d / 'out'), '--quiet', '--params', str(d / 'p.yaml')])
        assert (d / 'out.checkpoint' / 'refine_checkpoint.pt').is_file()
        assert not (d / 'out').exists()
    return setup


def ckpt_kept(w, d, out, err):
    assert (d / 'out.checkpoint' / 'refine_checkpoint.pt').is_file()


case('refine-rerun-keeps-checkpoint', refine(None, None, 'out', '--params', '{case}/p.yaml',
                                             params=False),
     setup=interrupted_run(), problem=r'holds the checkpoint of an interrupted run',
     fix=r'add --resume to continue it, or --fresh', check=ckpt_kept)
case('refine-rerun-resume', refine(None, None, 'out', '--params', '{case}/p.yaml', '--resume',
                                   params=False),
     setup=interrupted_run(), code=0, output=('out', 'out.checkpoint'),
     check=both(refined(N_IMAGES), lambda w, d, o, e: 'resumed at iteration' in o
                or pytest.fail(o)))
case('refine-rerun-fresh', refine(None, None, 'out', '--params', '{case}/p.yaml', '--fresh',
                                  params=False), setup=interrupted_run(), code=0,
     output=('out', 'out.checkpoint'), check=refined(N_IMAGES))
case('refine-resume-other-settings', refine(None, None, 'out', '--params', '{case}/p2.yaml',
                                            '--resume', params=False),
     setup=setups(interrupted_run(), write('p2.yaml', _settings(4).replace(
         'object_points: 80', 'object_points: 90'))),
     problem=r'belongs to other inputs or settings', fix=r'use --fresh', check=ckpt_kept)
case('refine-resume-corrupt-checkpoint', refine(None, None, 'out', '--params', '{case}/p.yaml',
                                                '--resume', params=False),
     setup=setups(interrupted_run(), lambda w, d: (
         d / 'out.checkpoint' / 'refine_checkpoint.pt').write_bytes(b'garbage')),
     problem=r'cannot be read', fix=r'use --fresh')


def sigterm(w: Workspace, d: Path, argv: list[str]) -> int:
    """SIGTERM to this process during the second iteration: the handler asks the job to stop;
    it checkpoints and exits 143."""
    import handypriors_ros.cli.refine as cli_refine
    original = cli_refine.run_refine

    def run(job, **kwargs):
        outer = kwargs.get('progress')

        def progress(done, total):
            if outer is not None:
                outer(done, total)
            if done == 1:
                os.kill(os.getpid(), signal.SIGTERM)
        return original(job, **{**kwargs, 'progress': progress})
    cli_refine.run_refine = run
    try:
        return main(argv)
    finally:
        cli_refine.run_refine = original


case('refine-sigterm-checkpoints', refine(None, None, 'out', '--params', '{case}/p.yaml',
                                          params=False),
     setup=write('p.yaml', _settings(4)), action=sigterm, code=143, output=('out.checkpoint',),
     problem=r'stopped \(SIGTERM\): checkpoint of iteration \d/4 written',
     fix=r'continue with the same command and --resume', check=ckpt_kept)


def start_kill9(w: Workspace) -> None:
    """Start a real ``handypriors refine`` process (200 iterations) and ``kill -9`` it, from a
    thread, as soon as its first checkpoint is there (it starts while other cases run)."""
    import threading
    folder = w.root / 'kill9'
    folder.mkdir()
    (folder / 'p.yaml').write_text(_settings(200))
    argv = ['refine', str(w.bag), '--object', str(w.mesh), '--out', str(folder / 'out'),
            '--quiet', '--params', str(folder / 'p.yaml')]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, '-m', 'handypriors_ros.cli.main', *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    ckpt = folder / 'out.checkpoint' / 'refine_checkpoint.pt'

    def watch():
        deadline = time.monotonic() + 300
        while not ckpt.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.kill()  # SIGKILL: no handler, no clean-up
        proc.wait()
    w.kill9 = threading.Thread(target=watch, daemon=True)
    w.kill9.start()


def kill9(w: Workspace, d: Path, argv: list[str]) -> int:
    """After the ``kill -9`` (:func:`start_kill9`): its checkpoint is whole and no output was
    left; the same job with --resume (fewer iterations: resume may change them) finishes."""
    w.kill9.join(timeout=300)
    folder = w.root / 'kill9'
    assert (folder / 'out.checkpoint' / 'refine_checkpoint.pt').is_file()
    assert not (folder / 'out').exists(), 'the killed run left an output'
    shutil.copytree(folder / 'out.checkpoint', d / 'out.checkpoint')
    return main([*argv, '--resume'])


case('refine-kill-9-resume', refine(None, None, 'out', '--params', '{case}/p.yaml',
                                    params=False),
     setup=write('p.yaml', _settings(3)), action=kill9, code=0,
     output=('out', 'out.checkpoint'), check=refined(N_IMAGES))


# -- the other commands ----------------------------------------------------------------------
def generate(*extra):
    return lambda w, d: ['generate', *[_sub(w, d, x) for x in extra]]


case('generate-out-is-file', generate('--out', '{case}/f', '--frames', '2'),
     setup=write('f', 'x\n'), problem=r'--out .*is a file, not a folder', fix=r'give')
case('generate-out-user-folder', generate('--out', '{case}/u', '--frames', '2'),
     setup=write('u/bag', 'my file\n'), problem=r'--out .*already holds bag',
     fix=r'use --overwrite')
case('generate-out-user-folder-overwrite', generate('--out', '{case}/u', '--frames', '2',
                                                    '--overwrite'),
     setup=write('u/bag', 'my file\n'), problem=r'--out .*is a file, not a bag',
     fix=r'refusing to replace it')
case('generate-out-in-proc', generate('--out', '/proc/hp/g', '--frames', '2'),
     problem=r'cannot write in /proc', fix=r'writable')
case('generate-frames-zero', generate('--out', '{case}/g', '--frames', '0'),
     problem=r'--frames: expected a finite value >= 2', fix=r'got 0')
case('generate-fps-negative', generate('--out', '{case}/g', '--fps', '-3'),
     problem=r'--fps: expected', fix=r'got -3')
case('generate-object-missing', generate('--out', '{case}/g', '--object', '{case}/none.ply'),
     problem=r'neither a built-in object', fix=r'mustard_bottle')
case('generate-object-mm', lambda w, d: ['generate', '--out', str(d / 'g'), '--object',
                                         str(w.meshes['mm'])],
     problem=r'diameter 186 m', fix=r'use --object-scale 0\.001')
case('generate-object-garbage', lambda w, d: ['generate', '--out', str(d / 'g'), '--object',
                                              str(w.meshes['garbage'])],
     problem=r'cannot read|empty|no triangle', fix=r'ply|mesh')


def demo(*extra):
    return lambda w, d: ['demo', *[_sub(w, d, x) for x in extra]]


case('demo-out-user-folder', demo('--out', '{case}/u', '--frames', '2'),
     setup=user_folder('u'), problem=r'not a demo results folder',
     fix=r'give a new or empty folder')
case('demo-out-is-file', demo('--out', '{case}/u', '--frames', '2'), setup=write('u', 'x\n'),
     problem=r'is a file, not a folder', fix=r'give a new folder')
case('demo-out-in-proc', demo('--out', '/proc/hp/demo', '--frames', '2'),
     problem=r'cannot write in /proc', fix=r'writable')
case('demo-out-marked-but-estimates-is-file', demo('--out', '{case}/u', '--frames', '2'),
     setup=setups(write('u/.handypriors_demo', ''), write('u/estimates', 'mine\n')),
     problem=r'estimates is not a folder the demo wrote', fix=r'move it away')
case('demo-frames-one', demo('--out', '{case}/u', '--frames', '1'),
     problem=r'--frames: expected at least 2', fix=r'got 1')


def urdf(*extra):
    return lambda w, d: ['urdf', *[_sub(w, d, x) for x in extra]]


case('urdf-out-user-file', urdf('--out', '{case}/hand.urdf'), setup=write('hand.urdf', 'mine'),
     problem=r'exists', fix=r'use --overwrite')
case('urdf-out-user-file-overwrite', urdf('--out', '{case}/hand.urdf', '--overwrite'),
     setup=write('hand.urdf', '<robot name="mine"/>\n'),
     problem=r'is not a URDF written by handypriors urdf', fix=r'choose another file name')
case('urdf-out-own-file-overwrite', urdf('--out', '{case}/out', '--overwrite'), code=0,
     setup=lambda w, d: main(['urdf', '--out', str(d / 'out'), '--side', 'left']) == 0
     or pytest.fail('urdf'),
     check=lambda w, d, o, e: 'allegro_hand_right' in (d / 'out').read_text()
     or pytest.fail('not replaced'))
case('urdf-out-folder', urdf('--out', '{case}/dir'), setup=write('dir/x', 'x'),
     problem=r'is a folder', fix=r'give a file name')
case('urdf-out-in-proc', urdf('--out', '/proc/hp/hand.urdf'),
     problem=r'cannot (write in|be written)', fix=r'writable')
case('urdf-out-parent-file', urdf('--out', '{case}/f/hand.urdf'), setup=write('f', 'x'),
     problem=r'is a file, not a folder')
case('urdf-bad-side', urdf('--side', 'middle'), code=2)


# --------------------------------------------------------------------------------------------
# the runner
# --------------------------------------------------------------------------------------------
def _digest(path: Path) -> dict[str, str]:
    """{relative path: sha256} of a file or every file under a folder (links not followed)."""
    out = {}
    if path.is_symlink():
        return {'.': 'link:' + os.readlink(path)}
    if path.is_file():
        return {'.': hashlib.sha256(path.read_bytes()).hexdigest()}
    if path.is_dir():
        for p in sorted(path.rglob('*')):
            if p.is_symlink():
                out[str(p.relative_to(path))] = 'link:' + os.readlink(p)
            elif p.is_file():
                out[str(p.relative_to(path))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _protected(argv: list[str], d: Path) -> dict[Path, dict[str, str]]:
    """Digests of every existing path named on the command line and of the case folder."""
    paths = {Path(a) for a in argv if a.startswith('/') and not a.startswith('/proc')
             and (Path(a).exists() or Path(a).is_symlink())}
    paths.add(d)
    return {p: _digest(p) for p in paths}


def _without(digests: dict[Path, dict[str, str]], allowed: list[Path]
             ) -> dict[Path, dict[str, str]]:
    """``digests`` less the files under the ``allowed`` paths (a successful case's outputs)."""
    out = {}
    for root, digest in digests.items():
        if any(root == a or a in root.parents for a in allowed):
            continue
        keep = {}
        for rel, h in digest.items():
            full = root if rel == '.' else root / rel
            if not any(full == a or a in full.parents for a in allowed):
                keep[rel] = h
        out[root] = keep
    return out


@pytest.mark.parametrize('c', CASES, ids=[c.id for c in CASES])
def test_bad_input(ws: Workspace, c: Case, tmp_path, capsys):
    d = tmp_path
    TALLY['cases'] += 1
    if c.setup is not None:
        c.setup(ws, d)
    argv = c.argv(ws, d)
    before = _protected(argv, d)
    capsys.readouterr()
    try:
        code = c.action(ws, d, argv) if c.action is not None else main(argv)
    except SystemExit as exc:  # argparse: usage
        code = exc.code
    out, err = capsys.readouterr()
    text = out + err
    if TRACEBACK.search(text):
        TALLY['tracebacks'] += 1
    assert not TRACEBACK.search(text), text
    assert code == c.code, f'exit {code}, expected {c.code}: {err[-2000:]}'
    outputs = (c.output,) if isinstance(c.output, str) else c.output
    allowed = [d / o for o in outputs] if code == 0 or isinstance(c.output, tuple) else []
    unchanged = _without(before, allowed) == _without(_protected(argv, d), allowed)
    if not unchanged:
        TALLY['data_lost'] += 1
    assert unchanged, 'an input or earlier work changed'
    if code != 0 and code != 2:
        lines = [line for line in err.splitlines() if ': error: ' in line]
        assert len(lines) == 1, err
        line = lines[0]
        assert re.match(r'handypriors [a-z-]+: error: \S', line), line
        assert c.problem is not None and re.search(c.problem, line), (c.problem, line)
        if c.fix:
            assert re.search(c.fix, line), ('fix', c.fix, line)
        leftovers = [p for p in d.rglob('.*') if p.name != '.handypriors_ros_bag'
                     and not p.name.startswith('.handypriors_demo')]
        assert not leftovers, leftovers  # no half-written temporary left
    elif code == 2:
        assert 'usage:' in err or 'usage:' in out
    if c.check is not None:
        c.check(ws, d, out, err)
    TALLY['handled'] += 1


def test_corpus_size():
    """The issue asks for at least 120 cases."""
    assert len(CASES) >= 120, len(CASES)
    assert len({c.id for c in CASES}) == len(CASES)


# --------------------------------------------------------------------------------------------
# the pieces behind the corpus
# --------------------------------------------------------------------------------------------
def test_stop_on_signals_sets_the_request_then_interrupts_and_restores_the_handlers():
    from handypriors_ros.jobs.stop import EXIT_SIGTERM, StopRequest, stop_on_signals

    previous = signal.getsignal(signal.SIGTERM)
    stop = StopRequest()
    with stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.reason == 'SIGTERM' and stop.exit_code == EXIT_SIGTERM
        with pytest.raises(KeyboardInterrupt):  # a second signal: at once
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is previous
    stopped = stop.stopped('saved')
    assert stopped.exit_code == 143 and str(stopped) == 'stopped (SIGTERM): saved'


def test_run_refine_stop_request_checkpoints_and_resume_keyword_finishes(ws, tmp_path):
    """The node's path: a StopRequest set while the job runs; the keyword-only resume."""
    import argparse

    from handypriors_ros.cli.refine import add_arguments
    from handypriors_ros.jobs.refine import REFINE_SCHEMA, RefineJob, run_refine
    from handypriors_ros.jobs.stop import JobStopped, StopRequest

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    (tmp_path / 'p.yaml').write_text(_settings(3))
    job = RefineJob.from_values(REFINE_SCHEMA.values_from_args(parser.parse_args(
        [str(ws.bag), '--object', str(ws.mesh), '--out', str(tmp_path / 'out'), '--params',
         str(tmp_path / 'p.yaml')])))
    stop = StopRequest()

    def progress(done, total):
        if done == 1:
            stop.request('node shutdown')
    with pytest.raises(JobStopped, match=r'stopped \(node shutdown\): checkpoint of iteration '
                                         r'1/3') as raised:
        run_refine(job, progress=progress, stop=stop)
    assert raised.value.exit_code == 1
    assert (tmp_path / 'out.checkpoint' / 'refine_checkpoint.pt').is_file()
    assert not (tmp_path / 'out').exists()
    # a writer killed mid-write (a Ray worker when its batch is interrupted) left its temporary
    (tmp_path / 'out.checkpoint' / '.refine_checkpoint.pt.4242.tmp').write_bytes(b'half')
    outcome = run_refine(job, resume=True)
    assert outcome.result.resumed_from == 1 and outcome.result.iterations == 3
    assert not (tmp_path / 'out.checkpoint').exists()  # ours, removed after success


def test_object_size_check_against_scipy_diameter(ws):
    """The diameter the check uses is the largest vertex distance (scipy's pdist); the limits
    are 1 cm and 1 m; the unit named is the one that brings the size nearest 10 cm."""
    import trimesh
    from scipy.spatial.distance import pdist

    from handypriors_ros.core.models.object_model import (ObjectSizeError, check_object_size,
                                                          mesh_diameter)
    mesh = trimesh.load(ws.mesh, process=False)
    assert mesh_diameter(mesh.vertices) == pytest.approx(pdist(mesh.vertices).max(), rel=1e-9)
    for ok in (0.01, 0.1, 1.0):
        check_object_size(ok)
    cases = ((186.0, 1.0, 'millimetres: use --object-scale 0.001'),
             (0.000186, 0.001, 'metres: use --object-scale 1'),
             (15.0, 1.0, 'centimetres: use --object-scale 0.01'),
             (0.005, 1.0, "give --object-scale with the factor"))
    for diameter, scale, fix in cases:
        with pytest.raises(ObjectSizeError, match=re.escape(fix)):
            check_object_size(diameter, scale=scale, scale_flag='--object-scale')
    with pytest.raises(ObjectSizeError, match='no extent'):
        check_object_size(0.0)
