"""Assembling the tracker's per-image input from asynchronous streams (pure Python, no rclpy).

A camera image becomes a :class:`~handypriors_ros.core.frames.types.Frame` once four
things are known at its stamp ``t``:

- its camera_info (matched by stamp, within ``stamp_tolerance_ns``);
- optionally its object mask (matched the same way; a segmenter may skip frames);
- the hand's joint positions, linearly interpolated between the two joint-state samples around
  ``t`` (:class:`JointStateBuffer`);
- the hand root's pose in the camera frame, ``T_cam_base``, looked up camera frame <- hand root
  at ``t`` in a :class:`~handypriors_ros.core.geometry.transform_buffer.TransformBuffer`.

:class:`FrameAssembler` holds images until their inputs have arrived and hands them out with
:meth:`FrameAssembler.pop_ready`. What it waits for, and how long, depends on the mode:

- ``replay`` (offline, every frame): frames leave in stamp order. A frame waits for its
  camera_info, its mask, a joint state at or after ``t``, the TF at ``t`` and an initial pose
  until *data time* (the newest stamp seen on any input) reaches ``t + data_wait_ns``: this
  depends on the data only, so a replay is deterministic whatever the processing speed.
  A caller may also pass the wall clock (``now_ns``): a frame that has waited ``wall_wait_ns``
  since it arrived then leaves too (the end of a stream played over DDS), and ``flush=True``
  releases everything (the end of a bag).
- ``live`` (real time, newest frame only): among frames whose camera_info has arrived the newest
  one that can leave now (nothing left to wait for) is kept, or, when none can, the newest; every
  older one is dropped (reported, so the caller counts drops; an older frame still missing its
  camera_info is a drop too: the camera_info may be on its way). So a frame that is ready is not
  dropped for a newer one that still waits for its mask: the tracker would idle meanwhile
  (measured with bench_latency, 2026-12-06: masks 12 ms after their images). When the newest
  joint state and hand-root TF are at most ``live_hold_ns`` before ``t``, they are held at once
  (a 100 Hz stream would otherwise hold every image back by up to 10 ms; holding is what the
  fallbacks below do anyway). Otherwise it waits
  for a joint state after ``t`` and the TF at ``t`` at most ``wall_wait_ns`` after its arrival
  (the arrival of the oldest frame it replaced: a stream that lags the images delays the tracker
  by at most that, it cannot starve it), or after the caller was last busy (:meth:`note_idle`:
  messages queued meanwhile come in one per executor round),
  and for its mask at most ``live_mask_wait_ns`` (default 0: a mask is used when it is already
  there; a segmenter's mask always comes after its image, so set it to the segmenter's latency
  to use its masks live); a frame released before its mask (``release_before_mask``: masks come
  in while the caller works) may get it until ``live_mask_wait_ns`` after its image's own
  arrival (``mask_deadline_ns``). Expiry needs the wall clock (``now_ns``). Before the first usable
  frame has left, no frame is dropped (the initial pose applies to the first frame at or after
  its stamp; a frame dropped before initialisation gets no answer), and while no camera_info
  has come at all a frame waits up to 0.5 s for the stream's first one.

When a frame leaves without everything it waited for, the fallbacks are:

- joint states: the newest sample is held when it is at most ``max_joint_age_ns`` before ``t``;
  an older one is still held (the hand is assumed still) and reported as a non-fatal
  ``stale_joint_states`` problem: the stream stopped, the tracker runs on what it last knew;
  ``t`` at most ``past_tolerance_ns`` before the oldest sample kept holds that sample, reported
  as a non-fatal ``early_joint_states`` problem (a recording's first image often comes a few
  milliseconds before the first joint state); no sample at all, or ``t`` earlier still, is
  fatal (``no_joint_states``);
- TF: the latest transform of the chain is used when ``t`` is at most ``tf_tolerance_ns`` after
  it (TF from an arm usually lags the camera a little); the oldest one when ``t`` is at most
  ``past_tolerance_ns`` before it (the start of a recording), reported as a non-fatal
  ``early_tf`` problem; otherwise fatal (``missing_tf``);
- mask: none (the tracker's built-in segmenter takes over), reported as ``missing_mask``;
- camera_info: the latest one received is used (intrinsics rarely change; DDS keep-last queues
  lose camera_info and images independently under load), reported as ``reused_camera_info``;
  fatal (``no_camera_info``) only before the first camera_info. Live, a frame does not wait for
  its own camera_info once any has come: the latest is used at once;
- initial pose: fatal (``no_initial_pose``).

Problems are returned, not logged: the node turns them into throttled warnings and diagnostic
counters; a frame with a fatal problem is skipped, never a crash.

Stamps are integer nanoseconds; arrival times are integer nanoseconds of a monotonic clock.
Image, camera_info and mask payloads are opaque here (the ROS messages): they are converted only
for frames that are processed, so dropping a frame costs nothing.
"""
from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.frames.joints import (JointLookup, JointStateBuffer,
                                                TimeWentBackwardsError)
from handypriors_ros.core.frames.types import AssembledFrame, FrameProblem
from handypriors_ros.core.geometry.transform_buffer import (ExtrapolationError, TransformBuffer,
                                                            TransformError)

_NS_PER_S = 1_000_000_000
#: ``live_mask_wait_ns``: wait for a mask as long as the segmenter's recent masks took after
#: their images (the 90th percentile of the last :data:`_MASK_DELAY_WINDOW` delays plus
#: :data:`_MASK_WAIT_MARGIN_NS`, at most :data:`_MASK_WAIT_MAX_NS`); no wait before the first
#: delay is known or while no mask has come for :data:`_MASK_STREAM_GONE_NS`.
MASK_WAIT_AUTO = -1
_MASK_DELAY_WINDOW = 60
_MASK_WAIT_MARGIN_NS = 5_000_000
_MASK_WAIT_MAX_NS = 50_000_000
_MASK_STREAM_GONE_NS = 1_000_000_000
#: live: how long a frame waits for the camera_info stream's first message (then goes without)
_FIRST_INFO_WAIT_NS = 500_000_000
_ARRIVALS_KEPT = 64  # image arrivals remembered, to time the masks that come after them
MODES = ('live', 'replay')


@dataclass(frozen=True)
class AssemblyConfig:
    """How :class:`FrameAssembler` matches and waits (module docstring).

    Attributes:
        mode: ``'live'`` (newest frame only) or ``'replay'`` (every frame, stamp order).
        hand_root_frame: TF frame of the hand's root link (``ah_base_link``).
        use_mask: a mask stream exists (replay waits for masks only then).
        stamp_tolerance_ns: camera_info and masks match an image within this [ns].
        data_wait_ns: replay: a frame waits until data time reaches its stamp plus this [ns].
        wall_wait_ns: a frame waits at most this after its arrival when the caller passes the
            wall clock [ns] (live: always; replay: the end-of-stream fallback).
        max_joint_age_ns: a held joint state up to this old is normal; older is stale [ns].
        tf_tolerance_ns: the latest TF is used for a stamp at most this after it [ns].
        past_tolerance_ns: the oldest joint state and TF are held for a stamp at most this
            before them (reported as ``early_joint_states`` / ``early_tf``) [ns].
        max_pending: most images held; older ones are evicted (reported) beyond it.
        release_before_mask: live: a frame that waits for its mask only is released at once,
            with ``mask_deadline_ns`` (its caller tracks it in another thread than the one that
            delivers masks, and takes the mask when the tracker needs it: :meth:`FrameAssembler.
            take_mask`).
        live_hold_ns: live: a frame whose stamp is at most this after the newest joint state
            (the newest TF of the hand root) holds that one at once instead of waiting for one
            at or after its stamp (0: it waits, up to ``wall_wait_ns``) [ns].
        live_mask_wait_ns: live: a frame waits at most this after its arrival for its mask
            (0: a mask is used only if it is already there; :data:`MASK_WAIT_AUTO`: learned
            from the masks' delays, :meth:`FrameAssembler.mask_wait_ns`) [ns].
    """
    mode: str = 'replay'
    hand_root_frame: str = 'ah_base_link'
    use_mask: bool = True
    stamp_tolerance_ns: int = 1_000_000
    data_wait_ns: int = 100_000_000
    wall_wait_ns: int = 500_000_000
    max_joint_age_ns: int = 100_000_000
    tf_tolerance_ns: int = 50_000_000
    past_tolerance_ns: int = 20_000_000
    max_pending: int = 30
    live_mask_wait_ns: int = 0
    live_hold_ns: int = 0
    release_before_mask: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f'mode: expected one of {list(MODES)}, got {self.mode!r}')
        for name in ('stamp_tolerance_ns', 'data_wait_ns', 'wall_wait_ns', 'max_joint_age_ns',
                     'tf_tolerance_ns', 'past_tolerance_ns', 'live_mask_wait_ns',
                     'live_hold_ns'):
            value = getattr(self, name)
            if name == 'live_mask_wait_ns' and value == MASK_WAIT_AUTO:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f'{name}: expected an integer >= 0 [ns], got {value!r}')
        if isinstance(self.max_pending, bool) or not isinstance(self.max_pending, int) \
                or self.max_pending < 1:
            raise InputError(f'max_pending: expected an integer >= 1, got {self.max_pending!r}')
        if not self.hand_root_frame:
            raise InputError('hand_root_frame: expected a frame id, got an empty string')


@dataclass
class _Pending:
    stamp_ns: int
    frame_id: str
    image: Any
    arrival_ns: int
    wait_start_ns: int  # live: inherited from the frames it superseded (bounded staleness)


class FrameAssembler:
    """Matches images with camera_info, masks, joint states and TF (module docstring).

    Args:
        config: matching and waiting settings.
        joints: the joint-state buffer (filled by the caller).
        tf: the transform buffer (filled by the caller; exact lookups, tolerance applied here).
    """

    def __init__(self, config: AssemblyConfig, joints: JointStateBuffer,
                 tf: TransformBuffer) -> None:
        self.config = config
        self.joints = joints
        self.tf = tf
        self._pending: dict[int, _Pending] = {}
        self._infos: dict[int, Any] = {}
        self._latest_info: tuple[int, Any] | None = None  # (stamp, camera_info), never pruned
        self._masks: dict[int, Any] = {}
        self._newest_image_ns: int | None = None
        self._newest_info_ns: int | None = None
        self._newest_mask_ns: int | None = None
        self._last_emitted_ns: int | None = None
        self._started = False  # a usable frame has left (live drops only from then on)
        self._data_time_ns: int | None = None
        self._evicted: list[AssembledFrame] = []
        self._idle_since_ns = 0
        self._image_arrivals: dict[int, int] = {}  # recent image stamp -> arrival [ns]
        self._mask_delays: collections.deque[int] = collections.deque(maxlen=_MASK_DELAY_WINDOW)
        self._last_mask_arrival_ns: int | None = None

    # -- input ---------------------------------------------------------------------------------
    @property
    def data_time_ns(self) -> int | None:
        """The newest stamp seen on any input (None before the first)."""
        return self._data_time_ns

    @property
    def pending_count(self) -> int:
        """Images held, waiting for their inputs."""
        return len(self._pending)

    def take_mask(self, stamp_ns: int) -> Any:
        """The mask matching an image stamp (within the tolerance), removed from the store; None
        when it has not come (a frame released with ``mask_deadline_ns``)."""
        key = self._match(self._masks, int(stamp_ns))
        return None if key is None else self._masks.pop(key)

    def mask_wait_ns(self, now_ns: int | None = None) -> int:
        """Live: how long a frame waits for its mask [ns]: ``live_mask_wait_ns``, or with
        :data:`MASK_WAIT_AUTO` the 90th percentile of the recent masks' delays after their
        images plus 5 ms, at most 50 ms; 0 before any delay is known and while the mask stream
        is silent for 1 s (a segmenter that stopped does not delay every frame)."""
        cfg = self.config.live_mask_wait_ns
        if cfg != MASK_WAIT_AUTO:
            return cfg
        if not self._mask_delays or (
                now_ns is not None and self._last_mask_arrival_ns is not None
                and now_ns - self._last_mask_arrival_ns > _MASK_STREAM_GONE_NS):
            return 0
        p90 = int(np.percentile(np.fromiter(self._mask_delays, dtype=np.int64), 90))
        return min(p90 + _MASK_WAIT_MARGIN_NS, _MASK_WAIT_MAX_NS)

    def note_idle(self, now_ns: int) -> None:
        """The caller has finished working on a frame at ``now_ns`` (monotonic): waits count
        from here at the earliest. The messages that queued up meanwhile reach the caller one
        per executor round; a frame must not give up on them while they are still coming."""
        self._idle_since_ns = int(now_ns)

    def advance_data_time(self, stamp_ns: int) -> None:
        """Note a stamp seen on another input (joint states, TF): data time only moves forward."""
        if self._data_time_ns is None or stamp_ns > self._data_time_ns:
            self._data_time_ns = int(stamp_ns)

    def add_image(self, stamp_ns: int, frame_id: str, image: Any, arrival_ns: int) -> None:
        """Hold an image until its inputs arrive.

        Raises:
            TimeWentBackwardsError: the stamp is not after the newest image's.
            InputError: an empty frame id.
        """
        stamp_ns = int(stamp_ns)
        if not frame_id:
            raise InputError(f'image at {stamp_ns} ns: expected a header.frame_id (the camera '
                             'optical frame), got an empty string')
        if self._newest_image_ns is not None and stamp_ns <= self._newest_image_ns:
            raise TimeWentBackwardsError(
                f'image stamp {stamp_ns} ns is not after the previous image\'s '
                f'{self._newest_image_ns} ns (by {(self._newest_image_ns - stamp_ns) / 1e6:.3f} '
                f'ms): time went backwards')
        self._newest_image_ns = stamp_ns
        self.advance_data_time(stamp_ns)
        self._image_arrivals[stamp_ns] = int(arrival_ns)
        if len(self._image_arrivals) > _ARRIVALS_KEPT:
            del self._image_arrivals[next(iter(self._image_arrivals))]
        self._pending[stamp_ns] = _Pending(stamp_ns, frame_id.lstrip('/'), image,
                                           int(arrival_ns), int(arrival_ns))
        while len(self._pending) > self.config.max_pending:
            oldest = min(self._pending)
            entry = self._pending.pop(oldest)
            self._evicted.append(self._skipped(entry, FrameProblem(
                'evicted', f'more than {self.config.max_pending} images waiting for their inputs; '
                           f'the oldest was dropped', True)))

    def add_camera_info(self, stamp_ns: int, camera_info: Any) -> None:
        """Store a camera_info for the image of the same stamp."""
        stamp_ns = int(stamp_ns)
        self._infos[stamp_ns] = camera_info
        if self._latest_info is None or stamp_ns >= self._latest_info[0]:
            self._latest_info = (stamp_ns, camera_info)
        self._newest_info_ns = max(stamp_ns, self._newest_info_ns or stamp_ns)
        self.advance_data_time(stamp_ns)
        self._prune(self._infos)

    def add_mask(self, stamp_ns: int, mask: Any, arrival_ns: int | None = None) -> None:
        """Store an object mask for the image of the same stamp. ``arrival_ns`` (monotonic,
        live): when it came; its delay after its image's arrival (0 when it came first) feeds
        the learned mask wait (:meth:`mask_wait_ns`)."""
        stamp_ns = int(stamp_ns)
        if arrival_ns is not None:
            self._last_mask_arrival_ns = int(arrival_ns)
            key = self._match(self._image_arrivals, stamp_ns)
            if key is not None:
                self._mask_delays.append(max(0, int(arrival_ns) - self._image_arrivals[key]))
        self._masks[stamp_ns] = mask
        self._newest_mask_ns = max(stamp_ns, self._newest_mask_ns or stamp_ns)
        self.advance_data_time(stamp_ns)
        self._prune(self._masks)

    def clear(self) -> None:
        """Forget pending images, camera_infos and masks, and the stream's time (after a reset:
        time may start again from an earlier stamp)."""
        self._pending.clear()
        self._infos.clear()
        self._latest_info = None
        self._masks.clear()
        self._evicted.clear()
        self._newest_image_ns = self._newest_info_ns = self._newest_mask_ns = None
        self._image_arrivals.clear()
        self._last_emitted_ns = self._data_time_ns = None
        self._started = False

    def _prune(self, store: dict[int, Any]) -> None:
        """Drop entries no pending or future image can match; bound the size."""
        tol = self.config.stamp_tolerance_ns
        if self._last_emitted_ns is not None:
            for stamp in [s for s in store if s < self._last_emitted_ns - tol]:
                del store[stamp]
        while len(store) > 4 * self.config.max_pending:
            del store[min(store)]

    # -- output --------------------------------------------------------------------------------
    def pop_ready(self, now_ns: int | None = None, *, flush: bool = False,
                  initialised: Callable[[int], bool] | None = None) -> list[AssembledFrame]:
        """Frames that can leave now, in stamp order (module docstring).

        Args:
            now_ns: the caller's monotonic clock [ns], enabling the ``wall_wait_ns`` expiry;
                None for a purely data-driven decision (deterministic replay).
            flush: release every pending frame (end of input).
            initialised: whether the tracker will have an initial pose for a stamp; replay
                waits for one, live skips the frame without one. None: always.
        Returns:
            Frames, usable or not (check :attr:`AssembledFrame.usable` and ``problems``).
        """
        out, self._evicted = self._evicted, []
        live = self.config.mode == 'live'
        if live and self._pending and self._started:
            # (Before the first usable frame has left, none is dropped: the initial pose applies
            # to the first frame at or after its stamp, and a frame dropped before it gets no
            # answer.) The newest frame that can be tracked: with any camera_info received, the
            # newest image (a missing camera_info falls back to the latest one).
            complete = [s for s in self._pending if self._latest_info is not None
                        or self._match(self._infos, s) is not None]
            # A frame that can leave now is not dropped for a newer one that still waits (for
            # its mask, joint states or TF): the worker would idle while it waits.
            ready = [s for s in complete
                     if not self._evaluate(self._pending[s], initialised, now_ns, flush)[1]]
            if complete:
                newest = max(ready) if ready else max(complete)
                for stamp in sorted(s for s in self._pending if s < newest):
                    # (its camera_info may still be on its way: a drop all the same)
                    entry = self._pending.pop(stamp)
                    # The newest frame waits no longer than the first one it replaces would
                    # have: inputs that lag the images cannot starve the tracker.
                    self._pending[newest].wait_start_ns = min(self._pending[newest].wait_start_ns,
                                                              entry.wait_start_ns)
                    out.append(self._skipped(entry, FrameProblem(
                        'dropped', 'a newer frame arrived first (live mode keeps the newest)',
                        True)))
        for stamp in sorted(self._pending):
            entry = self._pending[stamp]
            frame, waiting = self._evaluate(entry, initialised, now_ns, flush)
            if waiting:
                break  # keep stamp order: later frames wait behind this one
            del self._pending[stamp]
            out.append(frame)
            self._last_emitted_ns = stamp
            if live and not self._started and frame.usable:
                # the first usable frame leaves alone: those that waited behind it are then
                # dropped for the newest (answered once the tracker has its pose), not tracked
                # one by one after it
                self._started = True
                break
        if self._last_emitted_ns is not None:
            self._prune(self._infos)
            self._prune(self._masks)
        return out

    def _expired(self, entry: _Pending, now_ns: int | None, flush: bool,
                 wall_wait_ns: int) -> bool:
        """Whether the frame has waited long enough for an input that may still come."""
        start = max(entry.wait_start_ns, self._idle_since_ns)
        if flush or (now_ns is not None and now_ns - start >= wall_wait_ns):
            return True
        cfg = self.config
        return (cfg.mode == 'replay' and self._data_time_ns is not None
                and self._data_time_ns >= entry.stamp_ns + cfg.data_wait_ns)

    def _match(self, store: dict[int, Any], stamp_ns: int) -> int | None:
        """Key of the entry nearest ``stamp_ns`` within the tolerance, or None."""
        if stamp_ns in store:
            return stamp_ns
        tol = self.config.stamp_tolerance_ns
        near = [s for s in store if abs(s - stamp_ns) <= tol]
        return min(near, key=lambda s: abs(s - stamp_ns)) if near else None

    def _no_info_problem(self, entry: _Pending) -> FrameProblem:
        return FrameProblem('no_camera_info', f'no camera_info with the image\'s stamp '
                                              f'{entry.stamp_ns} ns arrived', True)

    def _skipped(self, entry: _Pending, problem: FrameProblem) -> AssembledFrame:
        return AssembledFrame(entry.stamp_ns, entry.frame_id, entry.image, None, None,
                              entry.arrival_ns, None, None, (problem,))

    def _evaluate(self, entry: _Pending, initialised: Callable[[int], bool] | None,
                  now_ns: int | None, flush: bool) -> tuple[AssembledFrame, bool]:
        """The frame with what is available now (fallbacks applied), and whether it should
        still wait for something that may come."""
        cfg = self.config
        live = cfg.mode == 'live'
        t = entry.stamp_ns
        tol = cfg.stamp_tolerance_ns
        problems: list[FrameProblem] = []
        waiting = False  # for camera_info, joints, TF or an initial pose

        info_key = self._match(self._infos, t)
        info = self._infos.get(info_key)
        waiting_first_info = False
        if info_key is None:
            # camera_info arrive in stamp order: a newer one means this one will not come.
            # Live, once one has come, the latest is used at once: a stream's intrinsics do not
            # change, and a reliable camera_info can come 13-150 ms after its image when DDS
            # repairs a lost sample (measured: bench_latency's player, 2026-12-06).
            waiting_info = ((self._newest_info_ns is None or self._newest_info_ns <= t + tol)
                            and not (live and self._latest_info is not None))
            waiting |= waiting_info
            # live, before any camera_info: the stream's first messages can come late
            waiting_first_info = live and waiting_info and self._latest_info is None
            if self._latest_info is None:
                problems.append(self._no_info_problem(entry))
            else:
                info_stamp, info = self._latest_info
                problems.append(FrameProblem(
                    'reused_camera_info', f'no camera_info with the image\'s stamp {t} ns '
                    f'arrived; the one of {info_stamp} ns is used (intrinsics unchanged)', False))

        mask_key = self._match(self._masks, t) if cfg.use_mask else None
        waiting_mask = False
        mask_deadline_ns = None
        if cfg.use_mask and mask_key is None:
            missing = FrameProblem('missing_mask', f'no mask with the image\'s stamp {t} ns '
                                                   'arrived', False)
            problems.append(missing)
            may_come = self._newest_mask_ns is None or self._newest_mask_ns <= t + tol
            if live:  # its own, usually shorter, wait (module docstring)
                mask_wait = self.mask_wait_ns(now_ns)
                waiting_mask = (may_come and mask_wait > 0 and not self._expired(
                    entry, now_ns, flush, mask_wait))
                if waiting_mask and cfg.release_before_mask:
                    # Its mask is delivered while the caller works on frames (another thread):
                    # it may come until the masks' delay after this image's own arrival, not
                    # after the caller became idle (a frame that queued behind a slow step
                    # would wait for a missing mask for the whole delay again).
                    problems.remove(missing)
                    mask_deadline_ns = entry.arrival_ns + mask_wait
                    waiting_mask = False
            else:
                waiting |= may_come

        joints = None
        if self.joints.covers(t):
            joints = self._joints_at(t, problems)
        else:
            joints = self._joints_at(t, problems)
            # live: a newest sample at most live_hold_ns before t is held at once (no wait)
            waiting |= not (live and joints is not None
                            and joints.age_s * _NS_PER_S <= cfg.live_hold_ns)
            if joints is not None:
                if joints.age_s * _NS_PER_S > cfg.max_joint_age_ns:
                    problems.append(FrameProblem(
                        'stale_joint_states',
                        f'the newest joint state is {joints.age_s:.3f} s before the image (more '
                        f'than {cfg.max_joint_age_ns / _NS_PER_S:g} s): the joint-state stream '
                        f'stopped; the hand is held at its last known pose', False))

        T_cam_base = None
        try:
            T_cam_base = self.tf.lookup_transform(entry.frame_id, cfg.hand_root_frame, t)
        except TransformError as exc:
            latest = self._tf_within_tolerance(entry.frame_id, t, exc,
                                               cfg.live_hold_ns if live else -1)
            waiting |= latest is None or not latest[1]  # (live: held at once when recent)
            T_cam_base = None if latest is None else latest[0]
            if T_cam_base is None:
                T_cam_base = self._tf_held_from_start(entry.frame_id, t, exc, problems)
            if T_cam_base is None:
                problems.append(FrameProblem(
                    'missing_tf', f'no transform {entry.frame_id} <- {cfg.hand_root_frame} at '
                                  f'the image stamp {t} ns: {exc}', True))

        if initialised is not None and not initialised(t):
            problems.append(FrameProblem('no_initial_pose', 'no initial pose yet (parameter '
                                                            'initial_pose or the topic)', True))
            waiting |= not live

        frame = AssembledFrame(t, entry.frame_id, entry.image, info,
                               self._masks.get(mask_key), entry.arrival_ns, joints, T_cam_base,
                               tuple(problems), mask_deadline_ns)
        waiting = waiting and not self._expired(entry, now_ns, flush, cfg.wall_wait_ns)
        if waiting_first_info:
            waiting = waiting or not self._expired(entry, now_ns, flush, max(
                cfg.wall_wait_ns, _FIRST_INFO_WAIT_NS))
        return frame, waiting or waiting_mask

    def _joints_at(self, t: int, problems: list[FrameProblem]) -> JointLookup | None:
        """Joint positions at ``t``; the oldest sample held when ``t`` is at most
        ``past_tolerance_ns`` before it (reported); None with a fatal problem otherwise."""
        try:
            return self.joints.lookup(t)
        except InputError as exc:
            oldest = self.joints.oldest_stamp_ns
            if oldest is not None and t < oldest <= t + self.config.past_tolerance_ns:
                problems.append(FrameProblem(
                    'early_joint_states', f'the image is {(oldest - t) / 1e6:.1f} ms before the '
                    f'first joint state (at most {self.config.past_tolerance_ns / 1e6:g} ms '
                    f'allowed): that one is held', False))
                return self.joints.lookup(oldest)
            problems.append(FrameProblem('no_joint_states', str(exc), True))
            return None

    def _tf_held_from_start(self, frame_id: str, t: int, exc: TransformError,
                            problems: list[FrameProblem]) -> np.ndarray | None:
        """The chain's oldest transform when ``t`` is at most ``past_tolerance_ns`` before it
        (reported), else None.

        The oldest time at which every edge of the chain has data is the smallest stamp in
        ``(t, t + past_tolerance_ns]`` at which the lookup succeeds: found by bisection (lookups
        succeed from that stamp on, up to the newest data); this happens at the first frames
        of a recording only."""
        tol = self.config.past_tolerance_ns
        root = self.config.hand_root_frame
        if (not isinstance(exc, ExtrapolationError) or tol == 0
                or not self.tf.can_transform(frame_id, root, t + tol)):
            return None
        lo, hi = t, t + tol  # the lookup fails at lo and succeeds at hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.tf.can_transform(frame_id, root, mid):
                hi = mid
            else:
                lo = mid
        problems.append(FrameProblem(
            'early_tf', f'the image is {(hi - t) / 1e6:.1f} ms before the first transform '
            f'{frame_id} <- {root} (at most {tol / 1e6:g} ms allowed): that one is held', False))
        return self.tf.lookup_transform(frame_id, root, hi)

    def _tf_within_tolerance(self, frame_id: str, t: int, exc: TransformError,
                             hold_ns: int = -1) -> tuple[np.ndarray, bool] | None:
        """The chain's latest transform when ``t`` is at most ``tf_tolerance_ns`` after it,
        and whether ``t`` is at most ``hold_ns`` after it (it may be held without waiting)."""
        if not isinstance(exc, ExtrapolationError) or self.config.tf_tolerance_ns == 0:
            return None
        try:
            latest = self.tf.lookup_stamped(frame_id, self.config.hand_root_frame, None)
        except TransformError:
            return None
        if 0 <= t - latest.stamp_ns <= self.config.tf_tolerance_ns:
            return latest.matrix(), t - latest.stamp_ns <= hold_ns
        return None
