"""Tests of handypriors_ros.core.geometry.transform_buffer against numpy / scipy references."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from handypriors_ros.core.errors import HandyPriorsError, InputError
from handypriors_ros.core.geometry import (
    ConnectivityError,
    ExtrapolationError,
    StaleTransformError,
    StampedTransform,
    TransformBuffer,
    TransformError,
    UnknownFrameError,
)

MS = 1_000_000  # ns
# world -> a -> b -> c and world -> d; e -> f is a separate tree.
DYNAMIC_EDGES = [('world', 'a'), ('a', 'b'), ('b', 'c')]


def _matrix(q_xyzw, t):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(q_xyzw).as_matrix()
    T[:3, 3] = t
    return T


class _Reference:
    """Random samples of every dynamic edge, and scipy-based evaluation at any time."""

    def __init__(self, seed=0, n=20, step_ns=10 * MS):
        rng = np.random.default_rng(seed)
        self.stamps = np.arange(n) * step_ns + 1000 * MS
        self.samples = {}
        for k, edge in enumerate(DYNAMIC_EDGES):
            self.samples[edge] = (Rotation.random(n, random_state=seed * 10 + k),
                                  rng.normal(size=(n, 3)))
        self.T_world_d = _matrix(Rotation.random(random_state=seed + 99).as_quat(),
                                 rng.normal(size=3))

    def transforms(self):
        for edge, (rots, trans) in self.samples.items():
            for i, stamp in enumerate(self.stamps):
                yield StampedTransform(edge[0], edge[1], int(stamp), trans[i], rots[i].as_quat())

    def edge_at(self, edge, stamp):
        rots, trans = self.samples[edge]
        R = Slerp(self.stamps, rots)(stamp).as_matrix()
        t = np.array([np.interp(stamp, self.stamps, trans[:, j]) for j in range(3)])
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, t
        return T

    def T_world(self, frame, stamp):
        T = np.eye(4)
        if frame == 'd':
            return self.T_world_d.copy()
        for edge in DYNAMIC_EDGES:
            if frame == edge[0]:
                break
            T = T @ self.edge_at(edge, stamp)
            if frame == edge[1]:
                break
        return T


def _filled_buffer(ref, shuffle_seed=None, **kwargs):
    buf = TransformBuffer(**kwargs)
    tfs = list(ref.transforms())
    if shuffle_seed is not None:
        np.random.default_rng(shuffle_seed).shuffle(tfs)
    for tf in tfs:
        assert buf.set_transform(tf, is_static=False, authority='test')
    buf.set_transform(StampedTransform.from_matrix('world', 'd', 0, ref.T_world_d),
                      is_static=True, authority='calibration')
    return buf


PAIRS = [('world', 'c'), ('c', 'world'), ('d', 'c'), ('b', 'd'), ('a', 'c'), ('c', 'a'),
         ('b', 'b'), ('d', 'world')]


@pytest.mark.parametrize('target,source', PAIRS)
def test_chain_matches_numpy_composition(target, source):
    ref = _Reference(seed=1)
    buf = _filled_buffer(ref)
    # At sample stamps, at midpoints and at arbitrary times inside the range.
    stamps = [int(ref.stamps[3]), int((ref.stamps[5] + ref.stamps[6]) // 2),
              int(ref.stamps[0]), int(ref.stamps[-1]), int(ref.stamps[7]) + 1234567]
    for stamp in stamps:
        expected = np.linalg.inv(ref.T_world(target, stamp)) @ ref.T_world(source, stamp)
        out = buf.lookup_transform(target, source, stamp)
        assert out.dtype == np.float64 and out.shape == (4, 4)
        np.testing.assert_allclose(out, expected, atol=1e-12)
        assert buf.can_transform(target, source, stamp)


def test_midpoint_interpolation_matches_scipy_slerp():
    buf = TransformBuffer()
    r = Rotation.random(2, random_state=3)
    t = np.array([[0.0, 1.0, 2.0], [1.0, -1.0, 4.0]])
    for i, stamp in enumerate([100 * MS, 200 * MS]):
        buf.set_transform(StampedTransform('p', 'c', stamp, t[i], r[i].as_quat()),
                          is_static=False)
    for alpha in (0.5, 0.1, 0.77):
        stamp = int(100 * MS + alpha * 100 * MS)
        out = buf.lookup_transform('p', 'c', stamp)
        np.testing.assert_allclose(out[:3, :3], Slerp([0, 1], r)(alpha).as_matrix(), atol=1e-12)
        np.testing.assert_allclose(out[:3, 3], (1 - alpha) * t[0] + alpha * t[1], atol=1e-12)


def test_interpolation_takes_shorter_arc_and_handles_equal_rotations():
    buf = TransformBuffer()
    q = Rotation.from_euler('z', 0.2).as_quat()
    buf.set_transform(StampedTransform('p', 'c', 0 + 1, [0, 0, 0], q), is_static=False)
    buf.set_transform(StampedTransform('p', 'c', 11, [0, 0, 0], -q), is_static=False)  # same
    np.testing.assert_allclose(buf.lookup_transform('p', 'c', 6)[:3, :3],
                               Rotation.from_quat(q).as_matrix(), atol=1e-15)
    buf.set_transform(StampedTransform('p', 'c', 21, [0, 0, 0],
                                       -Rotation.from_euler('z', 0.4).as_quat()),
                      is_static=False)
    np.testing.assert_allclose(buf.lookup_transform('p', 'c', 16)[:3, :3],
                               Rotation.from_euler('z', 0.3).as_matrix(), atol=1e-12)


def test_out_of_order_insertion_gives_the_same_result():
    ref = _Reference(seed=2)
    ordered = _filled_buffer(ref)
    shuffled = _filled_buffer(ref, shuffle_seed=5)
    for stamp in np.linspace(ref.stamps[0], ref.stamps[-1], 17).astype(int):
        np.testing.assert_array_equal(shuffled.lookup_transform('d', 'c', int(stamp)),
                                      ordered.lookup_transform('d', 'c', int(stamp)))


def test_static_edges_valid_at_all_times_and_static_only_chain():
    buf = TransformBuffer()
    T = _matrix(Rotation.random(random_state=4).as_quat(), [0.1, 0.2, 0.3])
    buf.set_transform(StampedTransform.from_matrix('world', 'cam', 5, T), is_static=True)
    buf.set_transform(StampedTransform('cam', 'cam_optical', 0, [0, 0, 0],
                                       [-0.5, 0.5, -0.5, 0.5]), is_static=True)
    T_cam_opt = _matrix([-0.5, 0.5, -0.5, 0.5], [0, 0, 0])
    for stamp in (None, 0, 1, 10**18):
        np.testing.assert_allclose(buf.lookup_transform('world', 'cam_optical', stamp),
                                   T @ T_cam_opt, atol=1e-14)
    assert buf.lookup_stamped('world', 'cam_optical').stamp_ns == 0
    # Static replaced by a new static value.
    buf.set_transform(StampedTransform('world', 'cam', 0, [1, 1, 1], [0, 0, 0, 1]),
                      is_static=True)
    np.testing.assert_allclose(buf.lookup_transform('world', 'cam')[:3, 3], [1, 1, 1])


def test_latest_common_time():
    buf = TransformBuffer()
    for stamp in (10, 20, 30):
        buf.set_transform(StampedTransform('w', 'a', stamp * MS, [stamp, 0, 0], [0, 0, 0, 1]),
                          is_static=False)
    for stamp in (5, 15, 25):
        buf.set_transform(StampedTransform('a', 'b', stamp * MS, [0, stamp, 0], [0, 0, 0, 1]),
                          is_static=False)
    buf.set_transform(StampedTransform('b', 's', 0, [0, 0, 1], [0, 0, 0, 1]), is_static=True)
    out = buf.lookup_stamped('w', 's', None)
    assert out.stamp_ns == 25 * MS and out.parent_frame == 'w' and out.child_frame == 's'
    np.testing.assert_allclose(out.translation, [25, 25, 1])
    np.testing.assert_allclose(buf.lookup_transform('w', 's', 0), out.matrix())
    # Only the edges of the chain count.
    assert buf.lookup_stamped('w', 'a').stamp_ns == 30 * MS


def test_pruning_keeps_only_the_cache_window():
    buf = TransformBuffer(cache_time_s=1.0)
    for k in range(31):  # 0 .. 3 s every 0.1 s
        buf.set_transform(StampedTransform('w', 'a', k * 100 * MS, [k, 0, 0], [0, 0, 0, 1]),
                          is_static=False)
    assert '11 samples [2000000000, 3000000000] ns' in buf.all_frames_as_string()
    np.testing.assert_allclose(buf.lookup_transform('w', 'a', 2050 * MS)[:3, 3], [20.5, 0, 0])
    with pytest.raises(ExtrapolationError, match='past'):
        buf.lookup_transform('w', 'a', 1900 * MS)
    # Out of order but inside the window: stored.
    assert buf.set_transform(StampedTransform('w', 'a', 2050 * MS, [0, 0, 0], [0, 0, 0, 1]),
                             is_static=False)


def test_stale_and_repeated_samples():
    buf = TransformBuffer(cache_time_s=1.0)
    buf.set_transform(StampedTransform('w', 'a', 5000 * MS, [0, 0, 0], [0, 0, 0, 1]),
                      is_static=False)
    with pytest.raises(StaleTransformError, match=r'w -> a at 3000000000 ns is older than the '
                                                  r'cache window.*4000000000 ns'):
        buf.set_transform(StampedTransform('w', 'a', 3000 * MS, [0, 0, 0], [0, 0, 0, 1]),
                          is_static=False)
    assert not buf.set_transform(StampedTransform('w', 'a', 5000 * MS, [9, 9, 9], [0, 0, 0, 1]),
                                 is_static=False)
    np.testing.assert_allclose(buf.lookup_transform('w', 'a', 5000 * MS)[:3, 3], [0, 0, 0])


def test_error_types_and_messages():
    ref = _Reference(seed=3)
    buf = _filled_buffer(ref)
    buf.set_transform(StampedTransform('e', 'f', 0, [0, 0, 0], [0, 0, 0, 1]), is_static=True)
    with pytest.raises(UnknownFrameError, match="source_frame 'nowhere' does not exist"):
        buf.lookup_transform('world', 'nowhere')
    with pytest.raises(UnknownFrameError, match="target_frame 'ghost'"):
        buf.lookup_transform('ghost', 'ghost')
    with pytest.raises(ConnectivityError, match="'f' and 'c' are not connected.*'e' and "
                                                "'world'"):
        buf.lookup_transform('f', 'c')
    first, last = int(ref.stamps[0]), int(ref.stamps[-1])
    with pytest.raises(ExtrapolationError,
                       match=rf'into the past on edge b -> c: requested time {first - 1} ns'
                             rf'.*available range \[{first}, {last}\] ns'):
        buf.lookup_transform('d', 'c', first - 1)
    with pytest.raises(ExtrapolationError, match=rf'future on edge .*requested time {last + 1}'):
        buf.lookup_transform('c', 'world', last + 1)
    for err in (UnknownFrameError, ConnectivityError, ExtrapolationError, StaleTransformError):
        assert issubclass(err, TransformError)
        assert issubclass(err, HandyPriorsError)
        assert issubclass(err, LookupError)
    assert issubclass(StaleTransformError, InputError)
    assert not buf.can_transform('d', 'c', first - 1)
    assert not buf.can_transform('f', 'c')
    assert not buf.can_transform('x', 'c')


def test_extrapolation_tolerance():
    buf = TransformBuffer(max_extrapolation_ns=5 * MS)
    for stamp, x in ((100 * MS, 1.0), (200 * MS, 2.0)):
        buf.set_transform(StampedTransform('w', 'a', stamp, [x, 0, 0], [0, 0, 0, 1]),
                          is_static=False)
    np.testing.assert_allclose(buf.lookup_transform('w', 'a', 96 * MS)[:3, 3], [1, 0, 0])
    np.testing.assert_allclose(buf.lookup_transform('w', 'a', 204 * MS)[:3, 3], [2, 0, 0])
    with pytest.raises(ExtrapolationError):
        buf.lookup_transform('w', 'a', 94 * MS)


def test_new_parent_replaces_old_and_cycles_are_rejected():
    buf = TransformBuffer()
    buf.set_transform(StampedTransform('w', 'a', 1, [1, 0, 0], [0, 0, 0, 1]), is_static=False)
    buf.set_transform(StampedTransform('a', 'b', 1, [0, 1, 0], [0, 0, 0, 1]), is_static=True)
    buf.set_transform(StampedTransform('v', 'a', 1, [0, 0, 1], [0, 0, 0, 1]), is_static=False)
    np.testing.assert_allclose(buf.lookup_transform('v', 'b', 1)[:3, 3], [0, 1, 1])
    with pytest.raises(ConnectivityError):
        buf.lookup_transform('w', 'b', 1)
    with pytest.raises(InputError, match='cycle'):
        buf.set_transform(StampedTransform('b', 'v', 1, [0, 0, 0], [0, 0, 0, 1]),
                          is_static=True)
    assert buf.all_frames() == ['a', 'b', 'v', 'w']


def test_stamped_transform_validation():
    tf = StampedTransform('/world', 'a', 3, [1, 2, 3], [0, 0, 0, 2.0])
    assert tf.parent_frame == 'world'
    np.testing.assert_allclose(tf.rotation_xyzw, [0, 0, 0, 1])
    assert tf.translation.dtype == np.float64 and not tf.translation.flags.writeable
    with pytest.raises(InputError, match=r'rotation_xyzw \(world -> a\): expected a non-zero'):
        StampedTransform('world', 'a', 0, [0, 0, 0], [0, 0, 0, 0])
    with pytest.raises(InputError, match='rotation_xyzw .*finite'):
        StampedTransform('world', 'a', 0, [0, 0, 0], [0, 0, np.nan, 1])
    with pytest.raises(InputError, match='translation .*finite'):
        StampedTransform('world', 'a', 0, [0, np.inf, 0], [0, 0, 0, 1])
    with pytest.raises(InputError, match=r'translation .*shape \(2,\)'):
        StampedTransform('world', 'a', 0, [0, 0], [0, 0, 0, 1])
    with pytest.raises(InputError, match='stamp_ns: expected an integer'):
        StampedTransform('world', 'a', 1.5, [0, 0, 0], [0, 0, 0, 1])
    with pytest.raises(InputError, match='stamp_ns: expected a stamp >= 0'):
        StampedTransform('world', 'a', -1, [0, 0, 0], [0, 0, 0, 1])
    with pytest.raises(InputError, match='child_frame: expected a non-empty'):
        StampedTransform('world', '/', 0, [0, 0, 0], [0, 0, 0, 1])
    buf = TransformBuffer()
    with pytest.raises(InputError, match='different parent and child'):
        buf.set_transform(StampedTransform('a', 'a', 0, [0, 0, 0], [0, 0, 0, 1]),
                          is_static=True)
    with pytest.raises(InputError, match='tf: expected a StampedTransform'):
        buf.set_transform(('w', 'a'), is_static=True)
    with pytest.raises(InputError, match='cache_time_s'):
        TransformBuffer(cache_time_s=0.0)


def test_leading_slash_is_stripped_in_lookups():
    buf = TransformBuffer()
    buf.set_transform(StampedTransform('world', 'a', 0, [1, 0, 0], [0, 0, 0, 1]),
                      is_static=True)
    np.testing.assert_allclose(buf.lookup_transform('/world', '/a')[:3, 3], [1, 0, 0])
