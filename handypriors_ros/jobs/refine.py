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

import contextlib
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
                                          input_options, load_object, pose_vector_to_matrix,
                                          resolve_device)
from handypriors_ros.jobs.schema import Option, Schema

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
                   resume=v['resume'], ground_truth=path('ground_truth'),
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


def _ground_truth(job: RefineJob, stamps_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(T_cam_obj_gt (N, 4, 4), K (3, 3)) matched by stamp, or None."""
    path = job.ground_truth
    if path is None:
        bag = Path(job.bag)
        candidate = (bag.parent if bag.is_dir() else bag.parent.parent) / 'ground_truth.npz'
        if not candidate.is_file():
            return None
        path = candidate
    if not Path(path).is_file():
        raise InputError(f'--ground-truth: file not found: {path}')
    try:
        gt = np.load(path)
        stamps, T, K = gt['stamps_ns'], gt['T_cam_obj'], gt['K']
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f'--ground-truth {path}: expected an npz with stamps_ns, T_cam_obj '
                         f'and K, got: {exc}') from exc
    index = {int(s): i for i, s in enumerate(stamps)}
    missing = [int(s) for s in stamps_ns if int(s) not in index]
    if missing:
        raise InputError(f'--ground-truth {path}: no pose for {len(missing)} image stamps '
                         f'(first: {missing[0]} ns)')
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
               warn: Callable[[str], None] | None = None) -> RefineOutcome:
    """Run a refinement job end to end (module docstring).

    Args:
        job: what to do.
        progress: called with (iterations done, total).
        on_messages: called with the output messages (``[(topic, msg, log_time_ns)]``) after
            the bag is written (the node publishes them).
        warn: problems met reading the bag, one line each (throttled per kind).
    Raises:
        InputError, BagError, CheckpointError, ModelError: bad input (one-line messages).
    """
    import torch

    from handypriors_ros.bag import check_output_bag
    from handypriors_ros.bag.sequence import read_sequence
    from handypriors_ros.core.frames import ProblemCounter
    from handypriors_ros.core.refine import CHECKPOINT_NAME, RefineProblem, Refiner
    from handypriors_ros.core.refine.report import overlay_frames, score_poses, write_report
    from handypriors_ros.jobs.outputs import write_output_bag

    bag, out, mesh = Path(job.bag), Path(job.out_bag), Path(job.object_mesh)
    if not bag.exists():
        raise InputError(f'BAG: not found: {bag}')
    if not mesh.is_file():
        raise InputError(f'--object: mesh file not found: {mesh}')
    check_output_bag(out, overwrite=job.overwrite, inputs=(bag, mesh), name='--out',
                     flag='--overwrite')
    if job.init_bag is not None and not Path(job.init_bag).exists():
        raise InputError(f'--init: not found: {job.init_bag}')
    device = resolve_device(job.device)
    start = time.perf_counter()
    hand = job.input.load_hand()
    naming = job.input.naming(hand.joint_names, hand.root_link)
    problems = ProblemCounter(warn)
    seq = read_sequence(bag, naming, topics=job.input.topics(),
                        assembly=job.input.assembly(naming.hand_root_frame), problems=problems)
    stamps = seq.stamps_ns
    model = load_object(str(mesh), job.object_scale)
    cfg = job.config
    if job.init_bag is not None:
        init = dict(T_cam_obj_init=read_init_poses(Path(job.init_bag), stamps, seq.camera_frame))
        init_source = f'track output {job.init_bag}'
    else:
        first = job.initial_pose if job.initial_pose is not None else seq.T_cam_obj_initial
        if first is None:
            raise InputError(f'no initial pose: {bag} has no {job.input.initial_pose_topic} '
                             'message; give --init TRACK_BAG or --initial-pose')
        init = dict(T_cam_obj_first=first)
        init_source = 'initial pose + quasistatic dynamics'
    problem = RefineProblem.build(seq.frames, model, hand, cfg, device=device, **init)
    setup_s = time.perf_counter() - start

    own_checkpoint = job.checkpoint_dir is None
    ckpt = Path(job.checkpoint_dir) if job.checkpoint_dir else out.with_name(
        out.name + '.checkpoint')
    ckpt_file = ckpt / CHECKPOINT_NAME
    if not job.resume:
        ckpt_file.unlink(missing_ok=True)  # a fresh start; only our file, never the folder
    refiner = Refiner(problem)
    result = refiner.run(checkpoint_dir=ckpt, resume=job.resume, progress=progress)
    N = len(stamps)
    per_frame_s = result.seconds / N
    messages = output_messages(track_results(result, stamps, cfg, per_frame_s),
                               seq.camera_frame, job.object_frame)
    write_output_bag(out, messages, overwrite=job.overwrite, inputs=(bag, mesh))
    if own_checkpoint:
        ckpt_file.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            ckpt.rmdir()  # only when empty

    with torch.no_grad():
        d_init = problem.physics_losses(torch.as_tensor(
            problem.T_cam_obj_init, dtype=torch.float32, device=problem.device)).distance
        d_ref = problem.physics_losses(
            torch.as_tensor(result.T_cam_obj, dtype=torch.float32, device=problem.device),
            problem.corrected_base(None if not cfg.optimise_hand_root else torch.as_tensor(
                result.T_correction, dtype=torch.float32, device=problem.device))).distance
    gt = _ground_truth(job, stamps)
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


__all__ = ['REFINE_SCHEMA', 'RefineJob', 'RefineOutcome', 'load_refine_config',
           'output_messages', 'read_init_poses', 'refine_yaml', 'run_refine', 'summary_lines',
           'track_results']
