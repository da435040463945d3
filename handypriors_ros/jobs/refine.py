"""The refinement job: ``handypriors refine`` and the refiner node (thin fronts over it), with its
one schema of options (:data:`REFINE_SCHEMA`: the job's paths, the object, hand and inputs
shared with the tracker, and every :class:`~handypriors_ros.core.refine.RefineConfig` setting;
config/refine.yaml is made from it).

The job (:func:`run_refine`):

1. read BAG into per-image frames through the one offline reader
   (:func:`~handypriors_ros.bag.sequence.read_sequence`: the frame assembler in replay mode,
   the tracker's hand naming and tolerances); an image that cannot be used is skipped and
   counted, never the whole bag;
2. initial poses: ``/handypriors/object_pose`` of ``init_bag`` (``handypriors track``'s
   output, one per image stamp), else ``initial_pose`` or the bag's
   ``/handypriors/initial_pose``, carried through the sequence by the quasistatic dynamics;
3. optimise every pose with Adam (``core.refine``) on ``device``, with progress and a
   checkpoint every ``checkpoint_every`` iterations in ``checkpoint_dir`` (default
   ``<out_bag>.checkpoint``, removed after success); ``resume`` continues an interrupted run;
4. write ``out_bag`` (MCAP, atomically) with the topics and stamps of ``handypriors track``:
   ``/handypriors/object_pose``, ``/handypriors/track`` and ``/tf`` per image;
5. with ``report_dir``: loss curves, per-frame errors (ground truth: ``ground_truth`` or
   ``ground_truth.npz`` next to the bag folder, as ``handypriors generate`` writes it), an
   overlay GIF and a summary table.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from handypriors_ros import interfaces
from handypriors_ros.core.errors import InputError
from handypriors_ros.core.refine.config import RefineConfig
from handypriors_ros.jobs.options import (DEVICE, OBJECT_FRAME, OBJECT_MESH, OBJECT_SCALE,
                                          InputOptions, check_initial_pose, initial_pose_option,
                                          input_options, load_object, open_input_bag,
                                          pose_vector_to_matrix, resolve_device)
from handypriors_ros.jobs.schema import Option, Schema
from handypriors_ros.jobs.stop import StopRequest

if TYPE_CHECKING:
    from handypriors_ros.core.refine import RefineResult

ProgressCallback = Callable[[int, int], None]
JOB = 'the refinement job'
SETTINGS = 'refinement settings (RefineConfig, handypriors_ros/core/refine/config.py)'
_CLI_SETTINGS = {'iterations': '--iterations'}


def refine_config_options() -> tuple[Option, ...]:
    """One option per :class:`RefineConfig` setting (flattened names: ``weights.mask``),
    defaults and descriptions from it."""
    docs = RefineConfig.describe()
    options = []
    for name, value in RefineConfig().to_flat_dict().items():
        if isinstance(value, bool):
            kind = 'bool'
        elif isinstance(value, int):
            kind = 'int'
        elif isinstance(value, float):
            kind = 'float'
        elif isinstance(value, list):
            kind, value = 'float_list', tuple(float(v) for v in value)
        else:
            raise TypeError(f'RefineConfig {name}: no option type for {type(value)}')
        options.append(Option(name, kind, value, docs[name], cli=_CLI_SETTINGS.get(name),
                              metavar='N', group=SETTINGS))
    return tuple(options)


_INPUTS = input_options(run_time=False)  # hand_urdf, the naming, the topics, the matching

#: ``handypriors refine`` and refiner_node: the job, the object, hand and inputs, the settings.
REFINE_SCHEMA = Schema('refine', (
    Option('bag', 'str', '', 'input bag (rosbag2 folder or file, MCAP or sqlite3) with the '
           'INTERFACES.md topics; required', cli='BAG', required=True, group=JOB),
    Option('out_bag', 'str', '', 'output bag (MCAP): object_pose, track and /tf per image; '
           'required', cli='--out', metavar='OUT_BAG', required=True, group=JOB),
    Option('init_bag', 'str', '', "'handypriors track' output with the initial poses; '' = "
           "the bag's initial pose carried by the quasistatic dynamics", cli='--init',
           metavar='TRACK_BAG', group=JOB),
    Option('report_dir', 'str', '', "report folder; '' = no report", cli='--report',
           metavar='DIR', group=JOB),
    Option('checkpoint_dir', 'str', '', "checkpoint folder; '' = <out_bag>.checkpoint, removed "
           'after success', cli='--checkpoint', metavar='DIR', group=JOB),
    Option('resume', 'bool', False, 'continue from the checkpoint of an interrupted run',
           cli='--resume', group=JOB),
    Option('fresh', 'bool', False, 'start from the beginning, replacing the checkpoint of an '
           'interrupted run (without --resume or --fresh such a checkpoint is an error: it is '
           'never discarded silently)', cli='--fresh', group=JOB),
    Option('strict', 'bool', False, 'a truncated bag or an image that cannot be used is an '
           'error (default: read up to the damage, skip the image; both reported)',
           cli='--strict', group=JOB),
    Option('ground_truth', 'str', '', "ground truth npz for the report; '' = ground_truth.npz "
           'next to the bag folder when present', cli='--ground-truth', metavar='NPZ',
           group=JOB),
    Option('overwrite', 'bool', False, 'replace an existing output bag', cli='--overwrite',
           group=JOB),
    Option('publish_results', 'bool', True, 'refiner_node: publish the refined estimates on '
           'the output topics when done', offline=False, group=JOB),
    OBJECT_MESH, OBJECT_SCALE, _INPUTS[0], OBJECT_FRAME, DEVICE,
    initial_pose_option(run_time=False), *_INPUTS[1:], *refine_config_options()))


def refine_yaml() -> str:
    """config/refine.yaml (``python -m handypriors_ros.jobs refine > config/refine.yaml``)."""
    return REFINE_SCHEMA.defaults_yaml([
        'Defaults of every refiner parameter: the refiner_node parameters and what',
        "'handypriors refine --params' accepts (declared in handypriors_ros/jobs/refine.py).",
        'Generated: python -m handypriors_ros.jobs refine > config/refine.yaml',
        'Units: metres, radians, pixels of the ROI; loss terms: core/refine/config.py.'])


def load_refine_config(path: str | Path) -> RefineConfig:
    """The refinement settings of a parameters file (e.g. config/refine.yaml; the job's other
    keys are accepted and not used here).

    Raises:
        InputError: a missing or bad file, an unknown key, a bad value.
    """
    return _settings(REFINE_SCHEMA.read_params_file(path))


def _settings(values: Mapping[str, Any]) -> RefineConfig:
    """The RefineConfig of the settings among option values (defaults for the others)."""
    names = set(RefineConfig().to_flat_dict())
    return RefineConfig.from_mapping({k: v for k, v in values.items() if k in names},
                                     source='parameters')


@dataclass(frozen=True)
class RefineJob:
    """One refinement job (the command line's options, the node's parameters).

    Attributes:
        bag: input bag. object_mesh: mesh file. out_bag: output bag.
        config: the refinement settings.
        input: the hand, its naming, the input topics and tolerances.
        init_bag: ``handypriors track`` output with initial poses, or None.
        initial_pose: (4, 4) pose of the first image overriding the bag's, or None.
        report_dir: report folder, or None.
        checkpoint_dir: checkpoint folder; None: ``<out_bag>.checkpoint``, removed after
            success.
        resume: continue from the checkpoint.
        fresh: replace the checkpoint of an interrupted run (without ``resume`` or ``fresh``
            an existing checkpoint is an error).
        strict: a truncated bag or an unusable image is an error.
        ground_truth: ground-truth npz; None: ``<bag>/../ground_truth.npz`` when present.
        object_scale: scale of the mesh to metres.
        object_frame: child frame of the output /tf; object_id of TrackedObject.
        device: ``auto``, ``cpu`` or ``cuda``.
        overwrite: replace an existing output bag.
        publish_results: the node publishes the estimates when done.
        live_only: ``'name=value'`` of options set that have no effect offline.
    """

    bag: Path
    object_mesh: Path
    out_bag: Path
    config: RefineConfig
    input: InputOptions
    init_bag: Path | None = None
    initial_pose: np.ndarray | None = None
    report_dir: Path | None = None
    checkpoint_dir: Path | None = None
    resume: bool = False
    fresh: bool = False
    strict: bool = False
    ground_truth: Path | None = None
    object_scale: float = 1.0
    object_frame: str = interfaces.OBJECT_FRAME
    device: str = 'auto'
    overwrite: bool = False
    publish_results: bool = True
    live_only: tuple[str, ...] = ()

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> RefineJob:
        """From :data:`REFINE_SCHEMA` values (a node's parameters, the command line's).

        Raises:
            InputError: a missing path or a bad value (named).
        """
        v = REFINE_SCHEMA.validate(values)
        check_initial_pose(v['initial_pose'])
        if v['resume'] and v['fresh']:
            raise InputError('--resume and --fresh: give one (--resume continues the '
                             'checkpoint, --fresh replaces it)')
        if not v['object_frame']:
            raise InputError("object_frame: expected a non-empty string, got ''")

        def path(name: str) -> Path | None:
            return Path(v[name]) if v[name] else None

        return cls(bag=Path(v['bag']), object_mesh=Path(v['object_mesh']),
                   out_bag=Path(v['out_bag']), config=_settings(v),
                   input=InputOptions.from_values(v), init_bag=path('init_bag'),
                   initial_pose=(pose_vector_to_matrix(v['initial_pose'])
                                 if v['initial_pose'] else None),
                   report_dir=path('report_dir'), checkpoint_dir=path('checkpoint_dir'),
                   resume=v['resume'], fresh=v['fresh'], strict=v['strict'],
                   ground_truth=path('ground_truth'),
                   object_scale=v['object_scale'], object_frame=v['object_frame'],
                   device=v['device'], overwrite=v['overwrite'],
                   publish_results=v['publish_results'],
                   live_only=tuple(REFINE_SCHEMA.live_only_set(v)))


@dataclass(frozen=True)
class RefineOutcome:
    """What :func:`run_refine` did.

    Attributes:
        result: the core's :class:`~handypriors_ros.core.refine.RefineResult`.
        stamps_ns: (N,) image stamps. camera_frame: their frame.
        summary: the figures printed and written to the report (JSON-able).
        setup_seconds: reading the bag and preparing the problem [s].
        out_bag: the output bag. report_dir: the report folder or None.
    """

    result: RefineResult
    stamps_ns: np.ndarray
    camera_frame: str
    summary: dict = field(repr=False)
    setup_seconds: float
    out_bag: Path
    report_dir: Path | None


def read_init_poses(path: Path, stamps_ns: np.ndarray, camera_frame: str, *,
                    topic: str = interfaces.OBJECT_POSE_TOPIC) -> np.ndarray:
    """(N, 4, 4) poses of ``topic`` (PoseWithCovarianceStamped) at each image stamp.

    Raises:
        BagError: the bag cannot be read, lacks the topic, is in another frame, or has no pose
            for some image stamps (counted, the first named).
    """
    from handypriors_ros.bag import BagError, BagReader
    from handypriors_ros.ros.conversions import pose_to_matrix, stamp_to_ns

    poses: dict[int, np.ndarray] = {}
    with BagReader(path) as reader:
        if reader.topics.get(topic, ('', 0))[1] == 0:
            raise BagError(f'--init {path}: no messages on {topic} (its topics: '
                           f'{", ".join(sorted(reader.topics)) or "none"})')
        for m in reader.messages([topic], on_truncated='raise'):
            msg = m.deserialize()
            frame = msg.header.frame_id.lstrip('/')
            if frame != camera_frame.lstrip('/'):
                raise BagError(f'--init {path}: {topic} is in frame {frame!r}, the images in '
                               f'{camera_frame!r}')
            try:
                poses[stamp_to_ns(msg.header.stamp)] = pose_to_matrix(msg.pose.pose)
            except InputError as exc:
                raise BagError(f'--init {path}: {topic} at {m.log_time_ns} ns: {exc}') from exc
    missing = [int(s) for s in stamps_ns if int(s) not in poses]
    if missing:
        raise BagError(f'--init {path}: no {topic} for {len(missing)} of {len(stamps_ns)} image '
                       f'stamps (first: {missing[0]} ns); is it the track output of this bag?')
    return np.stack([poses[int(s)] for s in stamps_ns])


#: The files a report folder receives (core.refine.report.write_report); only these are
#: ever replaced in it.
REPORT_FILES = ('losses.png', 'per_frame.csv', 'errors.png', 'overlay.gif', 'summary.json',
                'summary.md')


def _ground_truth_file(job: RefineJob) -> Path | None:
    """The ground-truth file: ``ground_truth``, else ``ground_truth.npz`` next to the bag
    folder when present, else None.

    Raises:
        InputError: ``ground_truth`` given and not a file.
    """
    if job.ground_truth is not None:
        if not Path(job.ground_truth).is_file():
            raise InputError(f'--ground-truth {job.ground_truth}: file not found (give the '
                             "ground_truth.npz that 'handypriors generate' wrote, or leave it "
                             'out)')
        return Path(job.ground_truth)
    bag = Path(job.bag)
    candidate = (bag.parent if bag.is_dir() else bag.parent.parent) / 'ground_truth.npz'
    return candidate if candidate.is_file() else None


def _load_ground_truth(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stamps_ns, T_cam_obj, K) of a ground-truth npz.

    Raises:
        InputError: not an npz with those arrays of the right shapes.
    """
    try:
        with np.load(path) as gt:
            stamps, T, K = (np.asarray(gt['stamps_ns']), np.asarray(gt['T_cam_obj']),
                            np.asarray(gt['K']))
    except Exception as exc:  # numpy raises many types on a broken file
        raise InputError(f'--ground-truth {path}: expected an npz with stamps_ns, T_cam_obj '
                         f'and K (as handypriors generate writes), got: '
                         f'{" ".join(str(exc).split()) or type(exc).__name__}') from exc
    if T.ndim != 3 or T.shape[1:] != (4, 4) or len(T) != len(stamps) or K.shape != (3, 3):
        raise InputError(f'--ground-truth {path}: expected T_cam_obj (N, 4, 4) for N stamps '
                         f'and K (3, 3), got {T.shape}, {len(stamps)} stamps, {K.shape}')
    return stamps, T, K


def _ground_truth(job: RefineJob, stamps_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(T_cam_obj_gt (N, 4, 4), K (3, 3)) matched by stamp, or None."""
    path = _ground_truth_file(job)
    if path is None:
        return None
    stamps, T, K = _load_ground_truth(path)
    index = {int(s): i for i, s in enumerate(stamps)}
    missing = [int(s) for s in stamps_ns if int(s) not in index]
    if missing:
        raise InputError(f'--ground-truth {path}: no pose for {len(missing)} image stamps '
                         f'(first: {missing[0]} ns); is it the ground truth of this bag?')
    return np.stack([T[index[int(s)]] for s in stamps_ns]), np.asarray(K, dtype=np.float64)


def track_results(result: RefineResult, stamps_ns: np.ndarray, config: RefineConfig,
                  seconds_per_frame: float) -> list:
    """One :class:`TrackResult` per image from a refinement result (status TRACKING)."""
    from handypriors_ros.core.tracking.types import TrackResult, TrackStatus

    cov = np.diag([config.output_std_m ** 2] * 3 + [config.output_std_rad ** 2] * 3)
    return [TrackResult(stamp_ns=int(s), T_cam_obj=result.T_cam_obj[i], covariance=cov,
                        status=TrackStatus.TRACKING,
                        status_reason=f'refined offline ({result.iterations} iterations)',
                        contacts=result.contacts[i], mask_source='topic',
                        latency_s={'total': float(seconds_per_frame)})
            for i, s in enumerate(stamps_ns)]


def output_messages(results: list, camera_frame: str, object_frame: str) -> list:
    """``[(topic, rclpy message, log_time_ns)]`` of the estimates, as ``track`` writes them."""
    from handypriors_ros.jobs.outputs import result_messages

    return [m for r in results for m in result_messages(r, camera_frame, object_frame)]


def run_refine(job: RefineJob, *, progress: ProgressCallback | None = None,
               on_messages: Callable[[list], None] | None = None,
               warn: Callable[[str], None] | None = None,
               resume: bool | None = None, fresh: bool | None = None,
               stop: StopRequest | None = None) -> RefineOutcome:
    """Run a refinement job end to end (module docstring).

    Every path it will write (the output bag, the report folder, the checkpoint folder) and
    every file it will read is checked before any work starts.

    Args:
        job: what to do.
        progress: called with (iterations done, total).
        on_messages: called with the output messages (``[(topic, msg, log_time_ns)]``) after
            the bag is written (the node publishes them).
        warn: problems met reading the bag, one line each (throttled per kind).
        resume, fresh: override ``job.resume`` / ``job.fresh`` (None: the job's).
        stop: polled after every iteration; once requested, a checkpoint is written and
            :class:`~handypriors_ros.jobs.stop.JobStopped` raised (its ``exit_code`` is the
            request's).
    Raises:
        InputError, BagError, CheckpointError, ModelError: bad input (one-line messages).
        JobStopped: ``stop`` was requested (the checkpoint is written; ``--resume`` goes on).
    """
    import torch

    from handypriors_ros.bag import check_output_bag, check_output_dir
    from handypriors_ros.bag.sequence import read_sequence
    from handypriors_ros.core.frames import ProblemCounter
    from handypriors_ros.core.refine import CHECKPOINT_NAME, CheckpointError, RefineProblem, \
        Refiner, remove_checkpoint
    from handypriors_ros.core.refine.report import overlay_frames, score_poses, write_report
    from handypriors_ros.jobs.outputs import write_output_bag

    resume = job.resume if resume is None else resume
    fresh = job.fresh if fresh is None else fresh
    if resume and fresh:
        raise InputError('--resume and --fresh: give one (--resume continues the checkpoint, '
                         '--fresh replaces it)')
    bag, out, mesh = Path(job.bag), Path(job.out_bag), Path(job.object_mesh)
    # Everything read or written is checked first: a wrong path fails in a second, not after
    # the optimisation.
    if not bag.exists():
        raise InputError(f'BAG: not found: {bag} (give a rosbag2 folder or .mcap/.db3 file)')
    if not mesh.is_file():
        raise InputError(f'--object: mesh file not found: {mesh}')
    if job.init_bag is not None and not Path(job.init_bag).exists():
        raise InputError(f'--init: not found: {job.init_bag} (give the output bag of '
                         "'handypriors track' for this bag, or leave --init out)")
    inputs = tuple(p for p in (bag, mesh, job.init_bag, job.ground_truth) if p is not None)
    check_output_bag(out, overwrite=job.overwrite, inputs=inputs, name='--out',
                     flag='--overwrite')
    own_checkpoint = job.checkpoint_dir is None
    ckpt = Path(job.checkpoint_dir) if job.checkpoint_dir else out.with_name(
        out.name + '.checkpoint')
    ckpt_file = ckpt / CHECKPOINT_NAME
    check_output_dir(ckpt, overwrite=True, inputs=inputs, files=(CHECKPOINT_NAME,),
                     name='--checkpoint' if job.checkpoint_dir else 'checkpoint folder')
    if _real(ckpt) == _real(out) or _is_within(_real(ckpt), _real(out)):
        raise InputError(f'--checkpoint {ckpt}: is the output bag {out} or inside it (give '
                         'another folder)')
    if job.report_dir is not None:
        check_output_dir(job.report_dir, overwrite=job.overwrite, inputs=inputs,
                         files=REPORT_FILES, name='--report', flag='--overwrite')
        if _real(job.report_dir) == _real(out) or _is_within(_real(job.report_dir), _real(out)):
            raise InputError(f'--report {job.report_dir}: is the output bag {out} or inside it '
                             '(give another folder)')
    if ckpt_file.exists() and not resume and not fresh:
        raise InputError(f'{ckpt} holds the checkpoint of an interrupted run: add --resume to '
                         'continue it, or --fresh to start again (it is replaced)')
    gt_file = _ground_truth_file(job)
    if gt_file is not None:
        _load_ground_truth(gt_file)
    open_input_bag(bag)
    if job.init_bag is not None:
        open_input_bag(job.init_bag, flag='--init')
    device = resolve_device(job.device)
    start = time.perf_counter()
    hand = job.input.load_hand()
    naming = job.input.naming(hand.joint_names, hand.root_link)
    model = load_object(str(mesh), job.object_scale)
    problems = ProblemCounter(warn)
    seq = read_sequence(bag, naming, topics=job.input.topics(),
                        assembly=job.input.assembly(naming.hand_root_frame), problems=problems,
                        strict=job.strict)
    if job.strict and seq.skipped:
        raise InputError(f'--strict: {seq.skipped} of {seq.images} images of {bag} cannot be '
                         f'used ({", ".join(seq.notes)}); leave out --strict to skip them')
    stamps = seq.stamps_ns
    cfg = job.config
    if job.init_bag is not None:
        init = dict(T_cam_obj_init=read_init_poses(Path(job.init_bag), stamps, seq.camera_frame))
        init_source = f'track output {job.init_bag}'
    else:
        first = job.initial_pose if job.initial_pose is not None else seq.T_cam_obj_initial
        if first is None:
            raise InputError(f'no initial pose: {bag} has no {interfaces.resolve(job.input.initial_pose_topic)} '
                             'message; give --init TRACK_BAG or --initial-pose')
        init = dict(T_cam_obj_first=first)
        init_source = 'initial pose + quasistatic dynamics'
    gt = _ground_truth(job, stamps)  # matched to the stamps before the optimisation
    problem = RefineProblem.build(seq.frames, model, hand, cfg, device=device, **init)
    setup_s = time.perf_counter() - start

    if fresh:
        ckpt_file.unlink(missing_ok=True)  # asked for; only our file, never the folder
    refiner = Refiner(problem)

    def on_progress(done: int, total: int) -> None:
        if progress is not None:
            progress(done, total)
        if stop is not None and stop.requested and done < total:
            refiner.save_checkpoint(ckpt_file)
            raise stop.stopped(f'checkpoint of iteration {done}/{total} written to {ckpt}; '
                               'continue with the same command and --resume')

    try:
        result = refiner.run(checkpoint_dir=ckpt, resume=resume, progress=on_progress)
    except CheckpointError as exc:
        raise CheckpointError(f'{exc}; use --fresh to start again (it replaces the '
                              'checkpoint)') from exc
    N = len(stamps)
    per_frame_s = result.seconds / N
    messages = output_messages(track_results(result, stamps, cfg, per_frame_s),
                               seq.camera_frame, job.object_frame)
    write_output_bag(out, messages, overwrite=job.overwrite, inputs=inputs)
    if own_checkpoint:
        remove_checkpoint(ckpt)  # the folder only when nothing else is in it

    with torch.no_grad():
        d_init = problem.physics_losses(torch.as_tensor(
            problem.T_cam_obj_init, dtype=torch.float32, device=problem.device)).distance
        d_ref = problem.physics_losses(
            torch.as_tensor(result.T_cam_obj, dtype=torch.float32, device=problem.device),
            problem.corrected_base(None if not cfg.optimise_hand_root else torch.as_tensor(
                result.T_correction, dtype=torch.float32, device=problem.device))).distance
    T_gt, K = gt if gt is not None else (None, None)
    points = model.sample_points.detach().cpu().numpy().astype(np.float64)
    scores_init = score_poses(problem.T_cam_obj_init, points, d_init.cpu().numpy(),
                              T_cam_obj_gt=T_gt, K=K)
    scores_ref = score_poses(result.T_cam_obj, points, d_ref.cpu().numpy(),
                             T_cam_obj_gt=T_gt, K=K)
    summary = {
        'bag': str(bag), 'object': str(mesh), 'out_bag': str(out), 'frames': N,
        'images': seq.images, 'images_skipped': seq.skipped, 'problems': dict(seq.problems),
        'masks_missing': seq.masks_missing, 'initialisation': init_source,
        'device': device, 'iterations': result.iterations,
        'resumed_from_iteration': result.resumed_from,
        'nonfinite_gradient_entries_skipped': result.nonfinite_gradients,
        'setup_s': round(setup_s, 2), 'optimisation_s': round(result.seconds, 2),
        's_per_frame': round(per_frame_s, 3), 'roi_size_px': cfg.roi_size_px,
        'torch_threads': torch.get_num_threads(), 'ground_truth': T_gt is not None,
        'final_losses': {k: (float(v[0]), float(v[-1])) for k, v in result.history.items()
                         if len(v)},
        'initial_figures': scores_init.means(), 'refined_figures': scores_ref.means(),
    }
    if job.report_dir is not None:
        overlay = overlay_frames(seq.frames, problem.mesh, result.T_cam_obj,
                                 problem.T_cam_obj_init)
        report_summary = {k: v for k, v in summary.items()
                          if k not in ('initial_figures', 'refined_figures')}
        write_report(job.report_dir, history=result.history, summary=report_summary,
                     stamps_ns=stamps, initial=scores_init, refined=scores_ref, overlay=overlay)
    if on_messages is not None:
        on_messages(messages)
    return RefineOutcome(result=result, stamps_ns=stamps, camera_frame=seq.camera_frame,
                         summary=summary, setup_seconds=setup_s, out_bag=out,
                         report_dir=Path(job.report_dir) if job.report_dir else None)


def summary_lines(outcome: RefineOutcome, job: RefineJob) -> list[str]:
    """The command line's summary of a refinement."""
    s = outcome.summary
    ref, ini = s['refined_figures'], s['initial_figures']
    lines = [f'handypriors refine: {s["frames"]} images -> {outcome.out_bag} '
             f'({s["iterations"]} iterations, {s["optimisation_s"]:.1f} s optimisation, '
             f'{s["s_per_frame"]:.2f} s/frame, setup {s["setup_s"]:.1f} s, {s["device"]})',
             f'  initialisation: {s["initialisation"]}'
             + (f'; resumed at iteration {s["resumed_from_iteration"]}'
                if s['resumed_from_iteration'] is not None else
                '; --resume: no checkpoint found, started from the beginning'
                if job.resume else ''),
             f'  penetration (mean of per-frame max): {ini["penetration_mm"]:.2f} -> '
             f'{ref["penetration_mm"]:.2f} mm']
    if s['ground_truth']:
        lines.append(f'  ADD-S: {ini["add_s_mm"]:.2f} -> {ref["add_s_mm"]:.2f} mm; 2D Chamfer '
                     f'{ini["chamfer_2d_px"]:.2f} -> {ref["chamfer_2d_px"]:.2f} px; 3D Chamfer '
                     f'{ini["chamfer_3d_mm"]:.2f} -> {ref["chamfer_3d_mm"]:.2f} mm')
    shown = ', '.join(f'{n} {k}' for k, n in sorted(s['problems'].items()) if n)
    if s['images_skipped']:
        lines.append(f'  skipped: {s["images_skipped"]} of {s["images"]} images (problems: '
                     f'{shown})')
    elif shown:
        lines.append(f'  problems: {shown}')
    if outcome.report_dir is not None:
        lines.append(f'  report: {outcome.report_dir}')
    return lines


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


__all__ = ['REFINE_SCHEMA', 'RefineJob', 'RefineOutcome', 'load_refine_config',
           'output_messages', 'read_init_poses', 'refine_yaml', 'run_refine', 'summary_lines',
           'track_results']
