"""The Adam loop of the refinement (paper III-D), with atomic checkpoints and exact resume.

Variables: per frame a 6D rotation (``rotation_6d_to_matrix``) and a translation of
``T_cam_obj``; optionally one twist ``xi`` correcting the hand root for every frame,
``T_cam_base <- exp(xi) T_cam_base`` (a camera-frame correction: what an error of the camera's
extrinsic calibration does to a hand seen by a static camera).

One iteration evaluates the whole objective once: the frames are rendered in batches of
``batch_frames`` (each batch's image losses are back-propagated before the next batch is
rendered, so memory stays bounded), the physics priors of the whole sequence are added, the
gradients are accumulated, and Adam takes one step. That is full-batch Adam, deterministic for
given inputs; step sizes decay exponentially from their initial values to
``lr_final_fraction`` of them at the last iteration.

Checkpoints (``checkpoint_every`` iterations and at the end) hold the variables, Adam's state,
the loss history and a fingerprint of the inputs; they are written to a temporary file, synced
and renamed over ``refine_checkpoint.pt``, so a crash leaves either the previous or the new
checkpoint (a writer killed mid-write also leaves its temporary file:
:func:`remove_checkpoint` clears those with the checkpoint). :meth:`Refiner.run` with
``resume=True`` continues from it and produces the same result as an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from handypriors_ros.core.errors import HandyPriorsError, InputError
from handypriors_ros.core.geometry.rotations import matrix_to_rotation_6d, rotation_6d_to_matrix
from handypriors_ros.core.geometry.se3 import make_transform, se3_exp
from handypriors_ros.core.refine.problem import RefineProblem
from handypriors_ros.core.tracking.types import ContactReport

CHECKPOINT_NAME = 'refine_checkpoint.pt'
CHECKPOINT_VERSION = 1
#: Names of the loss terms, in the order of the history and reports.
LOSS_TERMS = ('mask', 'rgb', 'penetration', 'sliding', 'smoothness', 'acceleration',
              'hand_root')


def remove_checkpoint(folder: str | Path) -> None:
    """Remove the checkpoint in ``folder``, the temporary files of writers killed mid-write
    (``.refine_checkpoint.pt.PID.tmp``), then the folder when nothing else is in it (anything
    else there is not ours and stays)."""
    folder = Path(folder)
    (folder / CHECKPOINT_NAME).unlink(missing_ok=True)
    for tmp in folder.glob(f'.{CHECKPOINT_NAME}.*.tmp'):
        if tmp.name[len(CHECKPOINT_NAME) + 2:-len('.tmp')].isdigit():
            tmp.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()  # only when empty


class CheckpointError(HandyPriorsError):
    """A checkpoint cannot be read, or belongs to other inputs or settings."""


@dataclass(frozen=True)
class RefineResult:
    """What a refinement produced.

    Attributes:
        T_cam_obj: (N, 4, 4) float64 refined object poses.
        T_cam_obj_initial: (N, 4, 4) float64 the poses it started from.
        T_correction: (4, 4) float64 hand-root correction (identity when not optimised):
            ``T_cam_base_refined = T_correction @ T_cam_base``.
        history: term name (:data:`LOSS_TERMS` and ``'total'``) -> (I,) unweighted value of the
            term at each iteration (before that iteration's step); ``'total'`` is weighted.
        frame_mask_loss: (N,) final silhouette loss per frame (NaN without a mask).
        frame_penetration_m: (N,) final deepest penetration of a hand sample per frame [m]
            (0 when none).
        contacts: (N,) final contacts per frame.
        iterations: iterations done.
        seconds: optimisation wall time, summed over resumed runs [s].
        resumed_from: the iteration a resumed run started at, or None.
        nonfinite_gradients: gradient entries that were NaN/Inf and skipped a step (0 in a
            healthy run).
    """

    T_cam_obj: np.ndarray
    T_cam_obj_initial: np.ndarray
    T_correction: np.ndarray
    history: dict[str, np.ndarray]
    frame_mask_loss: np.ndarray
    frame_penetration_m: np.ndarray
    contacts: tuple[ContactReport, ...]
    iterations: int
    seconds: float
    resumed_from: int | None = None
    nonfinite_gradients: int = 0


ProgressCallback = Callable[[int, int], None]


class Refiner:
    """Optimise a :class:`RefineProblem` (module docstring).

    Args:
        problem: the prepared problem; its ``config`` sets weights and step sizes.
    """

    def __init__(self, problem: RefineProblem) -> None:
        if not isinstance(problem, RefineProblem):
            raise InputError(f'problem: expected a RefineProblem, got {type(problem).__name__}')
        self.problem = problem
        self.config = problem.config
        dev = problem.device
        T0 = torch.as_tensor(problem.T_cam_obj_init, dtype=torch.float32, device=dev)
        self.rot6d = torch.nn.Parameter(matrix_to_rotation_6d(T0[:, :3, :3]).clone())
        self.trans = torch.nn.Parameter(T0[:, :3, 3].clone())
        self.xi = torch.nn.Parameter(torch.zeros(6, device=dev))
        c = self.config
        groups = [{'params': [self.rot6d], 'lr': c.lr_rotation, 'name': 'rotation'},
                  {'params': [self.trans], 'lr': c.lr_translation_m, 'name': 'translation'}]
        if c.optimise_hand_root:
            groups.append({'params': [self.xi], 'lr': c.lr_hand_root, 'name': 'hand_root'})
        self._base_lr = [g['lr'] for g in groups]
        self.optimizer = torch.optim.Adam(groups, betas=(c.adam_beta1, c.adam_beta2))
        self.iteration = 0
        self.seconds = 0.0
        self.nonfinite_gradients = 0
        self.history: dict[str, list[float]] = {k: [] for k in LOSS_TERMS + ('total',)}

    # -- variables -------------------------------------------------------------------------

    def poses(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """(n, 4, 4) current object poses of frames ``start:stop`` (differentiable)."""
        R = rotation_6d_to_matrix(self.rot6d[start:stop])
        return make_transform(R, self.trans[start:stop])

    def correction(self) -> torch.Tensor | None:
        """(4, 4) current hand-root correction, or None when it is not optimised."""
        return se3_exp(self.xi) if self.config.optimise_hand_root else None

    # -- objective ---------------------------------------------------------------------------

    def physics_ramp(self) -> float:
        """Factor in [0, 1] of the penetration and sliding weights at this iteration."""
        span = self.config.physics_warmup_fraction * self.config.iterations
        return 1.0 if span <= 0 else min(1.0, self.iteration / span)

    def evaluate(self, *, backward: bool) -> dict[str, float]:
        """The objective at the current variables; with ``backward``, its gradients.

        Returns:
            term -> unweighted value, plus ``'total'`` (weighted sum).
        """
        p, w = self.problem, self.config.weights
        N, B = p.num_frames, self.config.batch_frames
        terms = {k: 0.0 for k in LOSS_TERMS}
        T_corr = self.correction()
        hand_depth = None
        if T_corr is not None:
            hand_depth = p.hand_depths(p.corrected_base(T_corr))
        n_masks = max(int(p.has_mask.sum()), 1)
        total = 0.0
        for start in range(0, N, B):
            stop = min(start + B, N)
            idx = [i for i in range(start, stop) if p.has_mask[i]]
            if not idx:
                continue
            T = self.poses(start, stop)
            out = p.image_losses(idx, T[[i - start for i in idx]], hand_depth=hand_depth)
            l_mask, l_rgb = out.mask.sum() / n_masks, out.rgb.sum() / n_masks
            batch_total = w.mask * l_mask + w.rgb * l_rgb
            if backward and batch_total.requires_grad:
                batch_total.backward()
            terms['mask'] += float(l_mask.detach())
            terms['rgb'] += float(l_rgb.detach())
            total += float(batch_total.detach())
        T_all = self.poses()
        T_base = p.corrected_base(self.correction())
        phys = p.physics_losses(T_all, T_base).terms()
        ramp = self.physics_ramp()
        rest = (ramp * (w.penetration * phys['penetration'] + w.sliding * phys['sliding'])
                + w.smoothness * phys['smoothness'] + w.acceleration * phys['acceleration'])
        if self.config.optimise_hand_root:
            reg = p.hand_root_regulariser(self.xi)
            rest = rest + w.hand_root * reg
            terms['hand_root'] = float(reg.detach())
        if backward and rest.requires_grad:
            rest.backward()
        for k, v in phys.items():
            terms[k] = float(v.detach())
        terms['total'] = total + float(rest.detach())
        return terms

    def step(self) -> dict[str, float]:
        """One iteration: evaluate, back-propagate, one Adam step. Returns the terms."""
        c = self.config
        decay = c.lr_final_fraction ** (self.iteration / max(c.iterations - 1, 1))
        for group, lr in zip(self.optimizer.param_groups, self._base_lr):
            group['lr'] = lr * decay
        self.optimizer.zero_grad(set_to_none=False)
        terms = self.evaluate(backward=True)
        if not all(math.isfinite(v) for v in terms.values()):
            raise HandyPriorsError(f'refinement: non-finite loss at iteration {self.iteration} '
                                   f'(terms {terms}); the last checkpoint is kept')
        for prm in (self.rot6d, self.trans, self.xi):
            if prm.grad is not None and not torch.isfinite(prm.grad).all():
                # Never let NaN/Inf reach Adam: the affected entries skip this step.
                self.nonfinite_gradients += int((~torch.isfinite(prm.grad)).sum())
                prm.grad.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        self.optimizer.step()
        with torch.no_grad():  # keep the 6D halves well scaled (the rotation is unchanged)
            R = rotation_6d_to_matrix(self.rot6d)
            self.rot6d.copy_(matrix_to_rotation_6d(R))
        for k, v in terms.items():
            self.history[k].append(v)
        self.iteration += 1
        return terms

    # -- the job ---------------------------------------------------------------------------

    def run(self, *, checkpoint_dir: str | Path | None = None, resume: bool = False,
            progress: ProgressCallback | None = None,
            stop_after: int | None = None) -> RefineResult:
        """Optimise until ``config.iterations`` (or ``stop_after``) iterations are done.

        Args:
            checkpoint_dir: where the checkpoint lives; None: no checkpoints.
            resume: continue from the checkpoint in ``checkpoint_dir`` when there is one.
            progress: called with (iterations done, iterations in total) after each one.
            stop_after: stop (after checkpointing) once this many iterations are done, e.g. to
                split a long job; the result is then the intermediate one.
        Returns:
            :class:`RefineResult`.
        Raises:
            CheckpointError: the checkpoint is unreadable or belongs to other inputs.
        """
        c = self.config
        path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
        resumed_from = None
        if path is not None and resume and path.is_file():
            self.load_checkpoint(path)
            resumed_from = self.iteration
        end = c.iterations if stop_after is None else min(stop_after, c.iterations)
        if progress is not None:
            progress(self.iteration, c.iterations)
        while self.iteration < end:
            start = time.perf_counter()
            self.step()
            self.seconds += time.perf_counter() - start
            if path is not None and c.checkpoint_every and \
                    self.iteration % c.checkpoint_every == 0 and self.iteration < end:
                self.save_checkpoint(path)
            if progress is not None:
                progress(self.iteration, c.iterations)
        if path is not None:
            self.save_checkpoint(path)
        return self.result(resumed_from)

    @torch.no_grad()
    def result(self, resumed_from: int | None = None) -> RefineResult:
        """The current state as a :class:`RefineResult` (final per-frame figures included)."""
        p = self.problem
        T = self.poses()
        T_corr = self.correction()
        T_base = p.corrected_base(T_corr)
        hand_depth = p.hand_depths(T_base) if T_corr is not None else None
        mask = np.full(p.num_frames, np.nan)
        idx = [int(i) for i in np.flatnonzero(p.has_mask)]
        for start in range(0, len(idx), self.config.batch_frames):
            chunk = idx[start:start + self.config.batch_frames]
            out = p.image_losses(chunk, T[chunk], with_rgb=False, hand_depth=hand_depth)
            mask[chunk] = out.mask.cpu().numpy()
        phys = p.physics_losses(T, T_base)
        depth = (-phys.distance).clamp(min=0.0).max(dim=1).values.cpu().numpy()
        return RefineResult(
            T_cam_obj=_orthonormalised(T.double().cpu().numpy()),
            T_cam_obj_initial=p.T_cam_obj_init.copy(),
            T_correction=(np.eye(4) if T_corr is None else T_corr.double().cpu().numpy()),
            history={k: np.asarray(v, dtype=np.float64) for k, v in self.history.items()},
            frame_mask_loss=mask, frame_penetration_m=depth.astype(np.float64),
            contacts=tuple(p.contact_reports(T, T_base)), iterations=self.iteration,
            seconds=self.seconds, resumed_from=resumed_from,
            nonfinite_gradients=self.nonfinite_gradients)

    # -- checkpoints ---------------------------------------------------------------------

    def fingerprint(self) -> str:
        """Hash of what determines the result: settings, stamps, initial poses, object, hand."""
        p = self.problem
        h = hashlib.sha256()
        settings = dataclasses.asdict(self.config)
        settings.pop('iterations')  # more iterations may be asked for on resume
        settings.pop('checkpoint_every')
        h.update(json.dumps(settings, sort_keys=True, default=str).encode())
        h.update(p.stamps_ns.tobytes())
        h.update(np.ascontiguousarray(p.T_cam_obj_init).tobytes())
        h.update(p.mesh.vertices.detach().cpu().numpy().tobytes())
        h.update(p.hand_points_base.detach().cpu().numpy().tobytes())
        h.update(np.asarray(p.has_mask).tobytes())
        return h.hexdigest()

    def save_checkpoint(self, path: str | Path) -> None:
        """Write the state atomically to ``path`` (temporary file, fsync, rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            'version': CHECKPOINT_VERSION,
            'fingerprint': self.fingerprint(),
            'iteration': self.iteration,
            'seconds': self.seconds,
            'nonfinite_gradients': self.nonfinite_gradients,
            'rot6d': self.rot6d.detach().cpu().clone(),
            'trans': self.trans.detach().cpu().clone(),
            'xi': self.xi.detach().cpu().clone(),
            'optimizer': self.optimizer.state_dict(),
            'history': {k: list(v) for k, v in self.history.items()},
        }
        tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
        try:
            with open(tmp, 'wb') as fh:
                torch.save(state, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:  # interrupted (Ctrl-C) or failed mid-write: the previous one stands
            tmp.unlink(missing_ok=True)
            raise
        try:  # make the rename itself durable
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore the state from ``path``.

        Raises:
            CheckpointError: unreadable, another version, or other inputs/settings.
        """
        path = Path(path)
        try:
            state = torch.load(path, map_location='cpu', weights_only=False)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
            raise CheckpointError(f'checkpoint {path} cannot be read: {exc}') from exc
        version = state.get('version') if isinstance(state, dict) else type(state).__name__
        if version != CHECKPOINT_VERSION:
            raise CheckpointError(f'checkpoint {path}: expected version {CHECKPOINT_VERSION}, '
                                  f'got {version!r}')
        if state['fingerprint'] != self.fingerprint():
            raise CheckpointError(f'checkpoint {path} belongs to other inputs or settings (bag, '
                                  'initial poses, object, hand or refinement parameters differ); '
                                  'remove it or run without --resume to start over')
        N = self.problem.num_frames
        if tuple(state['rot6d'].shape) != (N, 6):
            raise CheckpointError(f'checkpoint {path}: expected {N} frames, got '
                                  f'{state["rot6d"].shape[0]}')
        dev = self.problem.device
        with torch.no_grad():
            self.rot6d.copy_(state['rot6d'].to(dev))
            self.trans.copy_(state['trans'].to(dev))
            self.xi.copy_(state['xi'].to(dev))
        self.optimizer.load_state_dict(state['optimizer'])
        self.iteration = int(state['iteration'])
        self.seconds = float(state['seconds'])
        self.nonfinite_gradients = int(state.get('nonfinite_gradients', 0))
        self.history = {k: list(state['history'].get(k, [])) for k in self.history}


def _orthonormalised(T: np.ndarray) -> np.ndarray:
    """(N, 4, 4) with each rotation projected onto SO(3) in float64 (SVD)."""
    out = T.copy()
    U, _, Vt = np.linalg.svd(T[:, :3, :3])
    d = np.sign(np.linalg.det(U @ Vt))
    U[:, :, 2] *= d[:, None]
    out[:, :3, :3] = U @ Vt
    out[:, 3] = [0.0, 0.0, 0.0, 1.0]
    if not np.all(np.isfinite(out)):
        raise HandyPriorsError('refinement: the result holds non-finite poses')
    return out

