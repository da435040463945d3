"""Evaluation harness of the object trackers on synthetic sequences with ground truth.

Pieces, in the order a benchmark uses them:

- :class:`SequenceSpec` / :class:`SyntheticSuite`: which sequences (object, occlusion, in-hand
  motion, seed, length); each is generated once with ``handypriors_ros.synth.generate`` into a
  cache folder, ``${HANDYPRIORS_BENCH_CACHE:-/tmp/handypriors_bench}/<name>-<config hash>``
  (written under a temporary name and renamed when complete, so an interrupted generation is
  redone, never half-used). ``SyntheticSuite.quick()``: 3 sequences of 30 frames;
  ``SyntheticSuite.full()``: 9 sequences of 90 frames (3 objects x 3 occlusion levels).
- :func:`load_sequence`: reads a generated folder's bag ONCE into per-image
  :class:`Frame` s through the one offline reader (:func:`handypriors_ros.bag.sequence.
  read_sequence`, as ``track`` and ``refine`` read bags: image, camera, mask, joints
  interpolated to the image stamp, hand root pose from TF at the image stamp), plus the
  initial pose and the ground truth.
- :func:`evaluate`: runs one tracker over one sequence (``initialise`` then ``step`` for every
  frame, each step timed) and scores every frame against the ground truth.
- :func:`summarise` / :func:`write_report`: the figures per (method, sequence) and per method
  over all sequences, a markdown table, a JSON file and PNG plots of error over time.

Errors per frame (``handypriors_ros.core.metrics``): ADD-S and ADD over the object model's
surface samples, translation error of the mesh origin and geodesic rotation error. A frame
whose returned pose is not a finite rigid transform scores ``inf``.

Covariance consistency: the normalised estimation error squared (NEES) of each frame,
``e^T P^-1 e`` with ``e = (t_gt - t, log(R_gt R^T))`` in the EKF's error coordinates
(``core.tracking.ekf``) and ``P`` the returned covariance; a consistent 6-DoF estimate has
mean 6 and 99.7 % of its frames below the chi-square bound (20.1). NaN where the method
returns no usable covariance (the baselines).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np
from scipy.stats import chi2

from handypriors_ros import interfaces
from handypriors_ros.core import metrics
from handypriors_ros.core.errors import InputError
from handypriors_ros.core.models.object_model import ObjectModel
from handypriors_ros.core.frames import Frame
from handypriors_ros.core.tracking.types import TrackResult, TrackStatus

#: Environment variable naming the sequence cache folder.
CACHE_ENV = 'HANDYPRIORS_BENCH_CACHE'
DEFAULT_CACHE = Path('/tmp/handypriors_bench')

#: ADD-S threshold of the "% frames below" figure and range of the AUC, metres.
ADD_S_GOOD_M = 0.010
AUC_MAX_M = 0.10


# --------------------------------------------------------------------------------------------
# the suite of synthetic sequences
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SequenceSpec:
    """One synthetic sequence of the suite.

    Attributes:
        object_name: built-in object (``mustard_bottle``, ``cracker_box``, ``soup_can``...).
        occlusion: ``'low'``, ``'medium'`` or ``'heavy'`` (camera placement, see synth.scene).
        n_frames: camera frames (30 Hz).
        roll_deg: amplitude of the in-hand rolling about the palm normal.
        slip_mm: total slip along the fingers over the sequence (no finger explains it).
        seed: generator seed.
        width, height: image size [px]; the intrinsics are a RealSense D435 colour camera's
            (fx = fy = 615 px at 640 x 480) scaled to it.
    """
    object_name: str
    occlusion: str
    n_frames: int = 90
    roll_deg: float = 15.0
    slip_mm: float = 0.0
    seed: int = 0
    width: int = 640
    height: int = 480

    @property
    def name(self) -> str:
        """A readable, unique label, e.g. ``mustard_bottle-medium-roll15-slip5-s1-n30``."""
        return (f'{self.object_name}-{self.occlusion}-roll{self.roll_deg:g}'
                f'-slip{self.slip_mm:g}-s{self.seed}-n{self.n_frames}')

    def generate_config(self):
        """The :class:`~handypriors_ros.synth.generate.GenerateConfig` of this sequence."""
        from handypriors_ros.synth.generate import GenerateConfig
        from handypriors_ros.synth.scene import SceneConfig
        s = self.width / 640.0
        return GenerateConfig(
            object_name=self.object_name, seed=self.seed, width=self.width, height=self.height,
            fx=615.0 * s, fy=615.0 * s, cx=(self.width - 1) / 2.0, cy=(self.height - 1) / 2.0,
            scene=SceneConfig(n_frames=self.n_frames, occlusion=self.occlusion,
                              roll_deg=self.roll_deg, slip_mm=self.slip_mm))

    def cache_key(self) -> str:
        """``<name>-<hash>``: the hash covers every generator setting, so a changed default
        of the generator gives a new folder instead of a stale sequence."""
        text = json.dumps(dataclasses.asdict(self.generate_config()), sort_keys=True,
                          default=str)
        return f'{self.name}-{hashlib.sha1(text.encode()).hexdigest()[:10]}'


def default_cache_dir() -> Path:
    """``$HANDYPRIORS_BENCH_CACHE`` or ``/tmp/handypriors_bench``."""
    value = os.environ.get(CACHE_ENV, '').strip()
    return Path(value) if value else DEFAULT_CACHE


class SyntheticSuite:
    """A list of :class:`SequenceSpec`, generated on demand into a cache folder.

    Args:
        specs: the sequences.
        cache_dir: where sequences live; :func:`default_cache_dir` when None.
    """

    def __init__(self, specs: Iterable[SequenceSpec], cache_dir: str | Path | None = None
                 ) -> None:
        self.specs = tuple(specs)
        if not self.specs:
            raise InputError('specs: expected at least one SequenceSpec, got none')
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names):
            raise InputError(f'specs: expected unique sequences, got repeats in {names}')
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    @classmethod
    def quick(cls, cache_dir: str | Path | None = None) -> SyntheticSuite:
        """3 sequences of 30 frames: one per object and occlusion level, one with slip."""
        return cls([
            SequenceSpec('mustard_bottle', 'medium', n_frames=30, seed=1),
            SequenceSpec('cracker_box', 'heavy', n_frames=30, slip_mm=5.0, seed=2),
            SequenceSpec('soup_can', 'low', n_frames=30, seed=3),
        ], cache_dir)

    @classmethod
    def full(cls, cache_dir: str | Path | None = None) -> SyntheticSuite:
        """9 sequences of 90 frames: every object at every occlusion level; the motion
        alternates between rolling only (15 degrees) and rolling with 5 mm of slip."""
        specs = []
        for i, (obj, occ) in enumerate((o, c) for o in ('mustard_bottle', 'cracker_box',
                                                         'soup_can')
                                       for c in ('low', 'medium', 'heavy')):
            specs.append(SequenceSpec(obj, occ, n_frames=90, slip_mm=5.0 if i % 2 else 0.0,
                                      seed=10 + i))
        return cls(specs, cache_dir)

    def folder(self, spec: SequenceSpec) -> Path:
        """The cache folder of ``spec`` (it may not exist yet)."""
        return self.cache_dir / spec.cache_key()

    def ensure(self, spec: SequenceSpec, *, log: Callable[[str], None] | None = None) -> Path:
        """The folder of ``spec``, generated first if it is not in the cache."""
        folder = self.folder(spec)
        if (folder / 'ground_truth.npz').is_file() and (folder / 'bag').is_dir():
            return folder
        from handypriors_ros.synth.generate import generate
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # per process, so two benchmarks filling the same cache never share a partial folder
        partial = self.cache_dir / f'.{folder.name}.{os.getpid()}.partial'
        if partial.exists():
            shutil.rmtree(partial)
        if log is not None:
            log(f'generating {spec.name} ({spec.n_frames} frames, {spec.width}x{spec.height}) '
                f'into {folder} ...')
        start = time.perf_counter()
        try:
            generate(spec.generate_config(), partial, overwrite=True)
            if folder.exists():  # another process finished first: keep its copy
                shutil.rmtree(partial)
            else:
                partial.rename(folder)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        if log is not None:
            log(f'  generated in {time.perf_counter() - start:.0f} s')
        return folder

    def sequences(self, *, log: Callable[[str], None] | None = None) -> Iterator[Sequence]:
        """Each sequence loaded in turn (generated first when needed); one in memory at a
        time."""
        for spec in self.specs:
            yield load_sequence(self.ensure(spec, log=log), name=spec.name)


# --------------------------------------------------------------------------------------------
# loading a sequence
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Sequence:
    """A generated sequence, ready to feed a tracker.

    Attributes:
        name: label.
        folder: the generated folder.
        frames: one :class:`Frame` per image, in stamp order.
        joint_names: (J,) names of ``Frame.q``'s entries (the hand model's order).
        T_cam_obj_init: (4, 4) initial pose (``/handypriors/initial_pose``).
        T_cam_obj_gt: (N, 4, 4) true object pose at each image stamp.
        visible_fraction: (N,) fraction of the object's silhouette not hidden by the hand.
        object_model: the object (``object.ply``); its ``sample_points`` score ADD / ADD-S.
        mesh_path: path of ``object.ply``.
    """
    name: str
    folder: Path
    frames: tuple[Frame, ...]
    joint_names: tuple[str, ...]
    T_cam_obj_init: np.ndarray
    T_cam_obj_gt: np.ndarray
    visible_fraction: np.ndarray
    object_model: ObjectModel
    mesh_path: Path

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def stamps_ns(self) -> np.ndarray:
        """(N,) int64 image stamps."""
        return np.array([f.stamp_ns for f in self.frames], dtype=np.int64)


def load_sequence(folder: str | Path, *, name: str | None = None,
                  n_sample_points: int = 1000) -> Sequence:
    """Read a generated sequence folder (``bag/``, ``ground_truth.npz``, ``object.ply``).

    The bag is read once, by the one offline reader (:func:`handypriors_ros.bag.sequence.
    read_sequence`: the frame assembler in replay mode, the package's right Allegro hand and
    its naming, the INTERFACES.md topics): one frame per image (undistorted with its
    camera_info, the mask of the same stamp when the segmenter published one, the joints
    interpolated to the image stamp in the hand model's order, ``T_cam_base`` from TF at the
    image stamp).

    Raises:
        InputError: a missing file, no initial pose, a frame that could not be read (the
            scores need every image), a ground truth whose stamps differ from the images'.
        BagError: the bag cannot be read.
    """
    from handypriors_ros.bag.sequence import read_sequence
    from handypriors_ros.core.frames import HandNaming
    from handypriors_ros.core.models.kinematics import HandKinematics
    from handypriors_ros.resources import default_hand_urdf

    folder = Path(folder)
    for required in ('bag', 'ground_truth.npz', 'object.ply'):
        if not (folder / required).exists():
            raise InputError(f'folder: expected {folder / required} (a generated sequence), '
                             'it does not exist')
    hand = HandKinematics.from_urdf(default_hand_urdf())
    seq = read_sequence(folder / 'bag', HandNaming.resolve(hand.joint_names, hand.root_link))
    if seq.skipped:
        raise InputError(f'{folder / "bag"}: {seq.skipped} of {seq.images} images could not '
                         f'be read ({", ".join(seq.notes)})')
    if seq.T_cam_obj_initial is None:
        raise InputError(f'{interfaces.INITIAL_POSE_TOPIC}: no initial pose in {folder / "bag"}')
    gt = np.load(folder / 'ground_truth.npz')
    stamps = seq.stamps_ns
    if len(gt['stamps_ns']) != len(stamps) or not np.array_equal(gt['stamps_ns'], stamps):
        raise InputError(f'{folder / "ground_truth.npz"}: expected the {len(stamps)} image '
                         f'stamps of the bag, got {len(gt["stamps_ns"])} different stamps')
    model = ObjectModel.from_file(folder / 'object.ply', n_sample_points=n_sample_points)
    return Sequence(name=name or folder.name, folder=folder, frames=seq.frames,
                    joint_names=seq.joint_names, T_cam_obj_init=seq.T_cam_obj_initial,
                    T_cam_obj_gt=np.asarray(gt['T_cam_obj'], dtype=np.float64),
                    visible_fraction=np.asarray(gt['visible_fraction'], dtype=np.float64),
                    object_model=model, mesh_path=folder / 'object.ply')


# --------------------------------------------------------------------------------------------
# running a tracker
# --------------------------------------------------------------------------------------------


class Tracker(Protocol):
    """What :func:`evaluate` drives: the interface of the EKF tracker and the baselines."""

    def initialise(self, T_cam_obj: np.ndarray) -> None: ...

    def step(self, frame: Frame) -> TrackResult: ...


@dataclass(frozen=True, eq=False)
class EvalResult:
    """Per-frame results of one method on one sequence.

    Attributes:
        method, sequence: labels.
        stamps_ns: (N,) image stamps.
        T_cam_obj: (N, 4, 4) returned poses.
        T_cam_obj_gt: (N, 4, 4) true poses.
        add_s_m, add_m: (N,) ADD-S and ADD [m] (inf: the returned pose was not a finite
            rigid transform).
        translation_m: (N,) error of the mesh origin [m]. rotation_deg: (N,) [deg].
        step_ms: (N,) wall time of each ``step`` call [ms].
        status: (N,) int :class:`TrackStatus` values.
        nees: (N,) NEES of the returned covariance (module docstring; NaN: none).
        symmetric: whether the object is rotationally symmetric (ADD-S is the fair figure).
    """
    method: str
    sequence: str
    stamps_ns: np.ndarray
    T_cam_obj: np.ndarray
    T_cam_obj_gt: np.ndarray
    add_s_m: np.ndarray
    add_m: np.ndarray
    translation_m: np.ndarray
    rotation_deg: np.ndarray
    step_ms: np.ndarray
    status: np.ndarray
    symmetric: bool
    nees: np.ndarray | None = None


def _valid_pose(T: np.ndarray) -> bool:
    if T.shape != (4, 4) or not np.isfinite(T).all():
        return False
    R = T[:3, :3]
    return (np.abs(T[3] - [0.0, 0.0, 0.0, 1.0]).max() <= 1e-6
            and np.abs(R.T @ R - np.eye(3)).max() <= 1e-4 and np.linalg.det(R) > 0)


def frame_errors(T_est: np.ndarray, T_gt: np.ndarray, points: np.ndarray
                 ) -> dict[str, np.ndarray]:
    """ADD-S, ADD, translation [m] and rotation [deg] errors per frame.

    Args:
        T_est, T_gt: (N, 4, 4). points: (P, 3) object model points.
    Returns:
        ``{'add_s_m', 'add_m', 'translation_m', 'rotation_deg'}``, each (N,) float64; inf
        where ``T_est`` is not a finite rigid transform.
    """
    n = len(T_est)
    out = {k: np.full(n, np.inf) for k in ('add_s_m', 'add_m', 'translation_m',
                                           'rotation_deg')}
    ok = np.array([_valid_pose(T) for T in T_est], dtype=bool)
    if ok.any():
        est, gt = T_est[ok], T_gt[ok]
        out['add_s_m'][ok] = metrics.add_s(est, gt, points)
        out['add_m'][ok] = metrics.add(est, gt, points)
        out['translation_m'][ok] = metrics.translation_error(est, gt)
        out['rotation_deg'][ok] = metrics.rotation_error_deg(est, gt)
    return out


#: Probability of the chi-square bound of the "NEES inside" figure (6 degrees of freedom).
NEES_BOUND_PROBABILITY = 0.997


def nees(T_est: np.ndarray, T_gt: np.ndarray, P: np.ndarray) -> np.ndarray:
    """(N,) NEES ``e^T P^-1 e`` (module docstring); NaN where ``P`` is not a finite positive
    definite (6, 6) matrix or the pose is not a rigid transform.

    Args:
        T_est, T_gt: (N, 4, 4). P: (N, 6, 6) over (x y z rx ry rz), camera axes.
    """
    from scipy.spatial.transform import Rotation
    out = np.full(len(T_est), np.nan)
    for i, (T, G, C) in enumerate(zip(T_est, T_gt, P)):
        if not (_valid_pose(T) and C.shape == (6, 6) and np.isfinite(C).all()):
            continue
        e = np.concatenate([G[:3, 3] - T[:3, 3],
                            Rotation.from_matrix(G[:3, :3] @ T[:3, :3].T).as_rotvec()])
        try:
            L = np.linalg.cholesky(0.5 * (C + C.T))
        except np.linalg.LinAlgError:
            continue
        y = np.linalg.solve(L, e)
        out[i] = float(y @ y)
    return out


def evaluate(tracker_factory: Callable[[Sequence], Tracker], sequence: Sequence, *,
             method: str = 'tracker') -> EvalResult:
    """Run a tracker over a sequence and score every frame.

    ``tracker_factory(sequence)`` builds the tracker (not timed); then
    ``tracker.initialise(sequence.T_cam_obj_init)`` and ``tracker.step(frame)`` for every
    frame in order, each step timed with ``time.perf_counter``.

    Raises:
        InputError: a result whose stamp is not its frame's, or whose pose is not (4, 4).
        Whatever the tracker raises.
    """
    tracker = tracker_factory(sequence)
    tracker.initialise(sequence.T_cam_obj_init.copy())
    n = len(sequence.frames)
    poses = np.empty((n, 4, 4))
    step_ms = np.empty(n)
    status = np.empty(n, dtype=np.int64)
    cov = np.full((n, 6, 6), np.nan)
    for i, frame in enumerate(sequence.frames):
        start = time.perf_counter()
        result = tracker.step(frame)
        step_ms[i] = (time.perf_counter() - start) * 1e3
        if result.stamp_ns != frame.stamp_ns:
            raise InputError(f'{method}: result stamp {result.stamp_ns} ns for frame {i} of '
                             f'stamp {frame.stamp_ns} ns')
        T = np.asarray(result.T_cam_obj, dtype=np.float64)
        if T.shape != (4, 4):
            raise InputError(f'{method}: expected a (4, 4) T_cam_obj at frame {i}, got '
                             f'{T.shape}')
        poses[i] = T
        status[i] = int(result.status)
        C = getattr(result, 'covariance', None)
        if C is not None and np.shape(C) == (6, 6):
            cov[i] = C
    points = sequence.object_model.sample_points.detach().cpu().numpy().astype(np.float64)
    errors = frame_errors(poses, sequence.T_cam_obj_gt, points)
    return EvalResult(method=method, sequence=sequence.name, stamps_ns=sequence.stamps_ns,
                      T_cam_obj=poses, T_cam_obj_gt=sequence.T_cam_obj_gt.copy(),
                      step_ms=step_ms, status=status,
                      symmetric=bool(sequence.object_model.symmetry.is_symmetric),
                      nees=nees(poses, sequence.T_cam_obj_gt, cov), **errors)


# --------------------------------------------------------------------------------------------
# summaries and the report
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """Figures of one method on one sequence (or on all sequences: ``sequence == 'all'``).

    Attributes:
        method, sequence: labels. frames: frames scored.
        add_s_mean_mm: mean ADD-S [mm] (inf if any frame is inf).
        add_s_auc: area under the ADD-S accuracy curve from 0 to 10 cm, in [0, 100].
        add_s_below_10mm_pct: % frames with ADD-S < 10 mm.
        add_mean_mm: mean ADD [mm].
        rotation_mean_deg, translation_mean_mm: mean pose errors.
        ms_p50, ms_p99: percentiles of the per-frame step time [ms].
        lost_frames: frames reported LOST.
        nees_mean: mean NEES over the frames with one (NaN: none).
        nees_inside_pct: % of those frames inside the 99.7 % chi-square bound.
    """
    method: str
    sequence: str
    frames: int
    add_s_mean_mm: float
    add_s_auc: float
    add_s_below_10mm_pct: float
    add_mean_mm: float
    rotation_mean_deg: float
    translation_mean_mm: float
    ms_p50: float
    ms_p99: float
    lost_frames: int
    nees_mean: float = float('nan')
    nees_inside_pct: float = float('nan')


def summarise(results: EvalResult | Iterable[EvalResult], *, method: str | None = None,
              sequence: str | None = None) -> Summary:
    """The :class:`Summary` of one result, or of several pooled frame by frame."""
    rs = [results] if isinstance(results, EvalResult) else list(results)
    if not rs:
        raise InputError('results: expected at least one EvalResult, got none')

    def cat(key: str) -> np.ndarray:
        return np.concatenate([getattr(r, key) for r in rs])

    add_s = cat('add_s_m')
    step_ms = cat('step_ms')
    ne = np.concatenate([r.nees if r.nees is not None else np.full(len(r.add_s_m), np.nan)
                         for r in rs])
    ne = ne[np.isfinite(ne)]
    bound = float(chi2.ppf(NEES_BOUND_PROBABILITY, 6))
    return Summary(
        method=method or rs[0].method,
        sequence=sequence or (rs[0].sequence if len(rs) == 1 else 'all'),
        frames=int(len(add_s)),
        add_s_mean_mm=float(add_s.mean() * 1e3),
        add_s_auc=100.0 * metrics.auc_add(add_s, AUC_MAX_M),
        add_s_below_10mm_pct=100.0 * metrics.fraction_within(add_s, ADD_S_GOOD_M),
        add_mean_mm=float(cat('add_m').mean() * 1e3),
        rotation_mean_deg=float(cat('rotation_deg').mean()),
        translation_mean_mm=float(cat('translation_m').mean() * 1e3),
        ms_p50=float(np.percentile(step_ms, 50)),
        ms_p99=float(np.percentile(step_ms, 99)),
        lost_frames=int((cat('status') == int(TrackStatus.LOST)).sum()),
        nees_mean=float(ne.mean()) if len(ne) else float('nan'),
        nees_inside_pct=float(100.0 * (ne <= bound).mean()) if len(ne) else float('nan'))


_COLUMNS = (('method', 'method', '{}'), ('sequence', 'sequence', '{}'),
            ('frames', 'frames', '{}'), ('add_s_mean_mm', 'ADD-S mm', '{:.1f}'),
            ('add_s_auc', 'ADD-S AUC', '{:.1f}'), ('add_s_below_10mm_pct', '<10mm %', '{:.0f}'),
            ('add_mean_mm', 'ADD mm', '{:.1f}'), ('rotation_mean_deg', 'rot deg', '{:.1f}'),
            ('translation_mean_mm', 'trans mm', '{:.1f}'), ('ms_p50', 'ms p50', '{:.1f}'),
            ('ms_p99', 'ms p99', '{:.1f}'), ('lost_frames', 'lost', '{}'),
            ('nees_mean', 'NEES', '{:.1f}'), ('nees_inside_pct', 'NEES<99.7% %', '{:.0f}'))


def format_table(summaries: Iterable[Summary]) -> str:
    """A markdown table, one row per summary."""
    header = '| ' + ' | '.join(title for _, title, _ in _COLUMNS) + ' |'
    rule = '|' + '|'.join('---' if key in ('method', 'sequence') else '---:'
                          for key, _, _ in _COLUMNS) + '|'
    rows = ['| ' + ' | '.join(fmt.format(getattr(s, key)) for key, _, fmt in _COLUMNS) + ' |'
            for s in summaries]
    return '\n'.join([header, rule, *rows])


def overall_summaries(results: Iterable[EvalResult]) -> list[Summary]:
    """One pooled :class:`Summary` per method over all its sequences, in first-seen order."""
    by_method: dict[str, list[EvalResult]] = {}
    for r in results:
        by_method.setdefault(r.method, []).append(r)
    return [summarise(rs, method=m, sequence='all') for m, rs in by_method.items()]


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_bytes(data)
    os.replace(tmp, path)


def plot_sequence(results: Iterable[EvalResult], path: str | Path) -> None:
    """PNG of ADD-S [mm] and rotation error [deg] over time, one line per method."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rs = list(results)
    fig, (ax_add, ax_rot) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for r in rs:
        t = (r.stamps_ns - r.stamps_ns[0]) / 1e9
        add_s = np.where(np.isfinite(r.add_s_m), r.add_s_m * 1e3, np.nan)
        rot = np.where(np.isfinite(r.rotation_deg), r.rotation_deg, np.nan)
        (line,) = ax_add.plot(t, add_s, label=r.method, lw=1.2)
        ax_rot.plot(t, rot, color=line.get_color(), lw=1.2)
        lost = r.status == int(TrackStatus.LOST)
        if lost.any():
            ax_add.plot(t[lost], add_s[lost], 'x', color=line.get_color(), ms=4)
    ax_add.axhline(ADD_S_GOOD_M * 1e3, color='grey', ls=':', lw=1)
    ax_add.set_ylabel('ADD-S [mm]')
    ax_rot.set_ylabel('rotation error [deg]')
    ax_rot.set_xlabel('time [s]')
    ax_add.set_title(f'{rs[0].sequence}  (x: frames reported lost)' if rs else '')
    ax_add.legend(fontsize=8, ncol=3)
    for ax in (ax_add, ax_rot):
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f'.{path.stem}.tmp.png')
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def write_report(results: Iterable[EvalResult], out_dir: str | Path, *,
                 notes: Iterable[str] = ()) -> Path:
    """Write ``report.md`` (overall and per-sequence tables), ``summary.json``,
    ``frames.npz`` (every per-frame array) and ``<sequence>.png`` plots into ``out_dir``.

    Each file is written under a temporary name and renamed, so a crash never leaves a half
    file. Returns the path of ``report.md``.
    """
    rs = list(results)
    if not rs:
        raise InputError('results: expected at least one EvalResult, got none')
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    overall = overall_summaries(rs)
    per_sequence = [summarise(r) for r in rs]
    sequences = list(dict.fromkeys(r.sequence for r in rs))
    lines = ['# Tracker benchmark', '',
             'ADD-S / ADD over the object model surface samples; AUC of ADD-S over 0-10 cm '
             '(x100); ms = wall time of one `step` call on this machine.', '']
    lines += [f'- {note}' for note in notes]
    lines += ['', '## All sequences', '', format_table(overall), '',
              '## Per sequence', '', format_table(per_sequence), '']
    for seq in sequences:
        png = f'{seq}.png'
        plot_sequence([r for r in rs if r.sequence == seq], out / png)
        lines += [f'![{seq}]({png})', '']
    report = out / 'report.md'
    _write_atomic(report, '\n'.join(lines).encode())
    _write_atomic(out / 'summary.json', json.dumps(
        {'overall': [dataclasses.asdict(s) for s in overall],
         'per_sequence': [dataclasses.asdict(s) for s in per_sequence]},
        indent=2, default=float).encode())
    arrays = {}
    for r in rs:
        for key in ('stamps_ns', 'T_cam_obj', 'add_s_m', 'add_m', 'translation_m',
                    'rotation_deg', 'step_ms', 'status', 'nees'):
            if getattr(r, key) is None:
                continue
            arrays[f'{r.method}/{r.sequence}/{key}'] = getattr(r, key)
    tmp = out / '.frames.tmp.npz'
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, out / 'frames.npz')
    return report


__all__ = ['SequenceSpec', 'SyntheticSuite', 'Sequence', 'load_sequence',
           'Tracker', 'EvalResult', 'frame_errors', 'nees', 'evaluate', 'Summary', 'summarise',
           'overall_summaries', 'format_table', 'plot_sequence', 'write_report',
           'default_cache_dir', 'CACHE_ENV']
