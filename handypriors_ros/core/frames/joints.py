"""Joint states of the hand, buffered in the hand model's joint order and interpolated at image
stamps (pure Python + numpy; no ROS)."""
from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.models.joint_names import joint_vector_from_state

_NS_PER_S = 1_000_000_000


class TimeWentBackwardsError(InputError):
    """A message is older than (or as old as) one already received on the same stream."""


class NonFiniteJointsError(InputError):
    """A joint state holds NaN or Inf for a joint the model needs."""


# --------------------------------------------------------------------------------------------
# Joint states
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JointLookup:
    """Joint positions at a stamp.

    Attributes:
        q: (J,) float64 positions in the model's joint order [rad].
        interpolated: True when two samples bracket the stamp (linear interpolation); False
            when the newest sample, older than the stamp, was held.
        age_s: stamp minus the held sample's stamp [s] (0 when interpolated).
    """
    q: np.ndarray
    interpolated: bool
    age_s: float


class JointStateBuffer:
    """Recent joint states of the hand, in model order, for interpolation at image stamps.

    Args:
        model_joint_names: (J,) the kinematic model's joint names, in model order.
        name_map: incoming joint name -> model joint name (names not in it pass unchanged).
        cache_time_s: samples older than the newest minus this are forgotten [s].
    """

    def __init__(self, model_joint_names: Sequence[str], *,
                 name_map: Mapping[str, str] | None = None, cache_time_s: float = 2.0) -> None:
        if not (isinstance(cache_time_s, (int, float)) and cache_time_s > 0):
            raise InputError(f'cache_time_s: expected a number > 0 [s], got {cache_time_s!r}')
        self.model_joint_names = tuple(model_joint_names)
        self.name_map = dict(name_map or {})
        self._cache_ns = int(round(cache_time_s * _NS_PER_S))
        self._stamps: list[int] = []
        self._q: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def oldest_stamp_ns(self) -> int | None:
        """Stamp of the oldest sample kept, or None when empty."""
        return self._stamps[0] if self._stamps else None

    @property
    def newest_stamp_ns(self) -> int | None:
        """Stamp of the newest sample, or None when empty."""
        return self._stamps[-1] if self._stamps else None

    def clear(self) -> None:
        """Forget every sample."""
        self._stamps.clear()
        self._q.clear()

    def add(self, stamp_ns: int, names: Sequence[str], positions: Sequence[float]) -> bool:
        """Store one joint state.

        Args:
            stamp_ns: its header stamp [ns].
            names: (N,) incoming joint names; positions: (N,) [rad].
        Returns:
            True if stored; False for a repeat of the newest stamp (ignored).
        Raises:
            NonFiniteJointsError: NaN/Inf for a joint the model needs (the joints are named).
            TimeWentBackwardsError: the stamp is older than the newest sample's.
            InputError: missing joints, mismatched lengths (see ``joint_vector_from_state``).
        """
        stamp_ns = int(stamp_ns)
        if self._stamps and stamp_ns <= self._stamps[-1]:
            if stamp_ns == self._stamps[-1]:
                return False
            raise TimeWentBackwardsError(
                f'joint state stamp {stamp_ns} ns is {(self._stamps[-1] - stamp_ns) / 1e6:.3f} ms '
                f'before the previous one ({self._stamps[-1]} ns): time went backwards')
        values = np.asarray(positions, dtype=np.float64)
        try:
            q = joint_vector_from_state(names, values, self.model_joint_names,
                                        name_map=self.name_map)
        except InputError as exc:
            if values.ndim == 1 and not np.all(np.isfinite(values)):
                # Only the non-finite values wrong, or the message's structure as well?
                finite = np.where(np.isfinite(values), values, 0.0)
                joint_vector_from_state(names, finite, self.model_joint_names,
                                        name_map=self.name_map)  # raises if structural
                raise NonFiniteJointsError(f'joint state at {stamp_ns} ns rejected: '
                                           f'{exc}') from exc
            raise
        self._stamps.append(stamp_ns)
        self._q.append(q)
        k = bisect.bisect_left(self._stamps, stamp_ns - self._cache_ns)
        if k:
            del self._stamps[:k]
            del self._q[:k]
        return True

    def covers(self, stamp_ns: int) -> bool:
        """True when a sample at or after ``stamp_ns`` exists (interpolation is possible, if
        the stamp is not before the oldest sample)."""
        return bool(self._stamps) and self._stamps[-1] >= stamp_ns

    def lookup(self, stamp_ns: int) -> JointLookup:
        """Joint positions at ``stamp_ns``: interpolated, or the newest sample held when the
        stamp is after it (the caller decides whether that is recent enough).

        Raises:
            InputError: no sample yet, or the stamp is before the oldest sample.
        """
        if not self._stamps:
            raise InputError('no joint state received yet')
        stamps = self._stamps
        if stamp_ns < stamps[0]:
            raise InputError(f'image stamp {stamp_ns} ns is {(stamps[0] - stamp_ns) / 1e6:.1f} ms '
                             f'before the oldest joint state kept ({stamps[0]} ns)')
        if stamp_ns >= stamps[-1]:
            exact = stamp_ns == stamps[-1]
            return JointLookup(self._q[-1].copy(), exact, (stamp_ns - stamps[-1]) / _NS_PER_S)
        i = bisect.bisect_right(stamps, stamp_ns)  # stamps[i - 1] <= t < stamps[i]
        t0, t1 = stamps[i - 1], stamps[i]
        alpha = (stamp_ns - t0) / (t1 - t0)
        q = (1.0 - alpha) * self._q[i - 1] + alpha * self._q[i]
        return JointLookup(q, True, 0.0)
