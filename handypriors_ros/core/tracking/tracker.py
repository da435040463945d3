"""The filtering-based tracker (paper III-E) for an object held by a robot hand.

Per camera image: predict the object's motion from the hand's (contact dynamics, module
``dynamics``), then correct it with what the image shows: the configured measurements
(``TrackerConfig.measurements``, package ``measurements``: by default the object's texture
rendered vs the image (appearance), the object centre, the observed mask's distance transform
along the rendered silhouette, and the fingertips that touch it), applied in order. The mask
comes from the mask topic or, when a frame has none, from a built-in colour segmenter learned
on well-tracked frames. Loss of track is detected (no image measurement accepted for several
frames, covariance growth, object out of view) and so is divergence (``lost_after_frames``
implausible frames in a row: low silhouette IoU, the contour's NIS above its chi-square
quantile, the hand inside the object or the object away from the hand); the tracker then
re-initialises itself by rendering and comparing hypotheses around the last pose and the mask
(after a divergence also the 24 rotations by multiples of 90 degrees). Measurements that need
only the prediction (the appearance render and matching) are prepared in a worker thread while
the ROI is rendered, the later measurements' preparations (the contour's distance transform)
there while the first is applied, and the next prediction's contact query there between frames
(``TrackerConfig.parallel_prepare``); the updates stay in order. A live frame whose mask is
still on its way (``Frame.late_mask``) has its ROI and the measurements' mask-free work
(:meth:`~.measurements.base.Measurement.before_mask`: the appearance render) rendered while it
waits, with the same results. What a step does only for the next frame (the measurements'
``finish``, the colour segmenter's learning, the next contact query) waits for
:meth:`ObjectTracker.finish_pending`, which a live node calls once the frame is answered. The
published covariance is
the filter's plus the model-mismatch covariance (``TrackerConfig.model_std``). An image that
cannot be assembled into a frame gets :meth:`ObjectTracker.predict_only`.

Device: kinematics, the SDF queries, the contact fit and the rendering run on the tracker's
device; the EKF (6x6 float64) and the measurement residuals' autodiff stay on the CPU.
"""
from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import replace

import cv2
import numpy as np
import torch
import trimesh
from scipy.spatial.transform import Rotation

from handypriors_ros.core.devices import resolve_device
from handypriors_ros.core.errors import HandyPriorsError, InputError
from handypriors_ros.core.frames import Frame
from handypriors_ros.core.geometry.rotations import skew
from handypriors_ros.core.models.hand import HandModel
from handypriors_ros.core.models.object_model import ObjectModel
from handypriors_ros.core.physics.contacts import ContactSet
from handypriors_ros.core.physics.quasistatic import contact_query
from handypriors_ros.core.physics.sdf import WarpMeshSDF
from handypriors_ros.core.render.hard_rasterizer import rasterize_hard
from handypriors_ros.core.render.mesh import RenderMesh
from handypriors_ros.core.render.renderer import Renderer, RenderSettings
from handypriors_ros.core.tracking.config import TrackerConfig
from handypriors_ros.core.tracking.dynamics import (HandFrame, MotionPrediction, pose_hand,
                                                    predict_motion)
from handypriors_ros.core.tracking.ekf import PoseEKF, UpdateRecord, chi2_quantile
from handypriors_ros.core.tracking.measurements import (Measurement, StepContext,
                                                        TrackingScene, build_measurements,
                                                        make_roi, mask_centroid,
                                                        measurement_names)
from handypriors_ros.core.tracking.segmenter import ColorHistogramSegmenter
from handypriors_ros.core.tracking.types import ContactReport, TrackResult, TrackStatus


class NotInitialisedError(HandyPriorsError):
    """step() before initialise(): no initial pose yet."""


def _check_frame(frame: Frame, num_joints: int) -> None:
    rgb = frame.rgb
    if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3
            and rgb.shape[2] == 3):
        raise InputError(f'rgb: expected a (H, W, 3) uint8 array, got '
                         f'{getattr(rgb, "shape", None)} {getattr(rgb, "dtype", None)}')
    frame.camera.check_image_size(rgb.shape[1], rgb.shape[0], 'rgb')
    if frame.mask is not None and frame.mask.shape != rgb.shape[:2]:
        raise InputError(f'mask: expected shape {rgb.shape[:2]} (the image size), got '
                         f'{frame.mask.shape}')
    q = np.asarray(frame.q)
    if q.shape != (num_joints,) or not np.isfinite(q).all():
        raise InputError(f'q: expected {num_joints} finite joint positions, got shape '
                         f'{q.shape}' + ('' if np.isfinite(q).all() else ' with NaN/Inf'))
    T = np.asarray(frame.T_cam_base)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise InputError('T_cam_base: expected a finite (4, 4) transform')


def sdf_range(object_model: ObjectModel, config: TrackerConfig) -> float:
    """How far from the object's surface its SDF is resolved [m]: ``config.sdf_range_m``, or
    more where needed: half the smallest side of the mesh's bounding box (object frame) + 5 mm
    (no point inside the object is farther than that from its surface, so a penetration is
    never reported as out of range), and 5 mm beyond the distances the tracker compares
    (``contact_threshold_m``, ``near_hand_m``, ``max_hand_gap_m``)."""
    extents = np.ptp(np.asarray(object_model.mesh.vertices), axis=0)
    return max(float(config.sdf_range_m), 0.5 * float(extents.min()) + 0.005,
               max(config.contact_threshold_m, config.near_hand_m, config.max_hand_gap_m)
               + 0.005)


class ObjectTracker:
    """EKF tracking of T_cam_obj (module docstring).

    Args:
        object_model: the tracked object (its mesh frame is the object frame).
        hand: the hand (any :class:`~handypriors_ros.core.models.hand.HandModel`; the URDF
            :class:`~handypriors_ros.core.models.kinematics.HandKinematics` today); moved to
            ``device`` when it lives elsewhere.
        config: settings (:class:`TrackerConfig`).
        sdf: the object's signed distance field; built from ``object_model.mesh`` when None;
            moved to ``device`` when it lives elsewhere.
        device: where kinematics, SDF queries and rendering run: ``'cpu'``, ``'cuda'``,
            ``'cuda:N'`` or ``'auto'`` (CUDA when torch sees one, else the CPU).
        renderer: the :class:`~handypriors_ros.core.render.renderer.Renderer` backend of the
            region-of-interest renders: ``'auto'`` (nvdiffrast on CUDA where it imports, else
            the soft z-buffer), ``'soft'`` (the soft z-buffer on ``device``) or
            ``'nvdiffrast'`` (CUDA only).
    Raises:
        InputError: a config that is not a TrackerConfig, a hand without the HandModel
            members, an unknown or unavailable device.
    """

    def __init__(self, object_model: ObjectModel, hand: HandModel,
                 config: TrackerConfig | None = None, *, sdf: WarpMeshSDF | None = None,
                 device: str | torch.device = 'cpu', renderer: str = 'auto') -> None:
        self.config = config or TrackerConfig()
        if not isinstance(self.config, TrackerConfig):
            raise InputError(f'config: expected a TrackerConfig, got '
                             f'{type(self.config).__name__}')
        if not isinstance(hand, HandModel):
            raise InputError(f'hand: expected a HandModel (core.models.hand: forward, '
                             f'posed_mesh, ...), got {type(hand).__name__}')
        self.device = resolve_device(device)
        self.hand = hand if hand.device == self.device else hand.to(self.device)
        self.object = object_model.to(self.device, torch.float32)
        sdf = sdf or WarpMeshSDF(np.asarray(object_model.mesh.vertices),
                                 np.asarray(object_model.mesh.faces), device=self.device,
                                 max_distance=sdf_range(object_model, self.config))
        self.sdf = sdf.to(self.device)
        proxy_v = self.object.proxy.vertices.detach().float()
        proxy_f = self.object.proxy.faces.detach()
        proxy_v_np = proxy_v.cpu().numpy().astype(np.float64)
        # The proxy with vertices merged by position (colour seams split them), so that its
        # edges know both their faces: silhouette edges for the contour measurement.
        merged = trimesh.Trimesh(proxy_v_np, proxy_f.cpu().numpy(), process=True)
        self.scene = TrackingScene(
            proxy_vertices=proxy_v, proxy_faces=proxy_f, proxy_vertices_np=proxy_v_np,
            mesh=RenderMesh.from_arrays(merged.vertices, merged.faces, dtype=torch.float64),
            center=self.object.center.detach().to('cpu', torch.float64), sdf=self.sdf,
            hand_faces=self.hand.mesh_faces, object_model=object_model,
            # the decimated proxy need not be consistently wound: no back-face culling
            renderer=Renderer(RenderMesh.from_arrays(proxy_v, proxy_f.long(),
                                                     device=self.device),
                              hand_faces=self.hand.mesh_faces, backend=renderer,
                              settings=RenderSettings(cull_backfaces=False),
                              device=self.device))
        self.measurements: tuple[Measurement, ...] = tuple(
            build_measurements(self.config.measurements, self.config))
        self.segmenter = ColorHistogramSegmenter()
        self.ekf: PoseEKF | None = None
        self._initial_T: np.ndarray | None = None
        self._prev_hand: HandFrame | None = None
        self._prev_stamp: int | None = None
        self._status = TrackStatus.INITIALISING
        self._initialised_from_image = False  # see initialise()
        self._reason = 'waiting for the first frame'
        self._frames_without_update = 0
        self._frames_inconsistent = 0  # implausible frames in a row (divergence detection)
        self.divergences = 0  # times the track was declared LOST as diverged
        self._worker: ThreadPoolExecutor | None = None  # config.parallel_prepare, on demand
        # the next prediction's contact query, started at the end of a step: (future, the
        # hand it queried, the pose it queried at)
        self._early_contacts: tuple[Future, HandFrame, np.ndarray] | None = None
        # the end of the last step, run after its result (finish_pending)
        self._deferred: Callable[[], None] | None = None
        self._warm_up()

    def _warm_up(self) -> None:
        """Run each kernel once (Warp module loads: the SDF and the z-buffer; TorchScript
        compilation of the rigid fit; autograd set-up) and warm the measurements up
        (:meth:`~.measurements.base.Measurement.warm_up`: the appearance's textured renderer)
        so that the first tracked frame is not seconds late."""
        from handypriors_ros.core.physics.rigid_fit import weighted_rigid_fit
        g = torch.Generator().manual_seed(0)
        X = torch.rand(1, 8, 3, generator=g, dtype=torch.float64).to(self.device)
        weighted_rigid_fit(X, X + 0.01, torch.ones(1, 8, dtype=torch.float64,
                                                   device=self.device))
        self.sdf.signed_distance(torch.zeros(1, 4, 3, device=self.device))
        tri = torch.tensor([[[1.0, 1.0], [6.0, 1.0], [1.0, 6.0]]], dtype=torch.float64,
                           device=self.device)  # the z-buffer's Warp kernel
        rasterize_hard(tri, torch.ones(1, 3, dtype=torch.float64, device=self.device),
                       torch.tensor([[0, 1, 2]], device=self.device), 8, 8, barycentrics=False)
        ekf = PoseEKF(torch.eye(4), torch.eye(6))
        ekf.predict(torch.eye(4), torch.eye(6))
        ekf.update('warm-up', lambda d: d[:, :1], torch.ones(2), rows=2)
        for m in self.measurements:
            m.warm_up(self.scene)

    # -- state ---------------------------------------------------------------------------------

    @property
    def status(self) -> TrackStatus:
        return self._status

    def finish_pending(self) -> None:
        """What the last step left for after its result: the measurements'
        :meth:`~.measurements.base.Measurement.finish`, the colour segmenter's learning and the
        next prediction's contact query. The next :meth:`step`, :meth:`predict_only`,
        :meth:`initialise` or :meth:`reset` runs it first (the same estimates as running it
        inside the step); a live caller runs it once the result is published, off the
        frame's latency."""
        deferred, self._deferred = self._deferred, None
        if deferred is not None:
            deferred()

    def initialise(self, T_cam_obj: np.ndarray) -> None:
        """Start (or restart) from a pose; the covariance is ``config.initial_std``."""
        self.finish_pending()
        T = np.asarray(T_cam_obj, dtype=np.float64)
        P = self._centred(self.config.initial_std, T)
        if self.ekf is None:
            self.ekf = PoseEKF(torch.as_tensor(T), torch.as_tensor(P),
                               gate_probability=self.config.gate_probability)
        else:
            self.ekf.reset(torch.as_tensor(T), torch.as_tensor(P))
        self._initial_T = T.copy()
        for m in self.measurements:
            m.reset()
        self._frames_without_update = 0
        self._frames_inconsistent = 0
        self._status = TrackStatus.INITIALISING
        self._reason = 'initialised'
        # a pose the image chose (re-initialisation) keeps the image measurements gated
        self._initialised_from_image = False

    def reset(self) -> None:
        """Re-initialise from the last initial pose (the /handypriors/reset service)."""
        if self._initial_T is None:
            raise NotInitialisedError('reset: no initial pose has been given yet')
        self.initialise(self._initial_T)
        self._prev_hand = None
        self._prev_stamp = None

    # -- per frame ----------------------------------------------------------------------------

    def step(self, frame: Frame, *, skip: Collection[str] = ()) -> TrackResult:
        """Track one image (module docstring). Raises InputError on bad input (state kept).

        ``skip``: names of measurements (``TrackerConfig.measurements``) not made for this
        frame, e.g. a live frame the tracker is behind on (the node's ``live_behind_s``);
        names of registered types that are not configured skip nothing."""
        if self.ekf is None:
            raise NotInitialisedError('step: no initial pose yet (initialise() first)')
        _check_frame(frame, self.hand.num_joints)
        self.finish_pending()
        measurements = self.measurements
        if skip:  # (checked only when given: the per-frame path stays as it was)
            if isinstance(skip, str):
                raise InputError(f'skip: expected a collection of measurement names, got the '
                                 f'string {skip!r}')
            unknown = sorted(set(skip) - set(measurement_names()))
            if unknown:
                raise InputError(f'skip: unknown measurement(s) {", ".join(unknown)}; '
                                 f'expected any of {", ".join(measurement_names())}')
            measurements = tuple(m for m in self.measurements if m.name not in skip)
        if self._prev_stamp is not None and frame.stamp_ns <= self._prev_stamp:
            raise InputError(f'stamp {frame.stamp_ns} ns is not after the previous frame\'s '
                             f'{self._prev_stamp} ns (time going backwards)')
        cfg = self.config
        lat: dict[str, float] = {}
        t0 = time.perf_counter()

        hand = pose_hand(self.hand, frame.q, frame.T_cam_base)
        motion = self._predict_with_hand(hand)
        t1 = time.perf_counter()
        lat['predict'] = t1 - t0

        T_prior = self.ekf.T.numpy().copy()
        ctx = StepContext(frame=frame, hand=hand, hand_model=self.hand, scene=self.scene,
                          status=self._status, T_prior=T_prior, roi_size_px=cfg.roi_size_px)
        ctx.roi = make_roi(frame.camera, T_prior, self.scene.proxy_vertices_np,
                           cfg.roi_size_px)
        render = None
        if frame.late_mask is not None:
            # The mask is on its way (live): render first (the ROI, and what the measurements
            # prepare without a mask), then wait for it (Frame.late_mask).
            if ctx.roi is not None:
                render = self.scene.render(ctx.roi, T_prior, ctx.hand_vertices())
                for m in measurements:
                    m.before_mask(ctx)
            t_wait = time.perf_counter()
            late = frame.late_mask()
            if late is not None and getattr(late, 'shape', None) != frame.rgb.shape[:2]:
                late = None  # (the caller checks and reports; the predict is done: no raise)
            frame = replace(frame, mask=late, late_mask=None)
            ctx.frame = frame
            lat['mask_wait'] = time.perf_counter() - t_wait
        mask, source = self._observed_mask(frame)
        ctx.mask = mask
        # (a live frame's ROI is rendered already: nothing to overlap before the updates)
        early = self._prepare_early(ctx, measurements) if render is None else {}
        if ctx.roi is not None and mask is not None:
            ctx.render = (render if render is not None
                          else self.scene.render(ctx.roi, T_prior, ctx.hand_vertices()))
            ctx.mask_roi = ctx.roi.crop_mask(mask)
        t2 = time.perf_counter()
        lat['render'] = t2 - t1 - lat.get('mask_wait', 0.0)

        iou = float('nan')
        if ctx.render is not None:
            union = (ctx.render.object_visible | ctx.mask_roi).sum()
            iou = (float((ctx.render.object_visible & ctx.mask_roi).sum() / union) if union
                   else 0.0)
        try:
            updates, image_accepted, confirmed = self._update(ctx, measurements, early)
        finally:  # an exception never leaves a preparation running into the next step
            wait(early.values())
        t3 = time.perf_counter()
        lat['update'] = t3 - t2

        # The hand's deepest point inside the object at the last posterior (the predict step's
        # contact query): a held object does not go through the fingers.
        # (negative: how deep; positive: how far the object is from the hand).
        hand_distance = (motion.min_distance_m if motion is not None
                         and np.isfinite(motion.min_distance_m) else 0.0)
        self._update_status(ctx.roi, mask, image_accepted, confirmed, updates, iou,
                            hand_distance)
        # This frame's answer: a LOST frame stays LOST even when a re-initialisation follows
        # (it takes effect from the next frame), so a divergence is always reported.
        status, reason = self._status, self._reason
        if self._status == TrackStatus.LOST and mask is not None:
            self._reinitialise(ctx)
            if self._status != TrackStatus.LOST:
                reason = f'{reason}; {self._reason}'
        learn = (self._status == TrackStatus.TRACKING and image_accepted
                 and ctx.render is not None and source == 'topic')
        T_posterior = self.ekf.T.numpy().copy()
        parallel = self.config.parallel_prepare

        def for_the_next_frame() -> None:
            if learn:
                self.segmenter.learn(ctx.roi.crop(frame.rgb), ctx.render.object_visible)
            for m in self.measurements:
                m.finish(ctx, T_posterior)
            if not parallel:
                self._query_contacts_early(hand)

        contacts = motion.contacts if motion is not None else ContactReport()
        self._prev_hand = hand
        self._prev_stamp = frame.stamp_ns
        if parallel:  # in the worker thread, from now
            self._query_contacts_early(hand)
        self._deferred = for_the_next_frame
        lat['total'] = time.perf_counter() - t0
        return TrackResult(stamp_ns=frame.stamp_ns, T_cam_obj=self.ekf.T.numpy().copy(),
                           covariance=self.published_covariance(), status=status,
                           status_reason=reason, contacts=contacts,
                           updates=tuple(updates), mask_source=source,
                           silhouette_iou=iou, latency_s=lat)

    def published_covariance(self) -> np.ndarray:
        """(6, 6) the covariance a result carries: the filter's ``P`` plus the model-mismatch
        covariance (``model_std`` about the object's centre, :meth:`_centred`): an error of the
        object or hand model is a bias the filter cannot average away over frames (``P`` alone
        shrinks below it)."""
        return self.ekf.P.numpy() + self._centred(self.config.model_std)

    def _centred(self, std, T_cam_obj: np.ndarray | None = None) -> np.ndarray:
        """(6, 6) the covariance of a pose error with these stds (x y z [m], rx ry rz [rad],
        camera axes) about the object's centre, in the filter's error state, whose rotation
        turns about the object frame's origin: ``J diag(std)^2 J^T``, ``J = [[I, [a]x], [0,
        I]]``, ``a = R c`` (the centre from the origin, camera frame; at ``T_cam_obj``, else
        the estimate). A mesh whose origin lies far from its centre (a YCB can's: 9 cm) would
        otherwise get a prior in which turning about that far origin is the cheap way to move
        the object, and a translation correction turns it about its own axis."""
        T = self.ekf.T.numpy() if T_cam_obj is None else np.asarray(T_cam_obj)
        a = T[:3, :3] @ self.scene.center.numpy()
        J = np.eye(6)
        J[:3, 3:] = skew(torch.as_tensor(a)).numpy()
        return J @ np.diag(np.square(np.asarray(std, dtype=np.float64))) @ J.T

    def predict_only(self, stamp_ns: int, reason: str, *, q: np.ndarray | None = None,
                     T_cam_base: np.ndarray | None = None) -> TrackResult:
        """An estimate for an image that cannot be tracked (a frame the inputs could not
        assemble: no joint state, no TF, an undecodable image; live: a frame dropped for a
        newer one): predict, no update. The status is kept (LOST stays LOST) and its reason
        says ``'predict only: <reason>'``.

        With the hand at the stamp (``q``, ``T_cam_base``: a dropped frame's joint states and
        TF are there) and a previous hand, the predict is the tracker's own (the hand-driven
        quasistatic motion, ``config.dynamics``) and this hand becomes the previous one;
        without, constant pose with ``q_constant`` process noise, and the hand of the last
        frame is kept, so the next tracked frame's contact dynamics span both intervals.

        Raises:
            NotInitialisedError: no initial pose yet.
            InputError: a stamp not after the previous frame's; a bad ``q`` / ``T_cam_base``.
        """
        if self.ekf is None:
            raise NotInitialisedError('predict_only: no initial pose yet (initialise() first)')
        self.finish_pending()
        stamp_ns = int(stamp_ns)
        if self._prev_stamp is not None and stamp_ns <= self._prev_stamp:
            raise InputError(f'stamp {stamp_ns} ns is not after the previous frame\'s '
                             f'{self._prev_stamp} ns (time going backwards)')
        t0 = time.perf_counter()
        hand = None
        if q is not None and T_cam_base is not None and self._prev_hand is not None:
            q = np.asarray(q, dtype=np.float64)
            T_cam_base = np.asarray(T_cam_base, dtype=np.float64)
            if q.shape != (self.hand.num_joints,) or not np.isfinite(q).all() \
                    or T_cam_base.shape != (4, 4) or not np.isfinite(T_cam_base).all():
                raise InputError(f'predict_only: expected {self.hand.num_joints} finite joint '
                                 'positions and a finite (4, 4) T_cam_base')
            hand = pose_hand(self.hand, q, T_cam_base)
            self._predict_with_hand(hand)
            self._prev_hand = hand
            self._query_contacts_early(hand)
        else:
            self.ekf.predict(torch.eye(4, dtype=torch.float64),
                             torch.as_tensor(self._centred(self.config.q_constant)))
        self._prev_stamp = stamp_ns
        # (the track's own reason is kept: a later step that does not set one, e.g. while
        # initialising, must not report this frame's)
        return TrackResult(stamp_ns=stamp_ns, T_cam_obj=self.ekf.T.numpy().copy(),
                           covariance=self.published_covariance(), status=self._status,
                           status_reason=f'predict only: {reason}', mask_source='none',
                           latency_s={'total': time.perf_counter() - t0})

    # -- pieces -------------------------------------------------------------------------------

    def _predict_with_hand(self, hand: HandFrame) -> MotionPrediction | None:
        """The EKF predict from the previous hand to ``hand`` (quasistatic motion,
        ``config.dynamics``); None, nothing done, without a previous hand."""
        if self._prev_hand is None:
            return None
        motion = predict_motion(self.hand, self.sdf, self._prev_hand, hand, self.ekf.T.numpy(),
                                self.config, contacts=self._queried_contacts())
        self.ekf.predict(torch.as_tensor(motion.dT), torch.as_tensor(self._centred(motion.q_std)))
        return motion

    def _query_contacts_early(self, hand: HandFrame) -> None:
        """The next prediction's contact query (this frame's hand at the posterior), made
        between frames, off the next step's critical path: in the worker thread
        (``config.parallel_prepare``), else here (called from :meth:`finish_pending`)."""
        self._early_contacts = None
        if self.config.dynamics == 'constant':
            return
        T = self.ekf.T.numpy().copy()
        query = functools.partial(contact_query, hand.points_cam, T, self.sdf,
                                  contact_threshold_m=self.config.contact_threshold_m,
                                  link_ids=self.hand.point_link_ids)
        if self.config.parallel_prepare:
            future = self._worker_pool().submit(query)
        else:
            future = Future()
            future.set_result(query())
        self._early_contacts = (future, hand, T)

    def _queried_contacts(self) -> ContactSet | None:
        """The early contact query when it is of the previous hand at the current estimate
        (a re-initialisation or reset in between makes it stale: None, queried again)."""
        early, self._early_contacts = self._early_contacts, None
        if early is None:
            return None
        future, hand, T = early
        contacts = future.result()
        if hand is not self._prev_hand or not np.array_equal(T, self.ekf.T.numpy()):
            return None
        return contacts

    def _prepare_early(self, ctx: StepContext, measurements: tuple[Measurement, ...]
                       ) -> dict[Measurement, Future]:
        """Start the ``prior_only`` measurements' :meth:`~Measurement.prepare` in the worker
        thread (``config.parallel_prepare``); {} when there is nothing to overlap."""
        if not self.config.parallel_prepare or ctx.roi is None or ctx.mask is None:
            return {}
        early = [m for m in measurements if m.prior_only]
        if not early:
            return {}
        ctx.hand_vertices()  # posed once, here, before two threads ask for it
        return {m: self._worker_pool().submit(m.prepare, ctx) for m in early}

    def _worker_pool(self) -> ThreadPoolExecutor:
        """The one worker thread of ``config.parallel_prepare`` (made on first use)."""
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix='hp-prepare')
        return self._worker

    def _update(self, ctx: StepContext, measurements: tuple[Measurement, ...],
                early: dict[Measurement, Future] | None = None
                ) -> tuple[list[UpdateRecord], bool, bool | None]:
        """These measurements' EKF updates, in order (``early``: preparations
        already started by :meth:`_prepare_early`; those this starts are added to it, for
        the caller to wait for). Returns the records, whether
        an image measurement was accepted, and whether the pose was confirmed: a
        ``confirms_track`` measurement (the ``from_image`` ones when none is configured) passed
        its gate (even while initialising, when it is applied ungated); None when none was
        made this frame."""
        updates: list[UpdateRecord] = []
        image_accepted = False
        confirmed: bool | None = None
        confirming = ([m for m in self.measurements if m.confirms_track]
                      or [m for m in self.measurements if m.from_image])
        early = {} if early is None else early
        if self.config.parallel_prepare:
            # A prepare reads the context only (the estimate is linearise's): all but the
            # first still to make run in the worker, in order, while this thread makes that
            # one and applies the updates before theirs.
            later = [m for m in measurements if m not in early][1:]
            early.update((m, self._worker_pool().submit(m.prepare, ctx)) for m in later)
        for m in measurements:
            linearise = early[m].result() if m in early else m.prepare(ctx)
            if linearise is None:
                continue
            # While initialising from the user's guess the pose is only as good as that guess:
            # image measurements are not gated until the image has been accepted once. A
            # re-initialisation's pose fits the mask already (render-and-compare): gated, or a
            # corrupted mask right after it pulls the pose anywhere (measured on a devbench
            # sugar box with 20 % of its masks dropped: the re-initialisation kept the right
            # pose, and the ungated contour of the next frame moved it 53 mm).
            gate = not (m.from_image and self._status == TrackStatus.INITIALISING
                        and not self._initialised_from_image)
            pose_noise = (torch.as_tensor(self._centred(self.config.model_std))
                          if m.from_image
                          and m.name in self.config.model_noise_measurements else None)
            if m.iterated:
                iteration = itertools.count()
                rec = self.ekf.update_iterated(m.name, lambda T: linearise(T, next(iteration)),
                                               iterations=m.iterations(ctx), gate=gate,
                                               pose_noise=pose_noise)
                if not rec.dimension:
                    continue
            else:
                lin = linearise(self.ekf.T, 0)
                if lin is None:
                    continue
                rec = self.ekf.update(m.name, lin.residual, lin.R, rows=lin.rows, gate=gate,
                                      pose_noise=pose_noise)
            updates.append(rec)
            if m.from_image:
                image_accepted |= rec.accepted
            if m in confirming:
                ok = rec.accepted and rec.nis <= chi2_quantile(
                    self.config.divergence_nis_probability, rec.dimension)
                confirmed = ok if confirmed is None else (confirmed or ok)
        return updates, image_accepted, confirmed

    def _observed_mask(self, frame: Frame) -> tuple[np.ndarray | None, str]:
        cfg = self.config
        if frame.mask is not None and cfg.segmenter != 'builtin':
            return frame.mask, 'topic'
        if cfg.segmenter == 'topic' or not self.segmenter.ready:
            return None, 'none'
        T = self.ekf.T.numpy()
        roi = make_roi(frame.camera, T, self.scene.proxy_vertices_np, cfg.roi_size_px)
        if roi is None:
            return None, 'none'
        prior = self.scene.render(roi, T).object_visible
        seg = self.segmenter.segment(roi.crop(frame.rgb), prior, prior_margin_px=6)
        if seg is None:
            return None, 'none'
        full = np.zeros(frame.rgb.shape[:2], dtype=np.float32)
        full[roi.y0:roi.y1, roi.x0:roi.x1] = cv2.resize(
            seg.astype(np.float32), (roi.x1 - roi.x0, roi.y1 - roi.y0),
            interpolation=cv2.INTER_LINEAR)
        return full > 0.5, 'builtin'

    def _update_status(self, roi, mask, image_accepted: bool, confirmed: bool | None,
                       updates: list[UpdateRecord], iou: float, hand_distance: float) -> None:
        """Status and reason after the update; divergence detection.

        A frame is implausible when the rendered silhouette at the prediction overlaps the mask
        less than ``min_iou``, when the shape measurement is rejected or its NIS is above the
        chi-square ``divergence_nis_probability`` quantile (checked while initialising too),
        when the hand is more than ``max_penetration_m`` inside the object at the last
        estimate, or when the held object is more than ``max_hand_gap_m`` away from every
        hand point. ``lost_after_frames``
        implausible frames in a row (a frame with a mask and none of these resets the count)
        make the track LOST: a wrong initial orientation or a lost object is noticed within
        that many frames instead of being published as TRACKING.
        """
        cfg = self.config
        evidence = []
        if np.isfinite(iou) and iou < cfg.min_iou:
            evidence.append(f'silhouette IoU {iou:.2f} < {cfg.min_iou:g}')
        penetration = max(0.0, -hand_distance)
        if confirmed is False:
            names = {m.name for m in self.measurements if m.confirms_track} or {
                m.name for m in self.measurements if m.from_image}
            rec = next((u for u in updates if u.name in names), None)
            evidence.append(
                f'{rec.name} NIS {rec.nis:.0f} > '
                f'{chi2_quantile(cfg.divergence_nis_probability, rec.dimension):.0f}'
                if rec is not None and np.isfinite(rec.nis) else 'shape measurement rejected')
        if penetration > cfg.max_penetration_m:
            evidence.append(f'hand {penetration * 1000:.0f} mm inside the object '
                            f'(> {cfg.max_penetration_m * 1000:g} mm)')
        if hand_distance > cfg.max_hand_gap_m:
            evidence.append(f'object {hand_distance * 1000:.0f} mm from the hand '
                            f'(> {cfg.max_hand_gap_m * 1000:g} mm)')
        if evidence:
            self._frames_inconsistent += 1
        elif np.isfinite(iou):
            self._frames_inconsistent = 0
        if self._frames_inconsistent >= cfg.lost_after_frames:
            self._status = TrackStatus.LOST
            self._reason = (f'diverged: {"; ".join(evidence)} ({self._frames_inconsistent} '
                            f'implausible frames in a row)')
            self.divergences += self._frames_inconsistent == cfg.lost_after_frames
            return
        if image_accepted and confirmed is not False:
            self._frames_without_update = 0
            self._status, self._reason = TrackStatus.TRACKING, 'image measurements accepted'
            return
        if roi is None:
            self._frames_without_update += 1
            self._status, self._reason = TrackStatus.LOST, 'object out of view'
            return
        if mask is not None:
            self._frames_without_update += 1
        if self.ekf.position_std_m() > cfg.max_position_std_m:
            self._status = TrackStatus.LOST
            self._reason = (f'position std {self.ekf.position_std_m() * 1000:.0f} mm > '
                            f'{cfg.max_position_std_m * 1000:.0f} mm')
        elif self._frames_without_update >= cfg.lost_after_frames:
            self._status = TrackStatus.LOST
            gated = [u.reason for u in updates if not u.accepted]
            self._reason = (f'no image measurement accepted for {self._frames_without_update} '
                            f'frames' + (f' ({gated[0]})' if gated else ''))
        elif self._status == TrackStatus.TRACKING:
            self._reason = ('predict only: ' + ('; '.join(evidence) if evidence else
                            updates[0].reason if updates else 'no image measurement'))

    def _penetration(self, Ts: list[np.ndarray], hand: HandFrame) -> np.ndarray:
        """(H,) how deep [m] the hand's surface samples reach inside the object at each pose
        (0 when outside): one batched SDF query."""
        p = hand.points_cam.detach().to('cpu', torch.float64).numpy()
        q = np.stack([(p - T[:3, 3]) @ T[:3, :3] for T in Ts])  # R^T (p - t)
        d = self.sdf.signed_distance(torch.as_tensor(q, dtype=torch.float32,
                                                     device=self.sdf.device)).distance
        return np.maximum(0.0, -d.detach().cpu().numpy().min(axis=1))

    def _pushed_out(self, T: np.ndarray, hand: HandFrame, *, steps: int = 3) -> np.ndarray:
        """``T`` translated so the hand's deepest sample leaves the object: each step moves
        the object by the deepest penetration along minus that sample's outward normal (camera
        frame); the orientation is kept."""
        p = hand.points_cam.detach().to('cpu', torch.float64).numpy()
        T = T.copy()
        for _ in range(steps):
            q = (p - T[:3, 3]) @ T[:3, :3]
            res = self.sdf.signed_distance(torch.as_tensor(q[None], dtype=torch.float32,
                                                           device=self.sdf.device))
            d = res.distance[0].detach().cpu().numpy()
            i = int(np.argmin(d))
            if d[i] >= 0:
                break
            n_cam = T[:3, :3] @ res.normal[0, i].detach().cpu().numpy().astype(np.float64)
            T[:3, 3] += n_cam * (d[i] - 1e-3)  # d < 0: against the normal, 1 mm beyond
        return T

    def _reinitialise(self, ctx: StepContext) -> None:
        """Multi-hypothesis render-and-compare around the last pose and the mask: small
        rotations about each axis (those the hand is inside also moved out of it), and (after a
        divergence: a wrong orientation) the 24
        rotations of the object by multiples of 90 degrees about its own axes, each also
        moved onto the mask's centroid. A hypothesis must overlap the mask at least
        ``reinit_min_iou`` and keep the hand within ``max_penetration_m`` of the object's
        surface; the best IoU wins. None: the track stays LOST (reported)."""
        cfg = self.config
        frame, mask = ctx.frame, ctx.mask
        T0 = self.ekf.T.numpy()
        centroid = mask_centroid(mask)
        if centroid is None:
            return
        cam = frame.camera
        hyps = [T0]
        # Move the object along its viewing ray so its centre projects onto the mask centroid.
        center = self.scene.center.numpy()
        c = T0[:3, :3] @ center + T0[:3, 3]
        ray = np.array([(centroid[0] - cam.cx) / cam.fx, (centroid[1] - cam.cy) / cam.fy, 1.0])
        shifted = T0.copy()
        shifted[:3, 3] += ray * c[2] - c

        def rotated(base: np.ndarray, R_obj: np.ndarray) -> np.ndarray:
            """base with its orientation changed by R_obj (object axes) about its centre."""
            T = base.copy()
            cb = base[:3, :3] @ center + base[:3, 3]
            T[:3, :3] = base[:3, :3] @ R_obj
            T[:3, 3] = cb - T[:3, :3] @ center
            return T

        for base in (T0, shifted):
            hyps.append(base)
            for axis in np.eye(3):
                for ang in (-0.35, 0.35):
                    hyps.append(rotated(base, Rotation.from_rotvec(axis * ang).as_matrix()))
        # The same orientations moved out of the hand: a track that drifted into the fingers
        # has its orientation right more often than not, and without these every near
        # hypothesis is rejected and a flip wins by default.
        inside = self._penetration(hyps, ctx.hand) > cfg.max_penetration_m
        hyps += [self._pushed_out(T, ctx.hand) for T, bad in zip(list(hyps), inside) if bad]
        n_local = len(hyps)
        if self._reason.startswith('diverged'):
            for R in _CUBE_ROTATIONS[1:]:
                hyps += [rotated(T0, R), rotated(shifted, R)]
        roi = make_roi(cam, shifted, self.scene.proxy_vertices_np, 64, margin=0.8)
        if roi is None:
            return
        hand_v = ctx.hand_vertices()
        obs = roi.crop_mask(mask)
        plausible = self._penetration(hyps, ctx.hand) <= cfg.max_penetration_m
        best, best_iou = None, -1.0
        for i, (T, ok) in enumerate(zip(hyps, plausible)):
            if not ok:
                continue
            r = self.scene.render(roi, T, hand_v)
            inter = (r.object_visible & obs).sum()
            union = (r.object_visible | obs).sum()
            iou = inter / union if union else 0.0
            # A far orientation must fit clearly better than the local ones: many objects have
            # near-symmetric silhouettes, and a flip that fits as well is no improvement.
            margin = _GLOBAL_IOU_MARGIN if i >= n_local and best is not None else 0.0
            if iou > best_iou + margin:
                best, best_iou = T, iou
        if best is not None and best_iou >= cfg.reinit_min_iou:
            initial = self._initial_T
            self.initialise(best)
            self._initial_T = initial
            self._initialised_from_image = True
            self._reason = f're-initialised by render-and-compare (IoU {best_iou:.2f})'
        else:
            self._reason += (f'; no re-initialisation hypothesis fits (best IoU '
                             f'{max(best_iou, 0.0):.2f}, {int(plausible.sum())} of {len(hyps)} '
                             f'clear of the hand)')


#: IoU by which a re-initialisation hypothesis far from the last orientation (a multiple of
#: 90 degrees) must beat the best near one.
_GLOBAL_IOU_MARGIN = 0.1

#: The 24 rotations that map the coordinate axes onto themselves (identity first).
_CUBE_ROTATIONS = tuple(
    np.array(m, dtype=np.float64)
    for m in sorted({tuple(map(tuple, np.round(R).astype(int)))
                     for R in Rotation.create_group('O').as_matrix()},
                    key=lambda m: m != ((1, 0, 0), (0, 1, 0), (0, 0, 1))))


def make_tracker(object_model: ObjectModel, hand: HandModel,
                 config: TrackerConfig | None = None, *, device: str | torch.device = 'cpu',
                 **overrides) -> ObjectTracker:
    """An :class:`ObjectTracker` with ``config`` fields replaced by ``overrides``."""
    cfg = replace(config or TrackerConfig(), **overrides)
    return ObjectTracker(object_model, hand, cfg, device=device)
