"""Physics prior losses (eqs. 3-5): values on constructed motions, gradients, bad inputs."""

import pytest
import torch
from scipy.spatial.transform import Rotation

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.geometry.se3 import make_transform, transform_points
from handypriors_ros.core.physics.losses import (
    acceleration_loss,
    penetration_loss,
    sliding_loss,
    smoothness_loss,
)


def _random_transforms(n: int, seed: int) -> torch.Tensor:
    R = torch.tensor(Rotation.random(n, random_state=seed).as_matrix())
    t = torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return make_transform(R, 0.1 * t)


def test_penetration_loss_values():
    d = torch.tensor([[0.01, -0.002, 0.0, -0.003], [0.1, 0.2, 0.3, 0.4]], requires_grad=True)
    loss = penetration_loss(d)
    torch.testing.assert_close(loss, torch.tensor([0.002 ** 2 + 0.003 ** 2, 0.0]))
    loss.sum().backward()
    torch.testing.assert_close(d.grad, torch.tensor([[0.0, -0.004, 0.0, -0.006], [0.0] * 4]))


def test_sliding_loss_zero_for_rigid_motion_positive_otherwise():
    B, P = 3, 20
    T_prev = _random_transforms(B, 1)
    T_curr = _random_transforms(B, 2)
    gen = torch.Generator().manual_seed(0)
    hand_obj = 0.05 * torch.randn(B, P, 3, dtype=torch.float64, generator=gen)
    prev_cam = transform_points(T_prev, hand_obj)
    curr_cam = transform_points(T_curr, hand_obj)  # the hand points move with the object
    mask = torch.rand(B, P, generator=gen) > 0.5
    torch.testing.assert_close(sliding_loss(prev_cam, curr_cam, T_prev, T_curr, mask),
                               torch.zeros(B, dtype=torch.float64), atol=1e-14, rtol=0)
    # Slide one contact point by 3 mm and one non-contact point by 1 cm.
    contact, free = int(mask[0].nonzero()[0]), int((~mask[0]).nonzero()[0])
    moved = curr_cam.clone()
    moved[0, contact, 0] += 0.003
    moved[0, free, 1] += 0.01
    loss = sliding_loss(prev_cam, moved, T_prev, T_curr, mask)
    torch.testing.assert_close(loss, torch.tensor([0.003 ** 2, 0.0, 0.0], dtype=torch.float64))
    # Float weights act like the mask.
    torch.testing.assert_close(sliding_loss(prev_cam, moved, T_prev, T_curr, mask.double()),
                               loss)


def test_sliding_loss_gradient():
    B, P = 2, 5
    args = [transform_points(_random_transforms(B, 3), torch.rand(B, P, 3, dtype=torch.float64)),
            torch.rand(B, P, 3, dtype=torch.float64), _random_transforms(B, 4),
            _random_transforms(B, 5)]
    mask = torch.ones(B, P, dtype=torch.bool)
    args = [a.requires_grad_(True) for a in args]
    assert torch.autograd.gradcheck(lambda a, b, c, d: sliding_loss(a, b, c, d, mask), args)


def test_smoothness_loss():
    T_seq = 4
    V = torch.rand(30, 3, dtype=torch.float64)
    still = _random_transforms(1, 6).expand(T_seq, 4, 4)
    torch.testing.assert_close(smoothness_loss(still, V), torch.zeros(T_seq - 1,
                                                                       dtype=torch.float64))
    step = torch.tensor([0.001, -0.002, 0.0005], dtype=torch.float64)
    moving = still.clone()
    moving[:, :3, 3] += torch.arange(T_seq, dtype=torch.float64)[:, None] * step
    expected = torch.full((T_seq - 1,), 30 * float(step.square().sum()), dtype=torch.float64)
    torch.testing.assert_close(smoothness_loss(moving, V), expected)
    q = torch.zeros(T_seq, 16, dtype=torch.float64)
    q[2, 5] = 0.1
    with_hand = smoothness_loss(moving, V, q)
    torch.testing.assert_close(with_hand, expected + torch.tensor([0.0, 0.01, 0.01],
                                                                  dtype=torch.float64))
    assert smoothness_loss(moving[:1], V).shape == (0,)
    T_req = moving.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda T: smoothness_loss(T, V[:4]), (T_req,))


def test_acceleration_loss_zero_at_constant_velocity():
    T_seq = 6
    V = torch.rand(25, 3, dtype=torch.float64)
    base = _random_transforms(1, 8).expand(T_seq, 4, 4).clone()
    k = torch.arange(T_seq, dtype=torch.float64)[:, None]
    velocity = torch.tensor([0.01, 0.02, -0.005], dtype=torch.float64)
    constant_velocity = base.clone()
    constant_velocity[:, :3, 3] += k * velocity
    torch.testing.assert_close(acceleration_loss(constant_velocity, V),
                               torch.zeros(T_seq - 2, dtype=torch.float64), atol=1e-14, rtol=0)
    accel = torch.tensor([0.002, 0.0, 0.001], dtype=torch.float64)
    accelerating = base.clone()
    accelerating[:, :3, 3] += 0.5 * k ** 2 * accel
    torch.testing.assert_close(acceleration_loss(accelerating, V),
                               torch.full((T_seq - 2,), 25 * float(accel.square().sum()),
                                          dtype=torch.float64))
    assert acceleration_loss(base[:2], V).shape == (0,)


def test_losses_reject_bad_inputs():
    T = _random_transforms(2, 9)
    pts = torch.zeros(2, 4, 3, dtype=torch.float64)
    with pytest.raises(InputError, match=r'distances: expected shape \(B, P\)'):
        penetration_loss(torch.zeros(3))
    with pytest.raises(InputError, match='hand_pts_cam: expected size 4 in dim 1'):
        sliding_loss(pts, torch.zeros(2, 5, 3, dtype=torch.float64), T, T,
                     torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(InputError, match=r'T_cam_obj: expected shape \(B, 4, 4\)'):
        sliding_loss(pts, pts, T, T[0], torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(InputError, match='contact_mask'):
        sliding_loss(pts, pts, T, T, torch.ones(4, dtype=torch.bool))
    with pytest.raises(InputError, match=r'object_points: expected shape \(N, 3\)'):
        smoothness_loss(T, torch.zeros(1, 4, 3))
    with pytest.raises(InputError, match=r'q_hand: expected shape \(2, J\)'):
        smoothness_loss(T, torch.zeros(4, 3), torch.zeros(3, 16))
