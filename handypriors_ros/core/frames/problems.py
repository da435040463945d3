"""Counting what went wrong with the inputs, the same way for every front (pure Python, no ROS).

A problem has a *kind* (``missing_tf``, ``bad_image``, ``early_joint_states``, ...: see
:class:`~handypriors_ros.core.frames.types.FrameProblem` and the node's diagnostics) and a
message. :class:`ProblemCounter` counts them by kind and passes the messages on to a ``warn``
callable (the node's logger, the command line's stderr), at most one per kind every
``period_s`` seconds: the messages it holds back are counted into the next one. Kinds that are
normal in some mode (:data:`QUIET_KINDS`) are counted only.
"""
from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable

from handypriors_ros.core.frames.types import AssembledFrame

#: Problems counted but not warned about: normal in their mode (a segmenter skips frames, live
#: mode drops frames it cannot keep up with or skips costly measurements on a frame it is behind
#: on, a lost camera_info is replaced by the last one).
QUIET_KINDS = ('missing_mask', 'dropped', 'behind', 'reused_camera_info')


class ProblemCounter:
    """Problems by kind (module docstring).

    Args:
        warn: where warnings go (one line each); None: counted only.
        period_s: at most one warning per kind this often [s].
        quiet: kinds never warned about.
        clock: monotonic clock [s] (tests pass a fake one).
    """

    def __init__(self, warn: Callable[[str], None] | None = None, *, period_s: float = 2.0,
                 quiet: Iterable[str] = QUIET_KINDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.warn = warn
        self.period_s = float(period_s)
        self.quiet = frozenset(quiet)
        self._clock = clock
        self.counts: collections.Counter[str] = collections.Counter()
        self._period: collections.Counter[str] = collections.Counter()
        self._last_warn: dict[str, float] = {}
        self._suppressed: collections.Counter[str] = collections.Counter()

    def report(self, kind: str, message: str) -> None:
        """Count a problem; warn about its kind unless quiet or warned about recently."""
        self.counts[kind] += 1
        self._period[kind] += 1
        if self.warn is None or kind in self.quiet:
            return
        now = self._clock()
        if now - self._last_warn.get(kind, -float('inf')) < self.period_s:
            self._suppressed[kind] += 1
            return
        self._last_warn[kind] = now
        more = self._suppressed.pop(kind, 0)
        self.warn(f'[{kind}] {message}' + (f' ({more} more since the last warning)'
                                           if more else ''))

    def report_frame(self, frame: AssembledFrame) -> None:
        """Report every problem of an assembled frame (fatal ones: the frame is skipped)."""
        for p in frame.problems:
            self.report(p.kind, f'frame {frame.stamp_ns} ns' + (' skipped' if p.fatal else '')
                        + f': {p.message}')

    def take_period(self) -> dict[str, int]:
        """Counts since the previous call (the node's diagnostics period)."""
        out, self._period = dict(self._period), collections.Counter()
        return out

    def summary(self, kinds: Iterable[str] | None = None) -> str:
        """``'2 missing_tf, 1 early_joint_states'`` (sorted by kind), or ``'no problem'``."""
        shown = {k: n for k, n in self.counts.items() if n and (kinds is None or k in kinds)}
        return ', '.join(f'{n} {k}' for k, n in sorted(shown.items())) or 'no problem'


class LastProblem:
    """A :class:`ProblemCounter` seen through: reports go to it, the last one is kept
    (``last``: (kind, message); ``reports``: how many came), to answer a skipped image with its
    reason."""

    def __init__(self, counter: ProblemCounter) -> None:
        self.counter = counter
        self.reports = 0
        self.last: tuple[str, str] = ('', '')

    def report(self, kind: str, message: str) -> None:
        self.reports += 1
        self.last = (kind, message)
        self.counter.report(kind, message)

    def __getattr__(self, name: str):
        return getattr(self.counter, name)
