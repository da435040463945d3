"""A ROS-free transform buffer, like tf2's ``BufferCore``: numpy float64, no node needed.

Frames form a tree (each child has one parent); every edge parent -> child holds either one
static transform, valid at all times, or a time-sorted history of stamped samples covering the
last ``cache_time_s`` seconds. A lookup walks both frames up to their common ancestor,
evaluates every edge at the requested stamp (linear interpolation of the translation and slerp
of the rotation between the two neighbouring samples, as tf2 does) and composes the chain.

Differences from tf2, on purpose:
- A new parent for a child replaces the old edge and drops its history (tf2 keeps per-sample
  parents); a parent that would close a cycle is rejected at insertion.
- A sample older than the edge's cache window is rejected with :class:`StaleTransformError`
  (tf2 drops it with a log line); a sample repeating an existing stamp is ignored and
  ``set_transform`` returns False (tf2's TF_REPEATED_DATA).
- A leading ``/`` in a frame name is stripped everywhere.

Lookups are O(log n) in the samples per edge (bisect) and, for a few edges, take tens of
microseconds: the chain is composed as (quaternion, translation) in plain floats.
"""

from __future__ import annotations

import bisect
import math
import operator
import threading
from dataclasses import dataclass

import numpy as np

from handypriors_ros.core.errors import HandyPriorsError, InputError

_NS_PER_S = 1_000_000_000

# (qx, qy, qz, qw, tx, ty, tz): a rigid transform in plain floats, the buffer's internal form.
_Pose = tuple[float, float, float, float, float, float, float]
_IDENTITY: _Pose = (0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)


class TransformError(HandyPriorsError, LookupError):
    """Base of the errors a transform lookup (or insertion) can raise."""


class UnknownFrameError(TransformError):
    """A frame was never seen by the buffer."""


class ConnectivityError(TransformError):
    """The two frames are in different trees: no chain joins them."""


class ExtrapolationError(TransformError):
    """The requested stamp lies outside the sample range of an edge of the chain."""


class StaleTransformError(TransformError, InputError):
    """A sample is older than the cache window of its edge, so it cannot be stored."""


def _clean_frame(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InputError(f'{name}: expected a frame id (str), got {type(value).__name__}')
    frame = value.lstrip('/')
    if not frame:
        raise InputError(f'{name}: expected a non-empty frame id, got {value!r}')
    return frame


def _clean_stamp(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise InputError(f'{name}: expected an integer stamp in nanoseconds, got a bool')
    try:
        stamp = operator.index(value)
    except TypeError:
        raise InputError(f'{name}: expected an integer stamp in nanoseconds, '
                         f'got {type(value).__name__}') from None
    if stamp < 0:
        raise InputError(f'{name}: expected a stamp >= 0 ns, got {stamp}')
    return stamp


@dataclass(frozen=True, eq=False)
class StampedTransform:
    """A transform ``T_parent_child`` at a stamp (maps points from child into parent).

    Validated at construction: frame ids non-empty, ``stamp_ns`` an integer
    >= 0, translation finite of shape (3,), rotation finite and non-zero of shape (4,). The
    rotation is normalised; both arrays are stored as read-only float64.

    Attributes:
        parent_frame: frame the transform maps into.
        child_frame: frame the transform maps from.
        stamp_ns: time [ns]; ignored for static transforms.
        translation: (3,) [m], the child origin in the parent frame.
        rotation_xyzw: (4,) unit quaternion of the child axes in the parent frame.
    """

    parent_frame: str
    child_frame: str
    stamp_ns: int
    translation: np.ndarray
    rotation_xyzw: np.ndarray

    def __post_init__(self) -> None:
        parent = _clean_frame('parent_frame', self.parent_frame)
        child = _clean_frame('child_frame', self.child_frame)
        stamp = _clean_stamp('stamp_ns', self.stamp_ns)
        t = np.array(self.translation, dtype=np.float64)
        if t.shape != (3,) or not np.all(np.isfinite(t)):
            raise InputError(f'translation ({parent} -> {child}): expected 3 finite values, '
                             f'got shape {t.shape} {t.tolist()}')
        q = np.array(self.rotation_xyzw, dtype=np.float64)
        if q.shape != (4,) or not np.all(np.isfinite(q)):
            raise InputError(f'rotation_xyzw ({parent} -> {child}): expected 4 finite values, '
                             f'got shape {q.shape} {q.tolist()}')
        norm = float(np.linalg.norm(q))
        if norm < 1e-9:
            raise InputError(f'rotation_xyzw ({parent} -> {child}): expected a non-zero '
                             f'quaternion, got {q.tolist()}')
        q = q / norm
        t.flags.writeable = False
        q.flags.writeable = False
        object.__setattr__(self, 'parent_frame', parent)
        object.__setattr__(self, 'child_frame', child)
        object.__setattr__(self, 'stamp_ns', stamp)
        object.__setattr__(self, 'translation', t)
        object.__setattr__(self, 'rotation_xyzw', q)

    @classmethod
    def from_matrix(cls, parent_frame: str, child_frame: str, stamp_ns: int,
                    T_parent_child: np.ndarray) -> StampedTransform:
        """Build from a (4, 4) homogeneous matrix (its rotation block must be a rotation)."""
        T = np.asarray(T_parent_child, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise InputError(f'T_parent_child: expected a finite (4, 4) matrix, got shape '
                             f'{T.shape}')
        from scipy.spatial.transform import Rotation
        q = Rotation.from_matrix(T[:3, :3]).as_quat()
        return cls(parent_frame, child_frame, stamp_ns, T[:3, 3].copy(), q)

    def matrix(self) -> np.ndarray:
        """(4, 4) float64 ``T_parent_child``."""
        return _pose_to_matrix((*self.rotation_xyzw.tolist(), *self.translation.tolist()))


# --- plain-float pose algebra (faster than numpy on 4-vectors) -------------------------------

def _compose(a: _Pose, b: _Pose) -> _Pose:
    """``a * b``: first b, then a (T_x_z = T_x_y * T_y_z)."""
    ax, ay, az, aw, atx, aty, atz = a
    bx, by, bz, bw, btx, bty, btz = b
    # Rotate b's translation by a's quaternion: v + 2w (u x v) + 2 u x (u x v).
    cx = ay * btz - az * bty
    cy = az * btx - ax * btz
    cz = ax * bty - ay * btx
    rx = btx + 2.0 * (aw * cx + ay * cz - az * cy)
    ry = bty + 2.0 * (aw * cy + az * cx - ax * cz)
    rz = btz + 2.0 * (aw * cz + ax * cy - ay * cx)
    return (aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
            rx + atx, ry + aty, rz + atz)


def _invert(a: _Pose) -> _Pose:
    x, y, z, w, tx, ty, tz = a
    return _compose((-x, -y, -z, w, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0, -tx, -ty, -tz))


def _interpolate(a: _Pose, b: _Pose, alpha: float) -> _Pose:
    """Linear translation, slerp rotation (shorter arc) between a (alpha=0) and b (alpha=1)."""
    ax, ay, az, aw = a[:4]
    bx, by, bz, bw = b[:4]
    if ax * bx + ay * by + az * bz + aw * bw < 0.0:
        bx, by, bz, bw = -bx, -by, -bz, -bw
    # Angle between the unit 4-vectors, accurate at every angle: 2 atan2(|a - b|, |a + b|).
    theta = 2.0 * math.atan2(math.sqrt((ax - bx) ** 2 + (ay - by) ** 2 + (az - bz) ** 2
                                       + (aw - bw) ** 2),
                             math.sqrt((ax + bx) ** 2 + (ay + by) ** 2 + (az + bz) ** 2
                                       + (aw + bw) ** 2))
    if theta < 1e-9:
        wa, wb = 1.0 - alpha, alpha
    else:
        s = math.sin(theta)
        wa, wb = math.sin((1.0 - alpha) * theta) / s, math.sin(alpha * theta) / s
    qx, qy, qz, qw = wa * ax + wb * bx, wa * ay + wb * by, wa * az + wb * bz, wa * aw + wb * bw
    n = math.sqrt(qx * qx + qy * qy + qz * qz + qw * qw)
    return (qx / n, qy / n, qz / n, qw / n,
            a[4] + alpha * (b[4] - a[4]), a[5] + alpha * (b[5] - a[5]),
            a[6] + alpha * (b[6] - a[6]))


def _pose_to_matrix(p: _Pose) -> np.ndarray:
    x, y, z, w, tx, ty, tz = p
    n = math.sqrt(x * x + y * y + z * z + w * w)
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y), tx],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x), ty],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y), tz],
        [0.0, 0.0, 0.0, 1.0],
    ])


class _Edge:
    """The transforms of one parent -> child edge: one static pose or a sorted history."""

    __slots__ = ('parent', 'is_static', 'authority', 'stamps', 'poses')

    def __init__(self, parent: str, is_static: bool, authority: str) -> None:
        self.parent = parent
        self.is_static = is_static
        self.authority = authority
        self.stamps: list[int] = []
        self.poses: list[_Pose] = []


class TransformBuffer:
    """Stores stamped and static transforms and answers chain lookups at a stamp.

    Thread-safe (one lock around insertions and lookups), usable without ROS.

    Args:
        cache_time_s: how long a dynamic edge keeps its history before its newest sample [s].
        max_extrapolation_ns: keyword-only tolerance [ns]: a stamp at most this far outside an
            edge's sample range takes the nearest sample instead of raising
            :class:`ExtrapolationError`. 0 (default) means exact, like tf2.
    """

    def __init__(self, cache_time_s: float = 10.0, *, max_extrapolation_ns: int = 0) -> None:
        if not (isinstance(cache_time_s, (int, float)) and math.isfinite(cache_time_s)
                and cache_time_s > 0):
            raise InputError(f'cache_time_s: expected a finite number > 0 [s], '
                             f'got {cache_time_s!r}')
        self._max_extrapolation_ns = _clean_stamp('max_extrapolation_ns', max_extrapolation_ns)
        self._cache_ns = int(round(cache_time_s * _NS_PER_S))
        self._edges: dict[str, _Edge] = {}  # child frame -> edge to its parent
        self._frames: set[str] = set()
        self._lock = threading.Lock()

    @property
    def cache_time_s(self) -> float:
        return self._cache_ns / _NS_PER_S

    # --- insertion ---------------------------------------------------------------------------

    def set_transform(self, tf: StampedTransform, *, is_static: bool,
                      authority: str = '') -> bool:
        """Store a transform.

        Args:
            tf: the transform ``T_parent_child`` at ``tf.stamp_ns``.
            is_static: True for a transform valid at all times (``/tf_static``); it replaces
                the edge's previous content. False adds a sample to the edge's history.
            authority: who sent it (for diagnostics).
        Returns:
            True if stored; False if a sample with the same stamp was already there (ignored).
        Raises:
            InputError: ``tf`` is not a StampedTransform, or the parent would close a cycle.
            StaleTransformError: the stamp is older than the edge's newest sample minus the
                cache time.
        """
        if not isinstance(tf, StampedTransform):
            raise InputError(f'tf: expected a StampedTransform, got {type(tf).__name__}')
        parent, child, stamp = tf.parent_frame, tf.child_frame, tf.stamp_ns
        if parent == child:
            raise InputError(f'tf: expected different parent and child frames, got {child!r} '
                             f'for both')
        pose: _Pose = (*tf.rotation_xyzw.tolist(), *tf.translation.tolist())
        with self._lock:
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or edge.is_static != bool(is_static):
                if edge is None or edge.parent != parent:
                    self._check_no_cycle(parent, child)
                edge = _Edge(parent, bool(is_static), authority)
                self._edges[child] = edge
                self._frames.add(parent)
                self._frames.add(child)
            edge.authority = authority
            if edge.is_static:
                edge.stamps[:] = [stamp]
                edge.poses[:] = [pose]
                return True
            stamps = edge.stamps
            if stamps:
                oldest_allowed = stamps[-1] - self._cache_ns
                if stamp < oldest_allowed:
                    raise StaleTransformError(
                        f'transform {parent} -> {child} at {stamp} ns is older than the cache '
                        f'window: newest sample {stamps[-1]} ns minus cache time '
                        f'{self._cache_ns} ns = {oldest_allowed} ns')
            i = bisect.bisect_left(stamps, stamp)
            if i < len(stamps) and stamps[i] == stamp:
                return False
            stamps.insert(i, stamp)
            edge.poses.insert(i, pose)
            # Prune what fell out of the window behind the newest sample.
            k = bisect.bisect_left(stamps, stamps[-1] - self._cache_ns)
            if k:
                del stamps[:k]
                del edge.poses[:k]
            return True

    def _check_no_cycle(self, parent: str, child: str) -> None:
        frame: str | None = parent
        while frame is not None:
            if frame == child:
                raise InputError(f'tf: parent {parent!r} of {child!r} is a descendant of '
                                 f'{child!r}; the frames would form a cycle')
            edge = self._edges.get(frame)
            frame = edge.parent if edge is not None else None

    def clear(self) -> None:
        """Forget every frame and transform."""
        with self._lock:
            self._edges.clear()
            self._frames.clear()

    # --- queries -----------------------------------------------------------------------------

    def all_frames(self) -> list[str]:
        """Every frame seen (as parent or child), sorted."""
        with self._lock:
            return sorted(self._frames)

    def all_frames_as_string(self) -> str:
        """One line per edge: child, parent, static or sample range, authority."""
        with self._lock:
            lines = []
            for child in sorted(self._edges):
                e = self._edges[child]
                span = 'static' if e.is_static else (
                    f'{len(e.stamps)} samples [{e.stamps[0]}, {e.stamps[-1]}] ns')
                lines.append(f'{child} <- {e.parent}: {span}; authority {e.authority!r}')
            return '\n'.join(lines)

    def lookup_transform(self, target_frame: str, source_frame: str,
                         stamp_ns: int | None = None) -> np.ndarray:
        """``T_target_source`` at ``stamp_ns``: maps points from source into target.

        Args:
            target_frame: frame to map into.
            source_frame: frame to map from.
            stamp_ns: time [ns]; None or 0 means the latest time at which every edge of the
                chain has data (the minimum of their newest stamps).
        Returns:
            (4, 4) float64 homogeneous matrix (a new array).
        Raises:
            UnknownFrameError, ConnectivityError, ExtrapolationError (all TransformError).
        """
        return _pose_to_matrix(self._lookup(target_frame, source_frame, stamp_ns)[0])

    def lookup_stamped(self, target_frame: str, source_frame: str,
                       stamp_ns: int | None = None) -> StampedTransform:
        """Like :meth:`lookup_transform`, as a StampedTransform carrying the stamp used
        (the resolved latest common time when ``stamp_ns`` is None or 0; 0 if all static)."""
        pose, stamp = self._lookup(target_frame, source_frame, stamp_ns)
        return StampedTransform(target_frame, source_frame, stamp, pose[4:], pose[:4])

    def can_transform(self, target_frame: str, source_frame: str,
                      stamp_ns: int | None = None) -> bool:
        """Whether :meth:`lookup_transform` would succeed (bad arguments still raise)."""
        try:
            self._lookup(target_frame, source_frame, stamp_ns)
        except TransformError:
            return False
        return True

    def _lookup(self, target_frame: str, source_frame: str,
                stamp_ns: int | None) -> tuple[_Pose, int]:
        target = _clean_frame('target_frame', target_frame)
        source = _clean_frame('source_frame', source_frame)
        stamp = 0 if stamp_ns is None else _clean_stamp('stamp_ns', stamp_ns)
        with self._lock:
            for name, frame in (('target_frame', target), ('source_frame', source)):
                if frame not in self._frames:
                    raise UnknownFrameError(
                        f'{name} {frame!r} does not exist (known frames: '
                        f'{", ".join(sorted(self._frames)) or "none"})')
            if target == source:
                return _IDENTITY, stamp
            # Frames from source (resp. target) up to its root, child first.
            up_source = self._chain_to_root(source)
            up_target = self._chain_to_root(target)
            in_target = {f: i for i, f in enumerate(up_target)}
            for i, f in enumerate(up_source):
                if f in in_target:
                    n_source, n_target = i, in_target[f]
                    break
            else:
                raise ConnectivityError(
                    f'frames {target!r} and {source!r} are not connected: their roots are '
                    f'{up_target[-1]!r} and {up_source[-1]!r}')
            edges = [self._edges[c] for c in up_source[:n_source]] + \
                    [self._edges[c] for c in up_target[:n_target]]
            children = up_source[:n_source] + up_target[:n_target]
            if stamp == 0:
                dynamic = [e.stamps[-1] for e in edges if not e.is_static]
                stamp = min(dynamic) if dynamic else 0
            poses = [self._edge_at(e, c, stamp) for e, c in zip(edges, children)]
        # T_ancestor_source = T_anc_p1 * ... * T_pk_source (source edge first in the list).
        T_anc_source = _IDENTITY
        for p in poses[:n_source]:
            T_anc_source = _compose(p, T_anc_source)
        T_anc_target = _IDENTITY
        for p in poses[n_source:]:
            T_anc_target = _compose(p, T_anc_target)
        return _compose(_invert(T_anc_target), T_anc_source), stamp

    def _chain_to_root(self, frame: str) -> list[str]:
        chain = [frame]
        edge = self._edges.get(frame)
        while edge is not None:
            chain.append(edge.parent)
            edge = self._edges.get(edge.parent)
        return chain

    def _edge_at(self, edge: _Edge, child: str, stamp: int) -> _Pose:
        if edge.is_static:
            return edge.poses[0]
        stamps = edge.stamps
        i = bisect.bisect_left(stamps, stamp)
        if i < len(stamps) and stamps[i] == stamp:
            return edge.poses[i]
        if i == 0 or i == len(stamps):
            nearest = 0 if i == 0 else len(stamps) - 1
            if abs(stamps[nearest] - stamp) <= self._max_extrapolation_ns:
                return edge.poses[nearest]
            direction = 'past' if i == 0 else 'future'
            raise ExtrapolationError(
                f'lookup would require extrapolation into the {direction} on edge '
                f'{edge.parent} -> {child}: requested time {stamp} ns '
                f'({stamp / _NS_PER_S:.9f} s), available range [{stamps[0]}, {stamps[-1]}] ns '
                f'([{stamps[0] / _NS_PER_S:.9f}, {stamps[-1] / _NS_PER_S:.9f}] s)')
        t0, t1 = stamps[i - 1], stamps[i]
        return _interpolate(edge.poses[i - 1], edge.poses[i], (stamp - t0) / (t1 - t0))
