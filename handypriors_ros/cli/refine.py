"""``handypriors refine BAG --object MESH --out OUT_BAG``: offline optimisation refinement.

    handypriors refine BAG --object MESH --out OUT_BAG [--init TRACK_BAG] [--params YAML]
                       [--report DIR] [--checkpoint DIR] [--resume] [--ground-truth NPZ]

The job (:func:`run_job`, shared with the refiner node):

1. read BAG into per-image frames (``bag.sequence.read_sequence``: images, masks, joints at the
   image stamps, hand root from TF); a truncated or inconsistent bag is a one-line error;
2. initial poses: ``/handypriors/object_pose`` of TRACK_BAG (``handypriors track``'s output,
   one per image stamp), else BAG's ``/handypriors/initial_pose`` (or ``--initial-pose``)
   carried through the sequence by the quasistatic dynamics;
3. optimise every pose with Adam (``core.refine``), weights from ``--params`` (default:
   the package's config/refine.yaml), with a progress bar and a checkpoint every
   ``checkpoint_every`` iterations in ``--checkpoint`` (default ``OUT_BAG.checkpoint``, removed
   after success); ``--resume`` continues an interrupted run from it;
4. write OUT_BAG (MCAP, atomically) with the topics and stamps of ``handypriors track``:
   ``/handypriors/object_pose``, ``/handypriors/track`` and ``/tf`` per image;
5. with ``--report DIR``: loss curves, per-frame errors (ground truth: ``--ground-truth`` or
   ``ground_truth.npz`` next to the bag folder, as ``handypriors generate`` writes it), an
   overlay GIF and a summary table.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from handypriors_ros import interfaces
from handypriors_ros.core.errors import InputError

if TYPE_CHECKING:
    from handypriors_ros.core.refine import RefineConfig, RefineResult

ProgressCallback = Callable[[int, int], None]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('bag', metavar='BAG', help='input rosbag2 (MCAP or sqlite3) with the '
                        'INTERFACES.md topics')
    parser.add_argument('--object', required=True, metavar='MESH',
                        help='mesh file of the object (metres unless --object-scale)')
    parser.add_argument('--out', required=True, metavar='OUT_BAG',
                        help='output bag (MCAP): object_pose, track and /tf per image')
    parser.add_argument('--init', metavar='TRACK_BAG',
                        help='initial poses: /handypriors/object_pose of this bag (the output '
                             'of handypriors track); default: the initial pose of BAG carried '
                             'by the quasistatic dynamics')
    parser.add_argument('--params', metavar='YAML',
                        help='refinement settings (ROS 2 parameter file or plain mapping); '
                             'default: the package\'s config/refine.yaml')
    parser.add_argument('--report', metavar='DIR', help='write a report folder')
    parser.add_argument('--checkpoint', metavar='DIR',
                        help='checkpoint folder (default: OUT_BAG.checkpoint, removed after '
                             'success)')
    parser.add_argument('--resume', action='store_true',
                        help='continue from the checkpoint of an interrupted run')
    parser.add_argument('--ground-truth', metavar='NPZ',
                        help='ground truth for the report (default: ground_truth.npz next to '
                             'the bag folder, if present)')
    parser.add_argument('--initial-pose', metavar='"x y z qx qy qz qw"',
                        help='initial pose of the first image (camera optical frame), instead '
                             'of /handypriors/initial_pose of BAG')
    parser.add_argument('--object-scale', type=float, default=1.0,
                        help='scale of the mesh file to metres (e.g. 0.001)')
    parser.add_argument('--hand-urdf', metavar='URDF', help='hand URDF (default: the '
                        'package\'s right Allegro hand)')
    parser.add_argument('--object-frame', default=interfaces.OBJECT_FRAME,
                        help='child frame of the output /tf (default: %(default)s)')
    parser.add_argument('--iterations', type=int,
                        help='override the number of Adam iterations of --params')
    parser.add_argument('--overwrite', action='store_true', help='replace OUT_BAG if it exists')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')


@dataclass(frozen=True)
class RefineJob:
    """One refinement job (the CLI's options, the node's parameters).

    Attributes:
        bag: input bag. object_mesh: mesh file. out_bag: output bag.
        config: the refinement settings.
        init_bag: ``handypriors track`` output with initial poses, or None.
        initial_pose: (4, 4) pose of the first image overriding the bag's, or None.
        report_dir: report folder, or None.
        checkpoint_dir: checkpoint folder; None: ``<out_bag>.checkpoint``, removed after
            success.
        resume: continue from the checkpoint.
        ground_truth: ground-truth npz; None: ``<bag>/../ground_truth.npz`` when present.
        object_scale: scale of the mesh to metres.
        hand_urdf: hand URDF; None: the package's right Allegro hand.
        object_frame: child frame of the output /tf; object_id of TrackedObject.
        overwrite: replace an existing output bag.
    """

    bag: Path
    object_mesh: Path
    out_bag: Path
    config: RefineConfig
    init_bag: Path | None = None
    initial_pose: np.ndarray | None = None
    report_dir: Path | None = None
    checkpoint_dir: Path | None = None
    resume: bool = False
    ground_truth: Path | None = None
    object_scale: float = 1.0
    hand_urdf: Path | None = None
    object_frame: str = interfaces.OBJECT_FRAME
    overwrite: bool = False


@dataclass(frozen=True)
class RefineOutcome:
    """What :func:`run_job` did.

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


def default_params_file() -> Path | None:
    """The package's config/refine.yaml (source checkout or installed share), or None."""
    from handypriors_ros.resources import package_file
    try:
        return package_file('config/refine.yaml')
    except InputError:
        return None


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
    from handypriors_ros.ros.conversions import (track_result_to_pose, track_result_to_tf,
                                                 track_result_to_tracked_object)
    out = []
    for r in results:
        out.append((interfaces.OBJECT_POSE_TOPIC, track_result_to_pose(r, camera_frame),
                    r.stamp_ns))
        out.append((interfaces.TRACK_TOPIC,
                    track_result_to_tracked_object(r, camera_frame, object_frame), r.stamp_ns))
        out.append((interfaces.TF_TOPIC, track_result_to_tf(r, camera_frame, object_frame),
                    r.stamp_ns))
    return out


def write_output_bag(path: Path, messages: list, *, overwrite: bool) -> None:
    """Write ``[(topic, rclpy message, log_time_ns)]`` to an MCAP bag atomically."""
    from rclpy.serialization import serialize_message

    from handypriors_ros.bag import BagWriter
    with BagWriter(path, overwrite=overwrite) as writer:
        for topic, msg, log_time in messages:
            msgtype = f'{type(msg).__module__.split(".")[0]}/msg/{type(msg).__name__}'
            writer.write_raw(topic, msgtype, log_time, serialize_message(msg))


def run_job(job: RefineJob, *, progress: ProgressCallback | None = None,
            on_messages: Callable[[list], None] | None = None) -> RefineOutcome:
    """Run a refinement job end to end (module docstring).

    Args:
        job: what to do.
        progress: called with (iterations done, total).
        on_messages: called with the output messages (``[(topic, msg, log_time_ns)]``) after
            the bag is written (the node publishes them).
    Raises:
        InputError, BagError, CheckpointError, ModelError: bad input (one-line messages).
    """
    import torch

    from handypriors_ros.bag.sequence import read_sequence
    from handypriors_ros.core.models.kinematics import HandKinematics
    from handypriors_ros.core.models.object_model import ObjectModel
    from handypriors_ros.core.refine import CHECKPOINT_NAME, RefineProblem, Refiner
    from handypriors_ros.core.refine.report import overlay_frames, score_poses, write_report
    from handypriors_ros.resources import default_hand_urdf

    bag, out, mesh = Path(job.bag), Path(job.out_bag), Path(job.object_mesh)
    if not bag.exists():
        raise InputError(f'BAG: not found: {bag}')
    if not mesh.is_file():
        raise InputError(f'--object: mesh file not found: {mesh}')
    if out.exists() and not job.overwrite:
        raise InputError(f'--out: {out} exists (use --overwrite to replace it)')
    if job.init_bag is not None and not Path(job.init_bag).exists():
        raise InputError(f'--init: not found: {job.init_bag}')
    start = time.perf_counter()
    hand = HandKinematics.from_urdf(job.hand_urdf or default_hand_urdf())
    seq = read_sequence(bag, hand.joint_names)
    stamps = seq.stamps_ns
    model = ObjectModel.from_file(mesh, scale=job.object_scale)
    cfg = job.config
    if job.init_bag is not None:
        init = dict(T_cam_obj_init=read_init_poses(Path(job.init_bag), stamps, seq.camera_frame))
        init_source = f'track output {job.init_bag}'
    else:
        first = job.initial_pose if job.initial_pose is not None else seq.T_cam_obj_initial
        if first is None:
            raise InputError(f'no initial pose: {bag} has no {interfaces.INITIAL_POSE_TOPIC} '
                             'message; give --init TRACK_BAG or --initial-pose')
        init = dict(T_cam_obj_first=first)
        init_source = 'initial pose + quasistatic dynamics'
    problem = RefineProblem.build(seq.frames, model, hand, cfg, **init)
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
    write_output_bag(out, messages, overwrite=job.overwrite)
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
        'masks_missing': seq.masks_missing, 'initialisation': init_source,
        'iterations': result.iterations, 'resumed_from_iteration': result.resumed_from,
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


def job_from_args(args: argparse.Namespace) -> RefineJob:
    """The :class:`RefineJob` of parsed command-line arguments."""
    import dataclasses

    from handypriors_ros.cli.track import parse_initial_pose
    from handypriors_ros.core.refine import RefineConfig

    params = Path(args.params) if args.params else default_params_file()
    if args.params and not params.is_file():
        raise InputError(f'--params: parameter file not found: {params}')
    config = RefineConfig.from_yaml(params) if params is not None else RefineConfig()
    if args.iterations is not None:
        config = dataclasses.replace(config, iterations=args.iterations)
    initial = None
    if args.initial_pose:
        from handypriors_ros.core.geometry.transform_buffer import StampedTransform
        v = parse_initial_pose(args.initial_pose)
        initial = StampedTransform('camera', 'object', 0, v[:3], v[3:]).matrix()
    return RefineJob(
        bag=Path(args.bag), object_mesh=Path(args.object), out_bag=Path(args.out),
        config=config, init_bag=Path(args.init) if args.init else None, initial_pose=initial,
        report_dir=Path(args.report) if args.report else None,
        checkpoint_dir=Path(args.checkpoint) if args.checkpoint else None, resume=args.resume,
        ground_truth=Path(args.ground_truth) if args.ground_truth else None,
        object_scale=args.object_scale,
        hand_urdf=Path(args.hand_urdf) if args.hand_urdf else None,
        object_frame=args.object_frame, overwrite=args.overwrite)


def run(args: argparse.Namespace) -> int:
    from handypriors_ros.cli.progress import ProgressBar

    job = job_from_args(args)
    progress = None if args.quiet else ProgressBar('refine')
    outcome = run_job(job, progress=progress)
    s = outcome.summary
    ref, ini = s['refined_figures'], s['initial_figures']
    lines = [f'handypriors refine: {s["frames"]} images -> {outcome.out_bag} '
             f'({s["iterations"]} iterations, {s["optimisation_s"]:.1f} s optimisation, '
             f'{s["s_per_frame"]:.2f} s/frame, setup {s["setup_s"]:.1f} s)',
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
    if outcome.report_dir is not None:
        lines.append(f'  report: {outcome.report_dir}')
    print('\n'.join(lines), file=sys.stdout, flush=True)
    return 0
