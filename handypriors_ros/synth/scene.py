"""The kinematic scene of a synthetic sequence: a grasp, the wrist's motion, in-hand rolling.

Frames: ``world`` (z up), the hand root ``base`` (``ah_base_link``; the palm faces +x, the
fingers point along +z), the object's mesh frame ``obj`` and the camera optical frame ``cam``.

How a frame's scene is made (deterministic for a seed):
1. The object sits in front of the palm, its smallest extent along the palm normal (+x of the
   base), its largest along the fingers, at a clearance of the straightened hand.
2. Over time the object rolls in the hand (a smooth rotation about the palm normal through its
   centre, plus a small tilt), optionally slips (a translation no finger explains), and is
   pushed off the palm when it would penetrate it.
3. Each finger closes (one "curl" parameter per finger drives its flexion joints) until its
   surface touches the object: the largest curl whose finger points all stay outside the object
   by ``contact_gap_m``; this makes the hand-object contacts of the frame.
4. The wrist moves through space along smooth sinusoids; the camera is static, looking at the
   object's start position from a direction that sets how much the fingers occlude it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.models.kinematics import HandKinematics
from handypriors_ros.core.physics.sdf import WarpMeshSDF

# Flexion joints per finger and how the curl s in [0, 1] drives them: q = offset + s * gain.
# Thumb opposition (joint 0, 1) and finger spread (joint X0) stay fixed during a sequence.
_FINGERS = {  # name: (joint suffixes, offsets, gains)
    'thumb': (('00', '01', '02', '03'), (1.25, 0.30, 0.10, 0.00), (0.0, 0.0, 1.30, 1.30)),
    'index': (('10', '11', '12', '13'), (0.06, 0.10, 0.00, 0.00), (0.0, 1.30, 1.40, 1.10)),
    'middle': (('20', '21', '22', '23'), (0.00, 0.10, 0.00, 0.00), (0.0, 1.30, 1.40, 1.10)),
    'ring': (('30', '31', '32', '33'), (-0.06, 0.10, 0.00, 0.00), (0.0, 1.30, 1.40, 1.10)),
}

OCCLUSION_LEVELS = ('low', 'medium', 'heavy')


@dataclass(frozen=True)
class SceneConfig:
    """Settings of the motion and the camera placement.

    Attributes:
        n_frames: camera frames.
        fps: camera rate (Hz).
        camera_distance_m: camera to object distance at the first frame (0.4-0.6 m).
        occlusion: ``'low'`` (camera on the object's far side), ``'medium'`` (side view) or
            ``'heavy'`` (behind the back of the hand: the fingers hide much of the object).
        wrist_translation_m: amplitude of the wrist's translation per axis.
        wrist_rotation_deg: amplitude of the wrist's rotation per axis.
        roll_deg: amplitude of the in-hand rotation about the palm normal.
        tilt_deg: amplitude of the in-hand tilt about the finger axis.
        slip_mm: total slip (an unexplained translation along the fingers) over the sequence.
        contact_gap_m: a closed finger stops this far outside the object's surface.
        palm_clearance_m: the object keeps this distance from the straightened hand.
    """
    n_frames: int = 90
    fps: float = 30.0
    camera_distance_m: float = 0.5
    occlusion: str = 'medium'
    wrist_translation_m: float = 0.05
    wrist_rotation_deg: float = 20.0
    roll_deg: float = 15.0
    tilt_deg: float = 5.0
    slip_mm: float = 0.0
    contact_gap_m: float = 0.0005
    palm_clearance_m: float = 0.002

    def __post_init__(self) -> None:
        if self.occlusion not in OCCLUSION_LEVELS:
            raise InputError(f'occlusion: expected one of {OCCLUSION_LEVELS}, '
                             f'got {self.occlusion!r}')
        if self.n_frames < 2:
            raise InputError(f'n_frames: expected >= 2, got {self.n_frames}')
        if not 0.2 <= self.camera_distance_m <= 2.0:
            raise InputError(f'camera_distance_m: expected 0.2..2.0 m, got '
                             f'{self.camera_distance_m}')


@dataclass(frozen=True)
class SceneTrajectory:
    """The true scene at every camera frame (float64 numpy).

    Attributes:
        times_s: (N,) frame times from the first frame (s).
        q: (N, J) joint positions, model order.
        T_world_base: (N, 4, 4) hand root poses.
        T_base_obj: (N, 4, 4) object pose in the hand root frame.
        T_world_cam: (4, 4) static camera pose (optical frame).
        T_cam_obj: (N, 4, 4) object pose in the camera optical frame (the tracker's output).
        min_distance: (N, F) closest distance of each finger to the object (m), F in
            ``finger_names`` order.
        finger_names: names of the fingers.
    """
    times_s: np.ndarray
    q: np.ndarray
    T_world_base: np.ndarray
    T_base_obj: np.ndarray
    T_world_cam: np.ndarray
    T_cam_obj: np.ndarray
    min_distance: np.ndarray
    finger_names: tuple[str, ...]


def _pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


class GraspSolver:
    """Closes the fingers of a hand on an object (see the module docstring, step 3)."""

    def __init__(self, kinematics: HandKinematics, sdf: WarpMeshSDF, *, prefix: str = 'ah_',
                 contact_gap_m: float = 0.0005) -> None:
        self.kin = kinematics
        self.sdf = sdf
        self.gap = contact_gap_m
        names = list(kinematics.joint_names)
        J = len(names)
        self.offset = np.zeros(J)
        self.gain = np.zeros((len(_FINGERS), J))
        point_links = kinematics.point_link_ids.cpu().numpy()
        link_names = kinematics.link_names
        self.finger_point_mask = np.zeros((len(_FINGERS), len(point_links)), bool)
        for f, (finger, (suffixes, offsets, gains)) in enumerate(_FINGERS.items()):
            for suffix, off, gain in zip(suffixes, offsets, gains):
                name = f'{prefix}joint{suffix}'
                if name not in names:
                    raise InputError(f'kinematics: joint {name} not in the model; the synthetic '
                                     'scene needs the Allegro hand')
                j = names.index(name)
                self.offset[j], self.gain[f, j] = off, gain
            finger_links = {i for i, n in enumerate(link_names)
                            if n.startswith(f'{prefix}link_{suffixes[0][0]}')}
            self.finger_point_mask[f] = np.isin(point_links, list(finger_links))
        lo, hi = kinematics.joint_limits.cpu().numpy().T
        self._lo, self._hi = lo, hi
        self.finger_names = tuple(_FINGERS)

    def joints(self, curl: np.ndarray) -> np.ndarray:
        """(..., F) curls in [0, 1] -> (..., J) joint positions within limits."""
        q = self.offset + curl @ self.gain
        return np.clip(q, self._lo, self._hi)

    def finger_distances(self, curl: np.ndarray, T_base_obj: np.ndarray) -> np.ndarray:
        """(K, F) curls -> (K, F) minimum signed distance of each finger's points (m)."""
        dtype, device = self.kin.dtype, self.kin.device
        q = torch.as_tensor(self.joints(curl), dtype=dtype, device=device)
        points_base = self.kin.forward(q).surface_points  # (K, P, 3)
        T_obj_base = torch.as_tensor(np.linalg.inv(T_base_obj), dtype=dtype, device=device)
        points_obj = points_base @ T_obj_base[:3, :3].T + T_obj_base[:3, 3]
        d = self.sdf.signed_distance(points_obj.to(self.sdf.device)).distance.cpu().numpy()
        out = np.empty((len(curl), len(self.finger_names)))
        for f in range(len(self.finger_names)):
            out[:, f] = d[:, self.finger_point_mask[f]].min(axis=1)
        return out

    def clearance(self, T_base_obj: np.ndarray) -> float:
        """Minimum signed distance of the whole straightened hand to the object (m)."""
        q = torch.as_tensor(self.joints(np.zeros((1, len(self.finger_names)))),
                            dtype=self.kin.dtype, device=self.kin.device)
        points_base = self.kin.forward(q).surface_points[0]
        T_obj_base = np.linalg.inv(T_base_obj)
        p = points_base.cpu().numpy() @ T_obj_base[:3, :3].T + T_obj_base[:3, 3]
        d = self.sdf.signed_distance(torch.as_tensor(p[None], dtype=torch.float32,
                                                     device=self.sdf.device)).distance
        return float(d.min())

    def close(self, T_base_obj: np.ndarray, *, grid: int = 33, refine: int = 8,
              max_curl: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Curl each finger until it touches the object.

        Returns:
            curl: (F,) in [0, max_curl]; q: (J,) joint positions.
        """
        F = len(self.finger_names)
        s = np.linspace(0.0, max_curl, grid)
        d = self.finger_distances(np.repeat(s[:, None], F, axis=1), T_base_obj)  # (grid, F)
        lo = np.zeros(F)
        hi = np.full(F, max_curl)
        for f in range(F):
            hits = np.nonzero(d[:, f] < self.gap)[0]
            if len(hits) == 0:
                lo[f] = hi[f] = max_curl  # never touches: fully closed
            elif hits[0] == 0:
                lo[f] = hi[f] = 0.0  # already touching when straight
            else:
                lo[f], hi[f] = s[hits[0] - 1], s[hits[0]]
        for _ in range(refine):  # bisection, all fingers at once
            mid = 0.5 * (lo + hi)
            dm = self.finger_distances(mid[None], T_base_obj)[0]
            inside = dm < self.gap
            hi = np.where(inside, mid, hi)
            lo = np.where(inside, lo, mid)
        return lo, self.joints(lo[None])[0]


def _smooth(t: np.ndarray, amplitude: float, freqs: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """Sum of sinusoids, normalised so the amplitude is ``amplitude``; zero at t = 0."""
    s = np.sin(2 * np.pi * freqs[:, None] * t[None] + phases[:, None]) - np.sin(phases)[:, None]
    return amplitude * s.sum(axis=0) / len(freqs)


def _look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """T_world_cam of an optical-frame camera (z forward, x right, y down) at ``eye``."""
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return _pose(np.stack([x, y, z], axis=1), eye)


def initial_object_pose(solver: GraspSolver, extents: np.ndarray, clearance_m: float
                        ) -> np.ndarray:
    """T_base_obj of the first frame: smallest extent along the palm normal (+x), largest along
    the fingers (+z), the object's near face ``clearance_m`` off the straightened hand."""
    order = np.argsort(extents)  # object axes: smallest, middle, largest
    R = np.zeros((3, 3))
    R[0, order[0]] = 1.0  # base x <- smallest object axis
    R[2, order[2]] = 1.0  # base z <- largest
    R[1] = np.cross(R[2], R[0])  # right-handed
    z = 0.095 + 0.07  # palm link height + about the middle of the fingers
    x = 0.01 + extents[order[0]] / 2
    for _ in range(60):  # move away from the palm until clear, then back towards it
        if solver.clearance(_pose(R, np.array([x, 0.0, z]))) >= clearance_m:
            break
        x += 0.002
    for _ in range(40):
        trial = _pose(R, np.array([x - 0.0005, 0.0, z]))
        if solver.clearance(trial) < clearance_m:
            break
        x -= 0.0005
    return _pose(R, np.array([x, 0.0, z]))


def make_trajectory(solver: GraspSolver, extents: np.ndarray, config: SceneConfig,
                    rng: np.random.Generator) -> SceneTrajectory:
    """Simulate the scene for every camera frame (module docstring)."""
    N = config.n_frames
    t = np.arange(N) / config.fps
    T_base_obj0 = initial_object_pose(solver, extents, config.palm_clearance_m)

    # In-hand motion relative to the first grasp: roll about the palm normal (base x) and tilt
    # about the fingers (base z) through the object's centre; slip along the fingers.
    f_slow = rng.uniform(0.2, 0.45, size=2)
    ph = rng.uniform(0, 2 * np.pi, size=2)
    roll = np.deg2rad(config.roll_deg) * np.sin(2 * np.pi * f_slow[0] * t + ph[0])
    roll -= roll[0]
    tilt = np.deg2rad(config.tilt_deg) * np.sin(2 * np.pi * f_slow[1] * t + ph[1])
    tilt -= tilt[0]
    slip = np.zeros(N)
    if config.slip_mm > 0:  # one slip event: a smooth step in the middle third
        centre, width = rng.uniform(0.35, 0.65) * t[-1], 0.15 * t[-1] + 1e-9
        slip = -1e-3 * config.slip_mm / (1 + np.exp(-(t - centre) / (0.2 * width)))
        slip -= slip[0]

    # Wrist: sinusoids per axis, zero at t = 0.
    T_world_base0 = _pose(np.eye(3), np.zeros(3))
    freqs = rng.uniform(0.15, 0.6, size=(6, 2))
    phases = rng.uniform(0, 2 * np.pi, size=(6, 2))
    trans = np.stack([_smooth(t, config.wrist_translation_m, freqs[i], phases[i])
                      for i in range(3)], axis=1)
    rotv = np.stack([_smooth(t, np.deg2rad(config.wrist_rotation_deg), freqs[3 + i],
                             phases[3 + i]) for i in range(3)], axis=1)

    q_all = np.empty((N, len(solver.kin.joint_names)))
    T_base_obj = np.empty((N, 4, 4))
    T_world_base = np.empty((N, 4, 4))
    min_dist = np.empty((N, len(solver.finger_names)))
    centre = T_base_obj0[:3, 3].copy()
    for i in range(N):
        R_rel = Rotation.from_rotvec([roll[i], 0, 0]) * Rotation.from_rotvec([0, 0, tilt[i]])
        R = R_rel.as_matrix() @ T_base_obj0[:3, :3]
        p = centre + np.array([0.0, 0.0, slip[i]])
        T = _pose(R, p)
        push = 0
        while solver.clearance(T) < config.palm_clearance_m and push < 50:
            T[0, 3] += 0.001  # the palm pushes the object away
            push += 1
        curl, q = solver.close(T)
        q_all[i], T_base_obj[i] = q, T
        min_dist[i] = solver.finger_distances(curl[None], T)[0]
        T_world_base[i] = T_world_base0 @ _pose(Rotation.from_rotvec(rotv[i]).as_matrix(),
                                                trans[i])
    # Camera: static, looking at the object's first position.
    c_world = (T_world_base[0] @ T_base_obj[0])[:3, 3]
    az = {'low': 30.0, 'medium': 90.0, 'heavy': 150.0}[config.occlusion] + rng.uniform(-10, 10)
    el = rng.uniform(10.0, 25.0)
    a, e = np.deg2rad(az), np.deg2rad(el)
    direction = np.array([np.cos(a) * np.cos(e), np.sin(a) * np.cos(e), np.sin(e)])
    T_world_cam = _look_at(c_world + config.camera_distance_m * direction, c_world,
                           np.array([0.0, 0.0, 1.0]))
    T_cam_obj = np.linalg.inv(T_world_cam)[None] @ T_world_base @ T_base_obj
    return SceneTrajectory(times_s=t, q=q_all, T_world_base=T_world_base, T_base_obj=T_base_obj,
                           T_world_cam=T_world_cam, T_cam_obj=T_cam_obj, min_distance=min_dist,
                           finger_names=solver.finger_names)
