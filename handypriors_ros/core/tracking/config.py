"""Settings of the EKF tracker (one frozen dataclass), and the ablation presets of the
benchmark (the paper's Table I: observation-only, dynamics-only, each observation alone)."""
from __future__ import annotations

from dataclasses import dataclass, replace

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.tracking.measurements.registry import (BUILTIN_MEASUREMENTS,
                                                                 measurement_names)

#: The built-in measurement types (``core.tracking.measurements``).
MEASUREMENTS = BUILTIN_MEASUREMENTS
#: The measurements a tracker uses by default, in their order.
DEFAULT_MEASUREMENTS = ('appearance', 'object_center', 'contour', 'fingertip_contact',
                        'penetration')
APPEARANCE_METHODS = ('keypoints', 'direct')
DYNAMICS = ('contact', 'hand_rigid', 'constant')


@dataclass(frozen=True)
class TrackerConfig:
    """EKF tracker settings. Units: metres, radians, pixels of the full-resolution image.

    Dynamics (predict):
        dynamics: ``'contact'`` (quasistatic: the rigid fit of the contact points' motion, the
            paper's eq. 9, falling back to the hand root's motion and then to constant pose),
            ``'hand_rigid'`` (the object moves with the hand root) or ``'constant'`` (constant
            pose: the "observation-only" ablation).
        contact_threshold_m: hand points closer than this to the object are contacts.
        near_hand_m: without a full contact fit, an object closer than this to the hand moves
            with the hand root; farther, it keeps its pose.
        q_contact: process noise std per frame (x y z [m], rx ry rz [rad]) with a full contact
            fit; grows with the fit's residual.
        q_hand_rigid, q_constant: the same for the two fallbacks.
        sdf_range_m: the object's signed distance is resolved this far from its surface (Warp
            queries stop there: the hand's far links cost nothing). The range used is at
            least half the object's smallest bounding-box side + 5 mm (no point inside the
            object is out of range) and 5 mm more than ``contact_threshold_m``,
            ``near_hand_m`` and ``max_hand_gap_m`` (read at start-up). 3.5 cm is that least
            range with the defaults: the estimates are the same as with 6 cm (a point beyond
            it only ever counts as far from the object; checked bit for bit on a devbench
            sugar box, 150 frames), and the contact query costs ~15 % less.
    Measurements (update), any registered names (``core.tracking.measurements.registry``),
    applied in the order given:
        ``'object_center'``: the projected object centre vs the observed mask's centroid
            (corrected by the rendered visible silhouette for occlusion); nearly linear in the
            pose, so it goes first: it pulls a poor guess into the contour's basin;
        ``'contour'``: the observed mask's signed distance transform sampled at the rendered
            object's silhouette points (hand-occluded parts excluded);
        ``'fingertip_contact'``: fingertips that touched the object in the last frame still
            touch it (signed distance unchanged);
        ``'penetration'``: the hand does not go through the object (the deepest sample of each
            hand link inside it is pushed back to the surface).
        contour_points: most silhouette points per frame.
        contour_sigma_px / contour_common_px: independent and common (whole-contour) noise std.
            The common part is a segmenter's boundary offset: a mask eroded or dilated by a
            few pixels moves every contour point along its normal at once, which reads as a
            change of the object's distance (2 px of a 70 px can at 57 cm is 3 cm). Measured
            on the devbench held-out set (its masks eroded or dilated by 1-4 px per frame):
            0.5 px published a covariance ~3x too confident (NEES 17) with the depth off by
            10-18 mm for seconds; 2.5 px gave ADD 4.1 instead of 6.6 mm and a covariance
            too large instead (NEES 1.5, hence the smaller ``model_std``: 3.6).
        contour_outlier_px: points with a larger prior residual are dropped (segmenter errors).
        contour_ignores_symmetry_axis: for an object whose surface is one of revolution
            (``ObjectModel.symmetry``: continuous, e.g. a can), the contour update does not
            turn it about that axis. The silhouette cannot see such a turn, but the filter's
            uncertainty about it is large (only the appearance constrains it), so the mesh's
            small asymmetries and mask noise would turn it freely: on the devbench wrist soup
            cans 12-14 deg of mean error about the axis, 1.0-1.2 deg without.
        center_sigma_px: noise std of the object-centre measurement.
        ``'appearance'``: the object's texture rendered in the region of interest vs the image
            (``measurements.appearance``); it sees rotations the silhouette cannot.
        fingertip_sigma_m: noise std of the fingertip contact distance.
        penetration_sigma_m: noise std of the non-penetration measurement (``'penetration'``:
            the deepest sample of each hand link inside the object is pushed back to
            ``-penetration_tolerance_m``).
        penetration_tolerance_m: how far a hand sample may be inside the object before the
            non-penetration measurement pushes it out (hand meshes and calibrations are not
            exact).
        appearance_method: ``'keypoints'`` (ORB matches between the rendered texture and the
            image -> reprojection residuals) or ``'direct'`` (normalised intensity alignment at
            the rendered texture's strongest gradients).
        appearance_roi_px: the appearance render's largest side [px].
        appearance_sigma_px: noise std of a keypoint's position [full-resolution px].
        appearance_sigma_intensity: noise std of a normalised intensity (direct method).
        appearance_points: most pixels of the direct method.
        appearance_min_points: fewer matches or pixels: no appearance update this frame.
        appearance_max_shift_px: a keypoint match may move at most this far from the
            prediction [full-resolution px].
        appearance_border_px: keypoints are detected only this far inside the rendered
            visible object and the observed mask [full-resolution px] (corners of a silhouette
            or of a finger in front do not move when a can turns about its axis).
        appearance_rerender_deg: the keypoints method renders the texture and detects its
            keypoints again only once the view has turned this much since the last render
            (the object's rotation relative to the camera plus the turn of the viewing ray,
            :func:`~.measurements.appearance.view_change_rad`), and while initialising or lost;
            in between, the last render's keypoints (3D points of the object and their ORB
            descriptors) are projected at the prediction and matched with the image's: no
            render, one keypoint detection instead of two. 0: render every frame. The default 5 deg
            gave the same devbench accuracy as 0 (ADD-S 2.2-2.4 mm on each set) at ~40 % less
            step time on 2 CPU cores (measured 2026-12-06, README).
        iterations: Gauss-Newton iterations of the contour update (iterated EKF) per frame
            while tracking (each re-renders the object: about 5-10 ms on 2 CPU cores).
        init_iterations: the same while initialising or lost (the initial guess can be
            centimetres off, where one linearisation overshoots).
        model_std: model-mismatch std as a pose error (x y z [m], rx ry rz [rad], camera
            axes): how closely the image can pin the pose given that the object mesh, the hand
            model and the calibration are not exact. The published covariance is ``P +
            diag(model_std)^2`` (about the object's centre). 1.8/1.8/3.6 mm, 0.0225 rad: on
            the devbench 270-frame sets (2026-12-06) NEES 4.6/3.6/5.6 (dev/held-out/fresh;
            6 is consistent), where 3/3/6 mm, 0.0375 rad gave 2.0/1.5/2.5 once the contour's
            boundary offset was modelled (``contour_common_px``).
        model_noise_measurements: the image measurements whose noise also gains the
            model-mismatch term ``H diag(model_std)^2 H^T`` in the filter (gate, NIS, gain).
            Default none: measured on the project's synthetic suite and the realistic
            development set (README, "Tracking accuracy"), the term in the gain lets a wrong
            contour pass the gate and weakens the silhouette's hold on depth (soup cans drift
            10-25 mm), while the published ``P + M`` alone keeps NEES consistent.
        roi_size_px: the region of interest around the object is rendered at most this size.
        parallel_prepare: a worker thread prepares measurements while this one works (the
            same results, bit for bit): the ``prior_only`` ones (the appearance render and
            its keypoint matching) while the ROI is rendered; the later measurements'
            preparations (the contour's distance transform) while the first is applied; and
            the next frame's contact query between frames. Off by default: measured on the
            2-core VM (2026-12-07, bench_latency live, interleaved pairs), it shortened p50
            by 1-2 ms while the VM was fast, but while it was slow the extra thread cost CPU
            the machine did not have (tracker 0.79-0.82 cores against 0.66-0.78): p90 40-56
            ms against 31-51, p99 60-76 against 39-67. Offline the wall time is the same.
        gate_probability: Mahalanobis gate.
    Initial state and loss of track:
        initial_std: std of the initial pose (x y z [m], rx ry rz [rad]).
        lost_after_frames: consecutive frames without an accepted image measurement (while a
            mask is available), or with a silhouette IoU below ``min_iou``, before the status is
            LOST.
        min_iou: the predicted silhouette must overlap the observed mask at least this much.
        max_penetration_m: the hand may be at most this deep inside the object at an estimate
            (model and calibration errors); deeper is evidence of a wrong pose. A frame with
            any such evidence (IoU, the contour's NIS above its gate, penetration) is
            implausible; ``lost_after_frames`` in a row make the track LOST (divergence).
        max_hand_gap_m: a held object farther than this from every hand point at an estimate
            is evidence of a wrong pose (or of an object no longer held).
        divergence_nis_probability: the contour's NIS above this chi-square quantile is
            evidence of a wrong pose (the gate, ``gate_probability``, only rejects the
            update).
        max_position_std_m: position std beyond which the track is LOST.
        reinit_min_iou: a re-initialisation hypothesis must overlap the mask this much.
        segmenter: ``'auto'`` (the mask topic when a mask comes, else the built-in colour
            segmenter), ``'topic'`` (never the built-in one) or ``'builtin'``.
    """
    dynamics: str = 'contact'
    contact_threshold_m: float = 0.005
    near_hand_m: float = 0.03
    q_contact: tuple[float, ...] = (0.0015, 0.0015, 0.0015, 0.02, 0.02, 0.02)
    q_hand_rigid: tuple[float, ...] = (0.003, 0.003, 0.003, 0.04, 0.04, 0.04)
    q_constant: tuple[float, ...] = (0.006, 0.006, 0.006, 0.08, 0.08, 0.08)
    sdf_range_m: float = 0.035
    measurements: tuple[str, ...] = DEFAULT_MEASUREMENTS
    contour_points: int = 160
    contour_sigma_px: float = 2.0
    contour_common_px: float = 2.5
    contour_outlier_px: float = 12.0
    contour_ignores_symmetry_axis: bool = True
    center_sigma_px: float = 3.0
    fingertip_sigma_m: float = 0.002
    penetration_sigma_m: float = 0.002
    penetration_tolerance_m: float = 0.001
    appearance_method: str = 'keypoints'
    appearance_roi_px: int = 160
    appearance_sigma_px: float = 2.0
    appearance_sigma_intensity: float = 0.3
    appearance_points: int = 200
    appearance_min_points: int = 6
    appearance_max_shift_px: float = 20.0
    appearance_border_px: float = 6.0
    appearance_rerender_deg: float = 5.0
    model_std: tuple[float, ...] = (0.0018, 0.0018, 0.0036, 0.0225, 0.0225, 0.0225)
    model_noise_measurements: tuple[str, ...] = ()
    iterations: int = 1
    init_iterations: int = 4
    roi_size_px: int = 128
    parallel_prepare: bool = False
    gate_probability: float = 0.9999
    initial_std: tuple[float, ...] = (0.01, 0.01, 0.01, 0.1, 0.1, 0.1)
    lost_after_frames: int = 6
    min_iou: float = 0.5
    max_penetration_m: float = 0.010
    max_hand_gap_m: float = 0.02
    divergence_nis_probability: float = 0.99
    max_position_std_m: float = 0.05
    reinit_min_iou: float = 0.5
    segmenter: str = 'auto'

    def __post_init__(self) -> None:
        if self.dynamics not in DYNAMICS:
            raise InputError(f'dynamics: expected one of {DYNAMICS}, got {self.dynamics!r}')
        known = measurement_names()
        unknown = set(self.measurements) - set(known)
        if unknown:
            raise InputError(f'measurements: unknown {sorted(unknown)}; choose from {known}')
        unknown = set(self.model_noise_measurements) - set(known)
        if unknown:
            raise InputError(f'model_noise_measurements: unknown {sorted(unknown)}; choose from '
                             f'{known}')
        if len(set(self.measurements)) != len(self.measurements):
            raise InputError(f'measurements: expected each name once, got '
                             f'{self.measurements}')
        for name in ('q_contact', 'q_hand_rigid', 'q_constant', 'initial_std', 'model_std'):
            v = getattr(self, name)
            if len(v) != 6 or min(v) <= 0:
                raise InputError(f'{name}: expected 6 positive stds (x y z rx ry rz), got {v}')
        if self.segmenter not in ('auto', 'topic', 'builtin'):
            raise InputError(f"segmenter: expected 'auto', 'topic' or 'builtin', got "
                             f'{self.segmenter!r}')
        if self.contour_points < 8:
            raise InputError(f'contour_points: expected >= 8, got {self.contour_points}')
        if self.appearance_method not in APPEARANCE_METHODS:
            raise InputError(f'appearance_method: expected one of {APPEARANCE_METHODS}, got '
                             f'{self.appearance_method!r}')
        if self.appearance_roi_px < 32 or self.appearance_min_points < 3 \
                or self.appearance_points < self.appearance_min_points:
            raise InputError('appearance_roi_px >= 32, appearance_min_points >= 3 and '
                             'appearance_points >= appearance_min_points expected, got '
                             f'{self.appearance_roi_px}, {self.appearance_min_points}, '
                             f'{self.appearance_points}')
        for name in ('appearance_sigma_px', 'appearance_sigma_intensity',
                     'appearance_max_shift_px'):
            if not getattr(self, name) > 0:
                raise InputError(f'{name}: expected > 0, got {getattr(self, name)}')
        if not self.appearance_rerender_deg >= 0:
            raise InputError(f'appearance_rerender_deg: expected >= 0, got '
                             f'{self.appearance_rerender_deg}')
        if not self.appearance_border_px >= 0:
            raise InputError(f'appearance_border_px: expected >= 0, got '
                             f'{self.appearance_border_px}')
        if not self.max_hand_gap_m > 0:
            raise InputError(f'max_hand_gap_m: expected > 0, got {self.max_hand_gap_m}')
        if not 0 < self.divergence_nis_probability < 1:
            raise InputError(f'divergence_nis_probability: expected in (0, 1), got '
                             f'{self.divergence_nis_probability}')
        if not self.penetration_sigma_m > 0 or not self.penetration_tolerance_m >= 0:
            raise InputError(f'penetration_sigma_m > 0 and penetration_tolerance_m >= 0 '
                             f'expected, got {self.penetration_sigma_m}, '
                             f'{self.penetration_tolerance_m}')
        if not self.max_penetration_m > 0:
            raise InputError(f'max_penetration_m: expected > 0, got {self.max_penetration_m}')
        if not self.sdf_range_m > 0:
            raise InputError(f'sdf_range_m: expected > 0, got {self.sdf_range_m}')
        if self.roi_size_px < 32:
            raise InputError(f'roi_size_px: expected >= 32, got {self.roi_size_px}')


def ablation_configs(base: TrackerConfig | None = None) -> dict[str, TrackerConfig]:
    """The benchmark's variants (paper Table I, adapted to the robot hand).

    - ``full``: contact dynamics + all measurements;
    - ``obs_only``: constant-pose dynamics + all measurements;
    - ``dyn_only``: contact dynamics, no measurement;
    - ``contour_only`` / ``center_only`` / ``fingertip_only``: contact dynamics + one
      measurement type;
    - ``hand_rigid_dyn``: the object moves with the hand root + all measurements;
    - ``no_appearance``: without the appearance measurement;
    - ``no_contact``: without the hand's contacts: no fingertip measurement, hand-root
      dynamics (the contact fit off);
    - ``no_penetration``: without the non-penetration measurement.
    """
    base = base or TrackerConfig()
    return {
        'full': base,
        'obs_only': replace(base, dynamics='constant'),
        'dyn_only': replace(base, measurements=()),
        'contour_only': replace(base, measurements=('contour',)),
        'center_only': replace(base, measurements=('object_center',)),
        'fingertip_only': replace(base, measurements=('fingertip_contact',)),
        'hand_rigid_dyn': replace(base, dynamics='hand_rigid'),
        'no_appearance': replace(base, measurements=tuple(
            m for m in base.measurements if m != 'appearance')),
        'no_contact': replace(base, dynamics='hand_rigid', measurements=tuple(
            m for m in base.measurements if m != 'fingertip_contact')),
        'no_penetration': replace(base, measurements=tuple(
            m for m in base.measurements if m != 'penetration')),
    }
