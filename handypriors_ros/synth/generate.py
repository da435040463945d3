"""``handypriors generate``: a synthetic sequence as an input bag plus ground truth.

The output folder holds:
- ``bag/``: a rosbag2 (MCAP) bag exactly in the INTERFACES.md layout: colour images (rgb8,
  30 Hz) with camera_info, joint states (~100 Hz, not synchronised with the camera), /tf
  ``world -> ah_base_link`` (moving, at the joint-state rate), /tf_static
  ``world -> camera_color_optical_frame``, a segmenter-like object mask (some frames dropped)
  and ``/handypriors/initial_pose`` at the first image stamp (the truth perturbed by a known
  offset);
- ``object.ply``: the object's mesh (metres, vertex colours), for ``--object``;
- ``ground_truth.npz``: per image stamp T_cam_obj, joint positions, T_world_base, visible
  fraction, finger distances; plus T_world_cam, K and the initial-pose offset;
- ``sequence.json``: the settings and a summary;
- ``preview.png`` (with ``--preview``): a contact sheet with the true object outline and the
  hand's projected skeleton drawn on the images.

Deterministic for a seed.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.interpolate import CubicSpline
from scipy.spatial.transform import Rotation

from handypriors_ros import interfaces
from handypriors_ros.bag import BagWriter
from handypriors_ros.core.errors import InputError
from handypriors_ros.core.models.builtin_objects import BUILTIN_OBJECTS, make_builtin
from handypriors_ros.core.models.kinematics import HandKinematics
from handypriors_ros.core.models.object_model import load_object_mesh
from handypriors_ros.core.physics.sdf import WarpMeshSDF
from handypriors_ros.core.render.camera import PinholeCamera
from handypriors_ros.core.render.mesh import RenderMesh
from handypriors_ros.core.render.renderer import Renderer, RenderSettings
from handypriors_ros.resources import default_hand_urdf
from handypriors_ros.synth.corruption import (SegmenterNoise, SensorNoise, add_sensor_noise,
                                              corrupt_mask)
from handypriors_ros.synth.scene import GraspSolver, SceneConfig, SceneTrajectory, make_trajectory


@dataclass(frozen=True)
class GenerateConfig:
    """Everything that defines a synthetic sequence (with the seed, it is reproducible).

    Attributes:
        object_name: a built-in object (``BUILTIN_OBJECTS``) or a mesh file path.
        object_scale: scale of a mesh file (e.g. 0.001 for millimetres).
        scene: motion and camera placement.
        width, height: image size [px]; fx, fy, cx, cy: intrinsics [px] (a RealSense D435
            colour camera at 640x480 has about fx = fy = 615).
        joint_rate_hz: joint-state (and arm TF) rate.
        joint_noise_rad: std of the joint encoders' noise.
        image_latency_s: log time - stamp of images (transport delay).
        init_offset_m, init_offset_deg: size of the initial-pose perturbation.
        sensor, segmenter: imperfections.
        seed: random seed.
        start_time_ns: stamp of the first image.
    """
    object_name: str = 'mustard_bottle'
    object_scale: float = 1.0
    scene: SceneConfig = field(default_factory=SceneConfig)
    width: int = 640
    height: int = 480
    fx: float = 615.0
    fy: float = 615.0
    cx: float = 319.5
    cy: float = 239.5
    joint_rate_hz: float = 100.0
    joint_noise_rad: float = 0.002
    image_latency_s: float = 0.012
    init_offset_m: float = 0.01
    init_offset_deg: float = 5.0
    sensor: SensorNoise = field(default_factory=SensorNoise)
    segmenter: SegmenterNoise = field(default_factory=SegmenterNoise)
    seed: int = 0
    start_time_ns: int = 1_700_000_000_000_000_000

    @property
    def camera(self) -> PinholeCamera:
        return PinholeCamera(fx=self.fx, fy=self.fy, cx=self.cx, cy=self.cy,
                             width=self.width, height=self.height)


@dataclass(frozen=True)
class RenderedFrame:
    """One rendered camera frame.

    Attributes:
        rgb: (H, W, 3) uint8 noisy image.
        visible_mask: (H, W) bool, object pixels not hidden by the hand.
        full_mask: (H, W) bool, object pixels without the hand.
    """
    rgb: np.ndarray
    visible_mask: np.ndarray
    full_mask: np.ndarray


def _background(cfg: GenerateConfig, rng: np.random.Generator) -> np.ndarray:
    """A static, mildly textured background: a table-like gradient with a few soft shapes."""
    h, w = cfg.height, cfg.width
    y = np.linspace(0, 1, h)[:, None, None]
    base = (1 - y) * np.array([150, 155, 165]) + y * np.array([95, 85, 75])
    img = np.broadcast_to(base, (h, w, 3)).astype(np.float32).copy()
    for _ in range(6):
        c = tuple(int(v) for v in rng.integers(60, 200, size=3))
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(20, 120)), int(rng.integers(10, 60)))
        layer = img.copy()
        cv2.ellipse(layer, centre, axes, float(rng.uniform(0, 180)), 0, 360, c, -1)
        img = 0.6 * img + 0.4 * layer
    return cv2.GaussianBlur(img, (0, 0), 3.0)


class SceneRenderer:
    """Composes a frame: the hand and the object rendered by the project's one
    :class:`~handypriors_ros.core.render.renderer.Renderer` (``render_scene``: z-buffer,
    two-sided flat Lambertian shading, the object's vertex colours or texture) over the
    background image."""

    def __init__(self, kin: HandKinematics, object_mesh, cfg: GenerateConfig,
                 background: np.ndarray) -> None:
        self.kin = kin
        self.cam = cfg.camera
        self.cfg = cfg
        self.background = torch.as_tensor(background, dtype=torch.float32)
        # Hand colours: dark grey links, white fingertips.
        tip_ids = [kin.link_index(n) for n in kin.fingertip_links]
        is_tip = torch.isin(kin.vertex_link_ids, torch.as_tensor(tip_ids))
        hand_colors = torch.full((kin.mesh_vertices_link.shape[0], 3), 0.18)
        hand_colors[is_tip] = 0.92
        light = np.array([0.3, -0.6, 1.0])
        # Neither mesh is culled: the generator's meshes need not be consistently wound.
        self.renderer = Renderer(
            RenderMesh.from_trimesh(object_mesh), hand_faces=kin.mesh_faces.long(),
            hand_vertex_colors=hand_colors,
            settings=RenderSettings(cull_backfaces=False, flat_shading=True,
                                    light_dir_cam=tuple(light / np.linalg.norm(light)),
                                    ambient=0.35, diffuse=0.65))

    def render(self, q: np.ndarray, T_cam_base: np.ndarray, T_cam_obj: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Returns clean rgb (H, W, 3) float, visible object mask, full object mask,
        hand mask (all (H, W))."""
        hand_v, _ = self.kin.posed_mesh(torch.as_tensor(q[None], dtype=self.kin.dtype),
                                        torch.as_tensor(T_cam_base[None], dtype=self.kin.dtype))
        T = torch.as_tensor(T_cam_obj, dtype=torch.float32)[None]
        scene = self.renderer.render_scene(self.cam, T, hand_v.float())
        covered = scene.object_mask[0] | scene.hand_mask[0]
        rgb = torch.where(covered[..., None], scene.rgb[0] * 255.0, self.background)
        full = self.renderer.rasterize(self.cam, T, barycentrics=False).object_visible[0]
        return (rgb.numpy(), scene.object_mask[0].numpy(), full.numpy(),
                scene.hand_mask[0].numpy())


def _time_msg(T, ns: int):
    return T['builtin_interfaces/msg/Time'](sec=int(ns // 1_000_000_000),
                                            nanosec=int(ns % 1_000_000_000))


def _transform_msg(T, ns: int, parent: str, child: str, M: np.ndarray):
    q = Rotation.from_matrix(M[:3, :3]).as_quat()
    return T['geometry_msgs/msg/TransformStamped'](
        header=T['std_msgs/msg/Header'](stamp=_time_msg(T, ns), frame_id=parent),
        child_frame_id=child,
        transform=T['geometry_msgs/msg/Transform'](
            translation=T['geometry_msgs/msg/Vector3'](x=M[0, 3], y=M[1, 3], z=M[2, 3]),
            rotation=T['geometry_msgs/msg/Quaternion'](x=q[0], y=q[1], z=q[2], w=q[3])))


def _pose_msg(T, M: np.ndarray):
    q = Rotation.from_matrix(M[:3, :3]).as_quat()
    return T['geometry_msgs/msg/Pose'](
        position=T['geometry_msgs/msg/Point'](x=M[0, 3], y=M[1, 3], z=M[2, 3]),
        orientation=T['geometry_msgs/msg/Quaternion'](x=q[0], y=q[1], z=q[2], w=q[3]))


def _image_msg(T, ns: int, frame: str, img: np.ndarray, encoding: str):
    h, w = img.shape[:2]
    channels = 1 if img.ndim == 2 else img.shape[2]
    return T['sensor_msgs/msg/Image'](
        header=T['std_msgs/msg/Header'](stamp=_time_msg(T, ns), frame_id=frame),
        height=h, width=w, encoding=encoding, is_bigendian=0, step=w * channels,
        data=np.ascontiguousarray(img, dtype=np.uint8).reshape(-1))


def _camera_info_msg(T, ns: int, frame: str, cam: PinholeCamera):
    K = np.array([cam.fx, 0, cam.cx, 0, cam.fy, cam.cy, 0, 0, 1], dtype=np.float64)
    P = np.array([cam.fx, 0, cam.cx, 0, 0, cam.fy, cam.cy, 0, 0, 0, 1, 0], dtype=np.float64)
    return T['sensor_msgs/msg/CameraInfo'](
        header=T['std_msgs/msg/Header'](stamp=_time_msg(T, ns), frame_id=frame),
        height=cam.height, width=cam.width, distortion_model='plumb_bob',
        d=np.zeros(5), k=K, r=np.eye(3).reshape(-1), p=P, binning_x=0, binning_y=0,
        roi=T['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0, width=0,
                                                  do_rectify=False))


def perturb_pose(T_cam_obj: np.ndarray, offset_m: float, offset_deg: float,
                 rng: np.random.Generator) -> np.ndarray:
    """The pose moved by exactly ``offset_m`` in a random direction and rotated by exactly
    ``offset_deg`` about a random axis through the object's origin."""
    d = rng.normal(size=3)
    axis = rng.normal(size=3)
    out = T_cam_obj.copy()
    out[:3, 3] += offset_m * d / np.linalg.norm(d)
    R = Rotation.from_rotvec(np.deg2rad(offset_deg) * axis / np.linalg.norm(axis)).as_matrix()
    out[:3, :3] = T_cam_obj[:3, :3] @ R
    return out


def load_generator_object(cfg: GenerateConfig):
    """The object's trimesh (vertex colours) for a built-in name or a mesh path."""
    if cfg.object_name in BUILTIN_OBJECTS:
        return make_builtin(cfg.object_name)
    return load_object_mesh(cfg.object_name, scale=cfg.object_scale)


def generate(cfg: GenerateConfig, out_dir: str | Path, *, preview: bool = False,
             overwrite: bool = False, progress=None) -> dict:
    """Generate a sequence into ``out_dir`` (module docstring). Returns the summary dict."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise InputError(f'output folder {out_dir} exists and is not empty')
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    t_start = time.perf_counter()
    kin = HandKinematics.from_urdf(default_hand_urdf())
    mesh = load_generator_object(cfg)
    sdf = WarpMeshSDF(mesh.vertices, mesh.faces)
    solver = GraspSolver(kin, sdf, contact_gap_m=cfg.scene.contact_gap_m)
    traj = make_trajectory(solver, np.asarray(mesh.extents), cfg.scene, rng)
    mesh.export(out_dir / 'object.ply')

    renderer = SceneRenderer(kin, mesh, cfg, _background(cfg, rng))
    N = cfg.scene.n_frames
    period_ns = int(round(1e9 / cfg.scene.fps))
    image_ns = cfg.start_time_ns + np.arange(N, dtype=np.int64) * period_ns
    T_cam_world = np.linalg.inv(traj.T_world_cam)
    visible_fraction = np.zeros(N)
    frames_for_preview = {}
    preview_idx = set(np.linspace(0, N - 1, 8).round().astype(int).tolist()) if preview else set()
    mask_dropped = 0
    cam_frame = interfaces.CAMERA_FRAME

    with BagWriter(out_dir / 'bag', overwrite=overwrite) as bag:
        Ty = bag.store.types
        # Static camera calibration, latched before everything else.
        bag.write(interfaces.TF_STATIC_TOPIC, int(image_ns[0]) - 200_000_000,
                  Ty['tf2_msgs/msg/TFMessage'](transforms=[_transform_msg(
                      Ty, int(image_ns[0]) - 200_000_000, interfaces.WORLD_FRAME, cam_frame,
                      traj.T_world_cam)]))
        # Joint states and arm TF at the joint rate, not synchronised with the camera,
        # from 50 ms before the first image to 50 ms after the last.
        t_img = (image_ns - image_ns[0]) / 1e9
        js_period = 1.0 / cfg.joint_rate_hz
        t_js = np.arange(-0.05 + rng.uniform(0, js_period), t_img[-1] + 0.05, js_period)
        t_js = t_js + rng.uniform(-0.1, 0.1, size=t_js.shape) * js_period
        q_spline = CubicSpline(t_img, traj.q, axis=0)
        tr_spline = CubicSpline(t_img, traj.T_world_base[:, :3, 3], axis=0)
        rv_spline = CubicSpline(t_img, Rotation.from_matrix(
            traj.T_world_base[:, :3, :3]).as_rotvec(), axis=0)
        joint_names = list(kin.joint_names)
        for tj in t_js:
            ns = int(image_ns[0] + round(tj * 1e9))
            q = q_spline(tj) + rng.normal(0, cfg.joint_noise_rad, size=len(joint_names))
            bag.write(interfaces.JOINT_STATES_TOPIC, ns + 1_000_000, Ty['sensor_msgs/msg/JointState'](
                header=Ty['std_msgs/msg/Header'](stamp=_time_msg(Ty, ns), frame_id=''),
                name=joint_names, position=q.astype(np.float64),
                velocity=np.zeros(0), effort=np.zeros(0)))
            M = np.eye(4)
            M[:3, :3] = Rotation.from_rotvec(rv_spline(tj)).as_matrix()
            M[:3, 3] = tr_spline(tj)
            bag.write(interfaces.TF_TOPIC, ns + 1_000_000, Ty['tf2_msgs/msg/TFMessage'](
                transforms=[_transform_msg(Ty, ns, interfaces.WORLD_FRAME,
                                           interfaces.HAND_ROOT_FRAME, M)]))
        # Images, camera info and masks.
        latency_ns = int(cfg.image_latency_s * 1e9)
        for i in range(N):
            T_cam_base = T_cam_world @ traj.T_world_base[i]
            rgb_f, visible, full, _ = renderer.render(traj.q[i], T_cam_base, traj.T_cam_obj[i])
            rgb = add_sensor_noise(np.clip(rgb_f, 0, 255).astype(np.uint8), cfg.sensor, rng)
            visible_fraction[i] = visible.sum() / max(full.sum(), 1)
            ns = int(image_ns[i])
            bag.write(interfaces.CAMERA_INFO_TOPIC, ns + latency_ns,
                      _camera_info_msg(Ty, ns, cam_frame, cfg.camera))
            bag.write(interfaces.IMAGE_TOPIC, ns + latency_ns,
                      _image_msg(Ty, ns, cam_frame, rgb, 'rgb8'))
            seg = corrupt_mask(visible, cfg.segmenter, rng)
            if seg is None:
                mask_dropped += 1
            else:
                bag.write(interfaces.MASK_TOPIC, ns + 2 * latency_ns,
                          _image_msg(Ty, ns, cam_frame, seg, 'mono8'))
            if i == 0:
                T_init = perturb_pose(traj.T_cam_obj[0], cfg.init_offset_m, cfg.init_offset_deg,
                                      rng)
                bag.write(interfaces.INITIAL_POSE_TOPIC, ns + latency_ns,
                          Ty['geometry_msgs/msg/PoseStamped'](
                              header=Ty['std_msgs/msg/Header'](stamp=_time_msg(Ty, ns),
                                                               frame_id=cam_frame),
                              pose=_pose_msg(Ty, T_init)))
            if i in preview_idx:
                frames_for_preview[i] = rgb
            if progress is not None:
                progress(i + 1, N)

    np.savez_compressed(
        out_dir / 'ground_truth.npz', stamps_ns=image_ns, T_cam_obj=traj.T_cam_obj, q=traj.q,
        joint_names=np.array(joint_names), T_world_base=traj.T_world_base,
        T_world_cam=traj.T_world_cam, T_base_obj=traj.T_base_obj, K=np.array(
            [[cfg.fx, 0, cfg.cx], [0, cfg.fy, cfg.cy], [0, 0, 1]]),
        visible_fraction=visible_fraction, finger_min_distance=traj.min_distance,
        finger_names=np.array(traj.finger_names), T_cam_obj_initial=T_init)
    in_contact = (traj.min_distance < 0.005).sum(axis=1)
    summary = {
        'frames': N, 'object': cfg.object_name, 'seed': cfg.seed,
        'image_size': [cfg.width, cfg.height], 'joint_state_messages': int(len(t_js)),
        'masks_dropped': mask_dropped,
        'visible_fraction_mean': float(visible_fraction.mean()),
        'visible_fraction_min': float(visible_fraction.min()),
        'fingers_in_contact_mean': float(in_contact.mean()),
        'initial_offset': {'m': cfg.init_offset_m, 'deg': cfg.init_offset_deg},
        'seconds': round(time.perf_counter() - t_start, 2),
    }
    config_dict = dataclasses.asdict(cfg)
    (out_dir / 'sequence.json').write_text(json.dumps(
        {'config': config_dict, 'summary': summary}, indent=2, default=str))
    if preview:
        from handypriors_ros.synth.preview import write_contact_sheet
        write_contact_sheet(out_dir / 'preview.png', frames_for_preview, traj, kin, cfg,
                            renderer.renderer)
    return summary
