"""Tests of handypriors_ros.core.geometry.rotations and .se3 against scipy and torch references."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation, Slerp

from handypriors_ros.core.errors import HandyPriorsError, InputError
from handypriors_ros.core.geometry import (
    apply_left_perturbation,
    apply_right_perturbation,
    axis_angle_to_matrix,
    axis_angle_to_quat_xyzw,
    identity_transform,
    interpolate_transform,
    invert_transform,
    make_transform,
    matrix_to_axis_angle,
    matrix_to_quat_xyzw,
    matrix_to_rotation_6d,
    matrix_to_rpy,
    pose_to_transform,
    quat_xyzw_multiply,
    quat_xyzw_slerp,
    quat_xyzw_to_axis_angle,
    quat_xyzw_to_matrix,
    rotate_vectors,
    rotation_6d_to_matrix,
    rpy_to_matrix,
    se3_adjoint,
    se3_exp,
    se3_log,
    skew,
    so3_left_jacobian,
    so3_left_jacobian_inverse,
    transform_points,
    transform_to_pose,
    vee,
)

DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
F64 = torch.float64

# Angles where the closed forms need care: zero, tiny, around the Taylor switch, near pi.
SPECIAL_ANGLES = [0.0, 1e-12, 1e-8, 1e-5, 1e-3, 0.0316, 0.0317, 0.5, 2.0,
                  math.pi - 1e-3, math.pi - 1e-6, math.pi - 1e-9, math.pi]


def _random_rotations(n, seed=0):
    return Rotation.random(n, random_state=seed)


def _special_rotvecs():
    """(len(SPECIAL_ANGLES) * 4, 3) rotation vectors along random and axis-aligned axes."""
    rng = np.random.default_rng(1)
    axes = rng.normal(size=(2, 3))
    axes = np.concatenate([axes, np.eye(3)[[0, 2]]])
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    return np.array([a * ang for ang in SPECIAL_ANGLES for a in axes])


def _t(x, dtype=F64, device='cpu'):
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def _hat_se3(xi):
    """(..., 4, 4) twist matrix [[skew(phi), rho], [0, 0]] for the matrix-exponential reference."""
    out = torch.zeros(*xi.shape[:-1], 4, 4, dtype=xi.dtype)
    out[..., :3, :3] = skew(xi[..., 3:])
    out[..., :3, 3] = xi[..., :3]
    return out


# --- rotations against scipy ---------------------------------------------------------------

@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_rotations_match_scipy(device, dtype, tol):
    r = _random_rotations(500)
    q = _t(r.as_quat(), dtype, device)
    R = _t(r.as_matrix(), dtype, device)
    rv = _t(r.as_rotvec(), dtype, device)
    rpy = _t(r.as_euler('xyz'), dtype, device)
    kw = dict(atol=tol, rtol=tol)
    for out in (quat_xyzw_to_matrix(q), quat_xyzw_to_matrix(3.0 * q), axis_angle_to_matrix(rv),
                rpy_to_matrix(rpy)):
        assert out.dtype == dtype and out.device.type == device
        torch.testing.assert_close(out, R, **kw)
    torch.testing.assert_close(matrix_to_quat_xyzw(R), _t(r.as_quat(canonical=True), dtype,
                                                          device), **kw)
    torch.testing.assert_close(matrix_to_axis_angle(R), rv, **kw)
    torch.testing.assert_close(quat_xyzw_to_axis_angle(q), rv, **kw)
    torch.testing.assert_close(matrix_to_rpy(R), rpy, **kw)
    q_from_rv = axis_angle_to_quat_xyzw(rv)
    torch.testing.assert_close(q_from_rv, _t(r.as_quat(canonical=True), dtype, device), **kw)


def test_quaternion_product_matches_scipy():
    r1, r2 = _random_rotations(100, 1), _random_rotations(100, 2)
    out = quat_xyzw_multiply(_t(r1.as_quat()), _t(r2.as_quat()))
    ref = (r1 * r2).as_quat()
    # Compare as rotations: q and -q are the same one.
    torch.testing.assert_close(quat_xyzw_to_matrix(out), _t((r1 * r2).as_matrix()))
    assert np.allclose(np.abs((out.numpy() * ref).sum(-1)), 1.0)


def test_special_angles_round_trip():
    rv = _special_rotvecs()
    r = Rotation.from_rotvec(rv)
    R = axis_angle_to_matrix(_t(rv))
    torch.testing.assert_close(R, _t(r.as_matrix()), atol=1e-14, rtol=0)
    q = matrix_to_quat_xyzw(R)
    # Up to sign (at exactly pi, w = 0 and both signs are canonical).
    dot = (q * _t(r.as_quat())).sum(-1).abs()
    torch.testing.assert_close(dot, torch.ones_like(dot), atol=1e-14, rtol=0)
    torch.testing.assert_close(quat_xyzw_to_matrix(q), R, atol=1e-14, rtol=0)
    log = matrix_to_axis_angle(R)
    angles = np.linalg.norm(rv, axis=1)
    below_pi = angles < math.pi - 1e-4
    # Below pi the log is unique: exact round trip. Near pi compare the rotations, since the
    # axis sign flips at pi; also the angle.
    torch.testing.assert_close(log[below_pi], _t(rv)[below_pi], atol=1e-13, rtol=1e-12)
    torch.testing.assert_close(axis_angle_to_matrix(log), R, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.vector_norm(log, dim=-1), _t(angles),
                               atol=1e-9, rtol=0)


def test_exp_matches_matrix_exponential():
    rv = _t(_special_rotvecs())
    torch.testing.assert_close(axis_angle_to_matrix(rv), torch.linalg.matrix_exp(skew(rv)))
    xi = torch.cat([torch.randn(len(rv), 3, dtype=F64), rv], dim=-1)
    torch.testing.assert_close(se3_exp(xi), torch.linalg.matrix_exp(_hat_se3(xi)))


def test_skew_vee():
    v, w = torch.randn(10, 3, dtype=F64), torch.randn(10, 3, dtype=F64)
    torch.testing.assert_close((skew(v) @ w[..., None]).squeeze(-1), torch.linalg.cross(v, w))
    torch.testing.assert_close(vee(skew(v)), v)


def test_rpy_is_urdf_order():
    rpy = torch.tensor([0.3, -0.7, 1.1], dtype=F64)
    r, p, y = rpy.tolist()
    Rx = Rotation.from_euler('x', r).as_matrix()
    Ry = Rotation.from_euler('y', p).as_matrix()
    Rz = Rotation.from_euler('z', y).as_matrix()
    torch.testing.assert_close(rpy_to_matrix(rpy), _t(Rz @ Ry @ Rx))


def test_rpy_gimbal_lock_round_trip():
    rpy = _t([[0.4, math.pi / 2, 0.1], [0.4, -math.pi / 2, 0.1]])
    R = rpy_to_matrix(rpy)
    torch.testing.assert_close(rpy_to_matrix(matrix_to_rpy(R)), R, atol=1e-7, rtol=0)


def test_slerp_matches_scipy():
    r = _random_rotations(2, 3)
    alphas = np.linspace(0, 1, 11)
    ref = Slerp([0, 1], r)(alphas).as_quat(canonical=True)
    q0 = _t(r[0].as_quat()).expand(11, 4)
    q1 = _t(r[1].as_quat()).expand(11, 4)
    out = quat_xyzw_slerp(q0, -q1, _t(alphas))  # -q1: must still take the shorter arc
    torch.testing.assert_close(out, _t(ref))
    # Batched over pairs, scalar alpha.
    ra, rb = _random_rotations(50, 4), _random_rotations(50, 5)
    out = quat_xyzw_slerp(_t(ra.as_quat()), _t(rb.as_quat()), 0.3)
    ref = np.stack([Slerp([0, 1], Rotation.concatenate([a, b]))(0.3).as_quat(canonical=True)
                    for a, b in zip(ra, rb)])
    torch.testing.assert_close(out, _t(ref))
    # Identical endpoints (zero angle) stay finite.
    same = quat_xyzw_slerp(q0[:1], q0[:1], 0.5)
    torch.testing.assert_close(quat_xyzw_to_matrix(same), quat_xyzw_to_matrix(q0[:1]))


def test_rotation_6d_round_trip_and_gram_schmidt():
    R = _t(_random_rotations(100).as_matrix())
    torch.testing.assert_close(rotation_6d_to_matrix(matrix_to_rotation_6d(R)), R)
    d6 = torch.randn(100, 6, dtype=F64)
    out = rotation_6d_to_matrix(d6)
    eye = torch.eye(3, dtype=F64).expand(100, 3, 3)
    torch.testing.assert_close(out.transpose(-1, -2) @ out, eye)
    torch.testing.assert_close(torch.linalg.det(out), torch.ones(100, dtype=F64))
    # The first column is the normalised first half.
    torch.testing.assert_close(out[..., :, 0], d6[:, :3] / d6[:, :3].norm(dim=-1, keepdim=True))


def test_left_jacobian_inverse():
    phi = _t(_special_rotvecs()[:-4])  # below 2 pi everywhere; exclude exactly pi for margin
    eye = torch.eye(3, dtype=F64).expand(len(phi), 3, 3)
    torch.testing.assert_close(so3_left_jacobian(phi) @ so3_left_jacobian_inverse(phi), eye)


def test_left_jacobian_is_derivative_of_exp():
    # exp(phi + d) ~= exp(J_l(phi) d) exp(phi) for small d.
    phi = torch.tensor([0.3, -1.2, 0.8], dtype=F64)
    d = 1e-6 * torch.tensor([0.5, 0.2, -0.9], dtype=F64)
    lhs = axis_angle_to_matrix(phi + d)
    rhs = axis_angle_to_matrix(so3_left_jacobian(phi) @ d) @ axis_angle_to_matrix(phi)
    torch.testing.assert_close(lhs, rhs, atol=1e-11, rtol=0)


# --- se3 -----------------------------------------------------------------------------------

def _random_transforms(n, seed=0):
    r = _random_rotations(n, seed)
    t = np.random.default_rng(seed).normal(size=(n, 3))
    return make_transform(_t(r.as_matrix()), _t(t)), r, t


@pytest.mark.parametrize('device', DEVICES)
def test_transform_points_matches_numpy(device):
    T, r, t = _random_transforms(8)
    p = np.random.default_rng(1).normal(size=(8, 20, 3))
    ref = np.einsum('bij,bnj->bni', r.as_matrix(), p) + t[:, None]
    out = transform_points(T.to(device), _t(p, device=device))
    torch.testing.assert_close(out.cpu(), _t(ref))
    back = transform_points(invert_transform(T.to(device)), out)
    torch.testing.assert_close(back.cpu(), _t(p))


def test_broadcasting_shapes():
    T, _, _ = _random_transforms(2)
    T = T[:, None]  # (2, 1, 4, 4)
    p = torch.randn(5, 7, 3, dtype=F64)
    assert transform_points(T, p).shape == (2, 5, 7, 3)
    assert rotate_vectors(T, p).shape == (2, 5, 7, 3)
    R = torch.eye(3, dtype=F64)
    t = torch.randn(4, 3, dtype=F64)
    assert make_transform(R, t).shape == (4, 4, 4)
    assert pose_to_transform(torch.zeros(3, 1, 3, dtype=F64),
                             torch.tensor([0, 0, 0, 1.0], dtype=F64).expand(5, 4)).shape == (
        3, 5, 4, 4)
    assert se3_exp(torch.zeros(2, 3, 6)).shape == (2, 3, 4, 4)
    assert se3_log(identity_transform(2, 3)).shape == (2, 3, 6)
    assert interpolate_transform(T, T[0, 0], torch.rand(2, 4, dtype=F64)).shape == (2, 4, 4, 4)
    assert axis_angle_to_matrix(torch.zeros(3)).shape == (3, 3)
    assert matrix_to_quat_xyzw(torch.eye(3).expand(2, 3, 4, 3, 3)).shape == (2, 3, 4, 4)


def test_invert_and_compose():
    T_a_b, _, _ = _random_transforms(10, 1)
    T_b_c, _, _ = _random_transforms(10, 2)
    eye = torch.eye(4, dtype=F64).expand(10, 4, 4)
    torch.testing.assert_close(T_a_b @ invert_transform(T_a_b), eye)
    torch.testing.assert_close(invert_transform(T_a_b), torch.linalg.inv(T_a_b))
    torch.testing.assert_close(invert_transform(T_a_b @ T_b_c),
                               invert_transform(T_b_c) @ invert_transform(T_a_b))


def test_pose_round_trip():
    T, r, t = _random_transforms(50, 3)
    t_out, q_out = transform_to_pose(T)
    torch.testing.assert_close(t_out, _t(t))
    torch.testing.assert_close(q_out, _t(r.as_quat(canonical=True)))
    torch.testing.assert_close(pose_to_transform(t_out, -2 * q_out), T)


def test_se3_exp_log_round_trip():
    rv = _special_rotvecs()
    rho = np.random.default_rng(2).normal(size=rv.shape)
    xi = _t(np.concatenate([rho, rv], axis=1))
    T = se3_exp(xi)
    xi_back = se3_log(T)
    below_pi = np.linalg.norm(rv, axis=1) < math.pi - 1e-4
    torch.testing.assert_close(xi_back[below_pi], xi[below_pi], atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(se3_exp(xi_back), T, atol=1e-9, rtol=0)
    # Random transforms: log then exp.
    T, _, _ = _random_transforms(200, 4)
    torch.testing.assert_close(se3_exp(se3_log(T)), T)
    # float32 keeps its dtype and precision.
    T32 = T.float()
    out = se3_exp(se3_log(T32))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, T32, atol=2e-5, rtol=0)


def test_perturbations_and_adjoint():
    T, _, _ = _random_transforms(20, 5)
    d = 0.3 * torch.randn(20, 6, dtype=F64)
    right = apply_right_perturbation(T, d)
    left = apply_left_perturbation(T, d)
    torch.testing.assert_close(right, T @ se3_exp(d))
    torch.testing.assert_close(left, se3_exp(d) @ T)
    # A right (local) perturbation equals a left one moved by the adjoint.
    d_parent = (se3_adjoint(T) @ d[..., None]).squeeze(-1)
    torch.testing.assert_close(apply_left_perturbation(T, d_parent), right)
    # Translation-only right perturbation moves along the local axes.
    d_x = torch.tensor([0.1, 0, 0, 0, 0, 0], dtype=F64)
    torch.testing.assert_close(apply_right_perturbation(T, d_x)[..., :3, 3],
                               T[..., :3, 3] + 0.1 * T[..., :3, 0])


def test_interpolate_transform_matches_scipy():
    T, r, t = _random_transforms(2, 6)
    alphas = np.array([0.0, 0.25, 0.5, 0.9, 1.0])
    out = interpolate_transform(T[0], T[1], _t(alphas))
    ref_R = Slerp([0, 1], r)(alphas).as_matrix()
    ref_t = (1 - alphas)[:, None] * t[0] + alphas[:, None] * t[1]
    torch.testing.assert_close(out[:, :3, :3], _t(ref_R))
    torch.testing.assert_close(out[:, :3, 3], _t(ref_t))


# --- gradients -----------------------------------------------------------------------------

def _gradcheck(fn, *inputs):
    inputs = tuple(x.detach().clone().requires_grad_(True) for x in inputs)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-7, atol=1e-6, rtol=1e-5)


def test_gradcheck_so3():
    rv_small = _t([[0.0, 0.0, 0.0], [1e-9, -2e-9, 0.0], [1e-3, 2e-3, -1e-3]])
    rv = torch.cat([rv_small, 0.8 * torch.randn(4, 3, dtype=F64),
                    _t([[0.0, 0.0, math.pi - 1e-2]])])
    _gradcheck(axis_angle_to_matrix, rv)
    _gradcheck(axis_angle_to_quat_xyzw, rv)
    _gradcheck(lambda x: matrix_to_axis_angle(axis_angle_to_matrix(x)), rv)
    _gradcheck(so3_left_jacobian, rv)
    _gradcheck(so3_left_jacobian_inverse, rv)
    R = _t(_random_rotations(5, 7).as_matrix())
    _gradcheck(matrix_to_quat_xyzw, R)
    _gradcheck(matrix_to_axis_angle, R)
    _gradcheck(quat_xyzw_to_matrix, torch.randn(5, 4, dtype=F64))
    _gradcheck(rpy_to_matrix, torch.randn(5, 3, dtype=F64))
    q0, q1 = torch.randn(4, 4, dtype=F64), torch.randn(4, 4, dtype=F64)
    _gradcheck(quat_xyzw_slerp, q0, q1, torch.rand(4, dtype=F64))


def test_gradient_of_exp_at_zero_is_skew_basis():
    # d exp(phi) / d phi at 0 is skew(e_i): finite and exact, not NaN.
    phi = torch.zeros(3, dtype=F64, requires_grad=True)
    J = torch.autograd.functional.jacobian(axis_angle_to_matrix, phi)  # (3, 3, 3)
    for i in range(3):
        torch.testing.assert_close(J[..., i], skew(torch.eye(3, dtype=F64)[i]))
    R = torch.eye(3, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(matrix_to_axis_angle(R).sum(), R)
    assert torch.isfinite(g).all()


def test_gradcheck_se3_and_6d():
    xi = torch.cat([torch.randn(5, 3, dtype=F64),
                    torch.cat([torch.zeros(1, 3, dtype=F64), 1e-4 * torch.randn(1, 3, dtype=F64),
                               torch.randn(3, 3, dtype=F64)])], dim=-1)
    _gradcheck(se3_exp, xi)
    _gradcheck(lambda x: se3_log(se3_exp(x)), xi)
    T, _, _ = _random_transforms(3, 8)
    p = torch.randn(3, 6, 3, dtype=F64)
    _gradcheck(transform_points, T, p)
    _gradcheck(invert_transform, T)
    _gradcheck(apply_right_perturbation, T, 0.1 * torch.randn(3, 6, dtype=F64))
    _gradcheck(interpolate_transform, T[0], T[1], torch.rand(4, dtype=F64))
    _gradcheck(rotation_6d_to_matrix, torch.randn(5, 6, dtype=F64))
    _gradcheck(lambda d6: transform_points(make_transform(rotation_6d_to_matrix(d6),
                                                          torch.zeros(3, dtype=F64)), p[0]),
               torch.randn(6, dtype=F64))


# --- validation ----------------------------------------------------------------------------

def test_bad_inputs_raise_input_error():
    with pytest.raises(InputError, match=r'q_xyzw: expected shape \(\.\.\., 4\), got \(3,\)'):
        quat_xyzw_to_matrix(torch.zeros(3))
    with pytest.raises(InputError, match='R: expected a floating dtype'):
        matrix_to_quat_xyzw(torch.eye(3, dtype=torch.int64))
    with pytest.raises(InputError, match='rotvec: expected a torch.Tensor'):
        axis_angle_to_matrix(np.zeros(3))
    with pytest.raises(InputError, match=r'p_b: expected shape \(\.\.\., N, 3\)'):
        transform_points(torch.eye(4), torch.zeros(3))
    with pytest.raises(InputError, match=r'T_a_b: expected shape \(\.\.\., 4, 4\)'):
        invert_transform(torch.eye(3))
    with pytest.raises(HandyPriorsError, match='xi'):
        se3_exp(torch.zeros(5))


# --- dependency direction ------------------------------------------------------------------

def test_core_does_not_import_rclpy():
    code = '\n'.join([
        'import importlib, pkgutil, sys',
        'import handypriors_ros.core as core',
        'names = [m.name for m in pkgutil.walk_packages(core.__path__, core.__name__ + ".")]',
        'for name in names:',
        '    importlib.import_module(name)',
        'def forbidden(m):',
        '    top = m.split(".")[0]',
        '    return top == "rclpy" or top.endswith("_msgs") or m.endswith("_msgs")',
        'bad = sorted(m for m in sys.modules if forbidden(m))',
        'print(len(names), "modules;", "forbidden:", bad)',
        'sys.exit(1 if bad else 0)',
    ])
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(repo), env.get('PYTHONPATH')]))
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120, env=env, cwd=repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mesh_topology_agrees_with_trimesh():
    """is_closed_outward against trimesh's watertight / winding / volume on closed, open,
    flipped and seam-split meshes."""
    import trimesh

    from handypriors_ros.core.geometry.mesh_topology import (is_closed_and_oriented,
                                                             is_closed_outward,
                                                             merged_by_position)
    box = trimesh.creation.box((0.1, 0.2, 0.3))
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.05)
    cyl = trimesh.creation.cylinder(radius=0.03, height=0.1, sections=24)
    for mesh in (box, sphere, cyl):
        flipped = trimesh.Trimesh(mesh.vertices, mesh.faces[:, ::-1], process=False)
        opened = trimesh.Trimesh(mesh.vertices, mesh.faces[1:], process=False)
        for m in (mesh, flipped, opened):
            expected = bool(m.is_watertight and m.is_winding_consistent and m.volume > 0)
            assert is_closed_outward(m.vertices, m.faces) == expected
        assert is_closed_outward(mesh.vertices, mesh.faces)
        assert not is_closed_outward(flipped.vertices, flipped.faces)
        assert not is_closed_outward(opened.vertices, opened.faces)
        # every face with its own three vertices (as a UV seam everywhere does): the same
        # surface once joined
        split_v = mesh.vertices[mesh.faces].reshape(-1, 3)
        split_f = np.arange(len(split_v)).reshape(-1, 3)
        assert not is_closed_and_oriented(split_f, len(split_v))
        v, f = merged_by_position(split_v, split_f)
        assert len(v) == len(mesh.vertices) and is_closed_and_oriented(f, len(v))
        assert is_closed_outward(split_v, split_f)


def test_axis_angle_to_matrix_of_one_vector_equals_the_batched_path_to_the_bit():
    """One vector without a graph takes a shortcut (only the branch torch.where keeps); its
    values are the batched path's, bit for bit, on both sides of the small-angle switch; the
    ekf's single-pose oplus is the batched one's too."""
    import torch

    from handypriors_ros.core.geometry.rotations import axis_angle_to_matrix
    from handypriors_ros.core.tracking.ekf import oplus

    g = torch.Generator().manual_seed(3)
    for scale in (1e-6, 1e-3, 0.02, 0.0316, 0.04, 0.5, 3.0):
        v = torch.randn(500, 3, generator=g, dtype=torch.float64) * scale
        batched = axis_angle_to_matrix(v)
        one = torch.stack([axis_angle_to_matrix(x) for x in v])
        assert torch.equal(one, batched), scale
        T = torch.eye(4, dtype=torch.float64)
        T[:3, :3] = axis_angle_to_matrix(torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64))
        T[:3, 3] = torch.tensor([0.1, 0.2, 0.5], dtype=torch.float64)
        delta = torch.cat([torch.randn(500, 3, generator=g, dtype=torch.float64) * 0.01, v], -1)
        assert torch.equal(torch.stack([oplus(T, d) for d in delta]),
                           oplus(T.expand(500, 4, 4), delta)), scale
    # with a graph the batched path (and its gradient) is used
    w = torch.tensor([1e-3, 2e-3, 0.0], dtype=torch.float64, requires_grad=True)
    axis_angle_to_matrix(w).sum().backward()
    assert torch.isfinite(w.grad).all()


@pytest.mark.parametrize('roi_size', [64, 1000])  # downscaled and full-resolution ROIs
def test_roi_crop_mask_is_the_crop_of_the_float_mask(roi_size):
    """crop_mask cuts before converting; the pixels are those of crop(mask as float) > 0.5."""
    from handypriors_ros.core.render.camera import PinholeCamera
    from handypriors_ros.core.render.roi import make_roi

    camera = PinholeCamera(fx=500.0, fy=500.0, cx=320.0, cy=240.0, width=640, height=480)
    rng = np.random.default_rng(4)
    vertices = rng.uniform(-0.05, 0.05, (50, 3))
    T = np.eye(4)
    T[:3, 3] = [0.02, -0.01, 0.4]
    roi = make_roi(camera, T, vertices, roi_size)
    mask = rng.uniform(size=(480, 640)) > 0.6
    expected = roi.crop(mask.astype(np.float32)) > 0.5
    np.testing.assert_array_equal(roi.crop_mask(mask), expected)
