"""Quasistatic contact dynamics (eq. 9, core.physics.quasistatic): a hand-made rigid motion of
contact points on a box is recovered, the contact weights follow the box's analytic distances,
the subset fit equals the zero-weighted fit over all points (the refinement's former
formulation), the fallbacks, the tracker's prediction and the refinement's initialisation give
the same poses, on every device available."""

import numpy as np
import pytest
import torch
import trimesh

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.geometry.rotations import axis_angle_to_matrix
from handypriors_ros.core.geometry.se3 import make_transform
from handypriors_ros.core.physics import (QUASISTATIC_MODES, FitStatus, WarpMeshSDF,
                                          find_contacts, quasistatic_step, weighted_rigid_fit)
from handypriors_ros.core.physics.quasistatic import contact_query
from handypriors_ros.core.refine import quasistatic_poses
from handypriors_ros.core.tracking.config import TrackerConfig
from handypriors_ros.core.tracking.dynamics import HandFrame, predict_motion

DEVICES = [
    'cpu',
    pytest.param('cuda', marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason='no CUDA device (torch.cuda.is_available() False)')),
]
EXTENTS = (0.06, 0.04, 0.10)
F64 = torch.float64


def _box_sdf(device='cpu') -> WarpMeshSDF:
    box = trimesh.creation.box(extents=EXTENTS)
    return WarpMeshSDF(box.vertices, box.faces, device=device)


def _motion(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    R = axis_angle_to_matrix(torch.randn(3, generator=g, dtype=F64) * 0.1)
    return make_transform(R, torch.randn(3, generator=g, dtype=F64) * 0.01)


def _scene(seed: int = 0):
    """Hand points in the camera frame: 30 on the box's +x face (contacts, at known offsets
    from it) and 10 far away; the object pose T_cam_obj."""
    rng = np.random.default_rng(seed)
    hx, hy, hz = (e / 2 for e in EXTENTS)
    offsets = rng.uniform(-0.001, 0.004, 30)  # outside up to 4 mm, inside up to 1 mm
    on_face = np.c_[hx + offsets, rng.uniform(-hy * 0.8, hy * 0.8, 30),
                    rng.uniform(-hz * 0.8, hz * 0.8, 30)]
    far = rng.normal(size=(10, 3)) * 0.01 + [0.3, 0.0, 0.0]
    p_obj = torch.as_tensor(np.r_[on_face, far], dtype=F64)
    T_cam_obj = make_transform(axis_angle_to_matrix(torch.tensor([0.2, -0.1, 0.3], dtype=F64)),
                               torch.tensor([0.02, -0.01, 0.5], dtype=F64))
    p_cam = p_obj @ T_cam_obj[:3, :3].T + T_cam_obj[:3, 3]
    return p_cam, T_cam_obj, offsets


@pytest.mark.parametrize('device', DEVICES)
def test_a_rigid_motion_of_the_contacts_moves_the_object_with_it(device):
    sdf = _box_sdf(device)
    p_prev, T_cam_obj, offsets = _scene()
    dT = _motion(1)
    p_curr = p_prev @ dT[:3, :3].T + dT[:3, 3]
    p_curr[30:] = p_prev[30:]  # the far points stay: they are not contacts
    step = quasistatic_step(p_prev.float().to(device), p_curr.float().to(device), T_cam_obj,
                            sdf, contact_threshold_m=0.005, near_hand_m=0.03)
    assert step.mode == 'contact' and step.mode in QUASISTATIC_MODES
    assert step.contact_mask.cpu().tolist() == [True] * 30 + [False] * 10
    assert step.dT.dtype == F64 and step.dT.device.type == torch.device(device).type
    torch.testing.assert_close(step.dT.cpu(), dT, atol=2e-6, rtol=0)
    assert step.fit_rms_m < 1e-6
    # contact weights: 1 on or inside the surface, 1 / (1 + d / threshold) outside
    expected = 1.0 / (1.0 + np.clip(offsets, 0, None) / 0.005)
    np.testing.assert_allclose(step.weights[:30].cpu().numpy(), expected, atol=1e-5)
    assert (step.weights[30:] == 0).all()
    assert step.min_distance_m == pytest.approx(offsets.min(), abs=1e-6)


def test_the_subset_fit_equals_the_zero_weighted_fit_over_all_points():
    """The refinement used to fit all points with zero weight off contact; the one function
    fits the contact subset: the same motion."""
    sdf = _box_sdf()
    p_prev, T_cam_obj, _ = _scene(3)
    g = torch.Generator().manual_seed(4)
    dT = _motion(2)
    p_curr = p_prev @ dT[:3, :3].T + dT[:3, 3] + torch.randn(p_prev.shape, generator=g,
                                                             dtype=F64) * 3e-4  # sliding
    step = quasistatic_step(p_prev, p_curr, T_cam_obj, sdf, contact_threshold_m=0.005,
                            near_hand_m=0.03)
    full = weighted_rigid_fit(p_prev[None], p_curr[None], step.weights[None].to(F64))
    assert int(full.status[0]) == FitStatus.FULL and step.mode == 'contact'
    torch.testing.assert_close(step.dT, full.T[0], atol=1e-12, rtol=0)
    assert step.fit_rms_m == pytest.approx(float(full.rms_residual[0]), rel=1e-9)
    assert step.fit_rms_m > 1e-4  # the noise shows in the residual


def test_fallbacks_hand_root_near_the_hand_constant_far_or_without_root_poses():
    sdf = _box_sdf()
    p_prev, T_cam_obj, _ = _scene()
    base_move = _motion(5)
    T_base_prev = make_transform(torch.eye(3, dtype=F64), torch.tensor([0.0, 0.1, 0.4],
                                                                        dtype=F64))
    T_base_curr = base_move @ T_base_prev
    two = p_prev[[0, 1]]  # two contacts: no rotation from a fit
    kw = dict(contact_threshold_m=0.005, near_hand_m=0.03)
    step = quasistatic_step(two, two + 0.001, T_cam_obj, sdf, T_cam_base_prev=T_base_prev,
                            T_cam_base_curr=T_base_curr, **kw)
    assert step.mode == 'hand_root' and np.isnan(step.fit_rms_m)
    torch.testing.assert_close(step.dT, base_move, atol=1e-12, rtol=0)
    # three contacts in a line: still no rotation
    line = p_prev[:3].clone()
    line[:, 1:] = p_prev[0, 1:]
    line[:, 0] += torch.tensor([0.0, 0.001, 0.002], dtype=F64)
    assert quasistatic_step(line, line + 0.001, T_cam_obj, sdf, T_cam_base_prev=T_base_prev,
                            T_cam_base_curr=T_base_curr, **kw).mode == 'hand_root'
    # full contacts, but the fit not wanted ('hand_rigid' dynamics)
    assert quasistatic_step(p_prev, p_prev, T_cam_obj, sdf, T_cam_base_prev=T_base_prev,
                            T_cam_base_curr=T_base_curr, fit_contacts=False,
                            **kw).mode == 'hand_root'
    # without root poses, or with the object farther than near_hand_m: constant pose
    far = p_prev[30:]
    for step in (quasistatic_step(two, two + 0.001, T_cam_obj, sdf, **kw),
                 quasistatic_step(far, far + 0.001, T_cam_obj, sdf,
                                  T_cam_base_prev=T_base_prev, T_cam_base_curr=T_base_curr,
                                  **kw)):
        assert step.mode == 'constant'
        torch.testing.assert_close(step.dT, torch.eye(4, dtype=F64))


@pytest.mark.parametrize('case', ['touching', 'deep', 'apart'])
def test_the_contact_query_reads_what_a_full_query_reads(case):
    """contact_query resolves only near and inside points; the contact set, the contacts'
    distances and the smallest distance are still the full query's (here: points spread
    around a box, one 2 cm inside it (beyond the 5 mm near range), or all at least 1.5 cm away)."""
    rng = np.random.default_rng(11)
    sdf = WarpMeshSDF(*(lambda b: (b.vertices, b.faces))(trimesh.creation.box(extents=EXTENTS)),
                      max_distance=0.06)
    p_obj = rng.uniform(-0.09, 0.09, size=(800, 3))
    d_true = find_contacts(torch.as_tensor(p_obj)[None], sdf).distance[0].numpy()
    if case == 'deep':
        p_obj = np.r_[p_obj[d_true > 0.001], [[0.0, 0.0, 0.005]]]
    elif case == 'apart':
        p_obj = p_obj[d_true > 0.015]
    p_obj = torch.as_tensor(p_obj)
    T = make_transform(axis_angle_to_matrix(torch.tensor([0.2, -0.1, 0.3], dtype=F64)),
                       torch.tensor([0.02, -0.01, 0.5], dtype=F64))
    p_cam = p_obj @ T[:3, :3].T + T[:3, 3]
    got = contact_query(p_cam, T, sdf, contact_threshold_m=0.005)
    ref = find_contacts(p_obj[None], sdf, threshold=0.005)
    torch.testing.assert_close(got.mask, ref.mask)
    m = ref.mask[0]
    assert (int(m.sum()) > 10) == (case != 'apart')
    torch.testing.assert_close(got.distance[0][m], ref.distance[0][m], rtol=0, atol=1e-9)
    assert float(got.distance.min()) == pytest.approx(float(ref.distance.min()), abs=1e-9)
    if case == 'deep':
        assert float(got.distance.min()) == pytest.approx(-0.02, abs=1e-6)  # 2 cm from y faces
    else:
        assert float(got.distance.min()) > (0.01 if case == 'apart' else -1.0)


def test_bad_arguments_raise():
    sdf = _box_sdf()
    p, T, _ = _scene()
    kw = dict(contact_threshold_m=0.005, near_hand_m=0.03)
    with pytest.raises(InputError, match='points_prev_cam, points_curr_cam: expected two'):
        quasistatic_step(p, p[:5], T, sdf, **kw)
    with pytest.raises(InputError, match=r'T_cam_obj_prev: expected \(4, 4\)'):
        quasistatic_step(p, p, T[:3], sdf, **kw)
    with pytest.raises(InputError, match='expected both or neither'):
        quasistatic_step(p, p, T, sdf, T_cam_base_prev=T, **kw)
    with pytest.raises(InputError, match='contact_threshold_m: expected > 0'):
        quasistatic_step(p, p, T, sdf, contact_threshold_m=0.0, near_hand_m=0.03)


class _FixedHand:
    """Just what ``contact_report`` asks of a hand: link names and the points' links."""
    link_names = ('palm', 'finger')
    point_link_ids = torch.tensor([1] * 30 + [0] * 10)


def test_tracker_prediction_and_refinement_initialisation_are_the_same_dynamics():
    """Chaining the tracker's predict_motion equals the refinement's quasistatic_poses."""
    sdf = _box_sdf()
    p0_cam, T0, _ = _scene(7)
    p_obj = (p0_cam - T0[:3, 3]) @ T0[:3, :3]  # the same points in the object frame
    N = 6
    T_true, bases = [T0], [torch.eye(4, dtype=F64)]
    for t in range(1, N):
        T_true.append(_motion(10 + t) @ T_true[-1])
        bases.append(_motion(20 + t) @ bases[-1])
    points = []
    for t in range(N):
        q = p_obj.clone()
        if t >= 3:  # the fingers spread along the face (y, z): no contact left, object stays
            c = q[:30, 1:].mean(0)
            q[:30, 1:] = c + 20.0 * (q[:30, 1:] - c)
        T = T_true[min(t, 2)]
        points.append((q @ T[:3, :3].T + T[:3, 3]).float())
    cfg = TrackerConfig(contact_threshold_m=0.005, near_hand_m=1.0)
    frames = [HandFrame(np.zeros(0), b.numpy(), p, torch.zeros_like(p), p[:4])
              for p, b in zip(points, bases)]
    chained, modes = [T0.numpy()], []
    for t in range(1, N):
        pred = predict_motion(_FixedHand(), sdf, frames[t - 1], frames[t], chained[-1], cfg)
        chained.append(pred.dT @ chained[-1])
        modes.append(pred.mode)
        if pred.mode == 'contact':
            assert set(pred.contacts.link_names) == {'finger'}
    poses, init_modes = quasistatic_poses(torch.stack(points), torch.stack(bases), T0, sdf,
                                          contact_threshold_m=0.005, near_hand_m=1.0)
    assert init_modes == ['first'] + modes
    assert modes == ['contact'] * 3 + ['hand_root'] * 2, modes
    np.testing.assert_allclose(poses.numpy(), np.stack(chained), atol=1e-7)
    # the contact steps follow the object's true motion
    np.testing.assert_allclose(poses[:3].numpy(), torch.stack(T_true[:3]).numpy(), atol=1e-5)
