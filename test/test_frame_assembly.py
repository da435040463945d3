"""Frame assembly (pure Python): joint-state interpolation and rejection, stamp matching of
image / camera_info / mask, TF at the image stamp, what replay and live modes wait for."""
import ast
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.geometry.transform_buffer import StampedTransform, TransformBuffer
from handypriors_ros.core.models.joint_names import allegro_joint_names, ros1_to_ros2_name_map
from handypriors_ros.core.frames import (AssemblyConfig, FrameAssembler, JointStateBuffer,
                                         NonFiniteJointsError, TimeWentBackwardsError)

NAMES = allegro_joint_names()
MS = 1_000_000
T0 = 1_700_000_000_000_000_000
CAM, WORLD, BASE = 'camera_color_optical_frame', 'world', 'ah_base_link'


def test_module_is_ros_free():
    """The frame pipeline imports neither rclpy nor message packages (checked on its sources:
    other tests in the same process may have imported rclpy already)."""
    import handypriors_ros.core.frames as package
    tree = ast.Module(body=[], type_ignores=[])
    for path in Path(package.__file__).parent.glob('*.py'):
        tree.body.extend(ast.parse(path.read_text()).body)
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    ros = [m for m in imported if m and (m.split('.')[0] in ('rclpy', 'rosbags')
                                         or m.split('.')[0].endswith('_msgs'))]
    assert ros == []


# ---------------------------------------------------------------------------------------------
# Joint states
# ---------------------------------------------------------------------------------------------
def test_interpolation_is_linear_between_neighbours():
    buf = JointStateBuffer(NAMES)
    buf.add(T0, NAMES, np.zeros(16))
    buf.add(T0 + 10 * MS, NAMES, np.arange(16.0))
    buf.add(T0 + 20 * MS, NAMES, np.arange(16.0) * 3)
    at = buf.lookup(T0 + 2_500_000)
    np.testing.assert_allclose(at.q, 0.25 * np.arange(16.0))
    assert at.interpolated and at.age_s == 0.0
    np.testing.assert_allclose(buf.lookup(T0 + 15 * MS).q, 2.0 * np.arange(16.0))
    np.testing.assert_allclose(buf.lookup(T0 + 10 * MS).q, np.arange(16.0))  # on a sample
    assert buf.covers(T0 + 20 * MS) and not buf.covers(T0 + 20 * MS + 1)


def test_newest_sample_held_after_it_with_its_age():
    buf = JointStateBuffer(NAMES)
    buf.add(T0, NAMES, np.ones(16))
    held = buf.lookup(T0 + 30 * MS)
    assert not held.interpolated and held.age_s == pytest.approx(0.03)
    np.testing.assert_array_equal(held.q, np.ones(16))


def test_lookup_before_first_or_without_samples_raises():
    buf = JointStateBuffer(NAMES)
    with pytest.raises(InputError, match='no joint state received yet'):
        buf.lookup(T0)
    buf.add(T0, NAMES, np.zeros(16))
    with pytest.raises(InputError, match='before the oldest joint state'):
        buf.lookup(T0 - 1)


def test_names_reordered_and_mapped():
    buf = JointStateBuffer(NAMES, name_map=ros1_to_ros2_name_map())
    ros1 = list(ros1_to_ros2_name_map())  # joint_0.0 (index base) .. joint_15.0 (thumb tip)
    values = np.arange(16.0)
    buf.add(T0, ros1[::-1], values[::-1])
    q = buf.lookup(T0).q
    mapping = ros1_to_ros2_name_map()
    for name, value in zip(ros1, values):
        assert q[NAMES.index(mapping[name])] == value


def test_nan_joint_rejected_and_named():
    buf = JointStateBuffer(NAMES)
    positions = np.zeros(16)
    positions[5] = np.nan
    with pytest.raises(NonFiniteJointsError, match='ah_joint11=nan'):
        buf.add(T0, NAMES, positions)
    assert len(buf) == 0


def test_nan_on_a_joint_the_model_does_not_use_is_fine():
    buf = JointStateBuffer(NAMES)
    assert buf.add(T0, list(NAMES) + ['arm_joint_1'], list(np.zeros(16)) + [float('nan')])
    np.testing.assert_array_equal(buf.lookup(T0).q, np.zeros(16))


def test_missing_joint_is_a_structural_error_even_with_nan():
    buf = JointStateBuffer(NAMES)
    with pytest.raises(InputError, match='missing joints ah_joint33') as info:
        buf.add(T0, NAMES[:15], [float('nan')] + [0.0] * 14)
    assert not isinstance(info.value, NonFiniteJointsError)


def test_joint_time_going_backwards_rejected_and_repeat_ignored():
    buf = JointStateBuffer(NAMES)
    buf.add(T0 + 10 * MS, NAMES, np.zeros(16))
    assert buf.add(T0 + 10 * MS, NAMES, np.ones(16)) is False
    with pytest.raises(TimeWentBackwardsError, match='time went backwards'):
        buf.add(T0 + 5 * MS, NAMES, np.zeros(16))
    np.testing.assert_array_equal(buf.lookup(T0 + 10 * MS).q, np.zeros(16))


def test_old_samples_pruned_after_the_cache_time():
    buf = JointStateBuffer(NAMES, cache_time_s=0.05)
    for i in range(20):
        buf.add(T0 + i * 10 * MS, NAMES, np.full(16, float(i)))
    assert len(buf) == 6  # newest and 5 within 50 ms before it
    with pytest.raises(InputError, match='before the oldest'):
        buf.lookup(T0)


# ---------------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------------
def _T_world_base(ns: int) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec([0, 0, (ns - T0) / 1e9]).as_matrix()
    T[:3, 3] = [0.1 + (ns - T0) / 1e9, 0.0, 0.3]
    return T


T_WORLD_CAM = np.eye(4)
T_WORLD_CAM[:3, 3] = [0.0, -0.5, 0.3]


def _world(tf_until_ms: float = 200.0, joints_until_ms: float = 200.0, **config):
    """Buffers with TF (camera static, hand root at 100 Hz) and joints (100 Hz) from 50 ms
    before T0 up to the given times, and an assembler."""
    tf = TransformBuffer()
    tf.set_transform(StampedTransform.from_matrix(WORLD, CAM, 0, T_WORLD_CAM), is_static=True)
    joints = JointStateBuffer(NAMES)
    for ms in np.arange(-50.0, tf_until_ms + 1e-9, 10.0):
        ns = T0 + int(ms * MS)
        tf.set_transform(StampedTransform.from_matrix(WORLD, BASE, ns, _T_world_base(ns)),
                         is_static=False)
    for ms in np.arange(-45.0, joints_until_ms + 1e-9, 10.0):
        ns = T0 + int(ms * MS)
        joints.add(ns, NAMES, np.full(16, (ns - T0) / 1e9))
    cfg = dict(mode='replay', hand_root_frame=BASE, use_mask=True, data_wait_ns=100 * MS,
               wall_wait_ns=500 * MS)
    cfg.update(config)
    return FrameAssembler(AssemblyConfig(**cfg), joints, tf)


def _started(asm, ms=-20.0):
    """Live: let a first usable frame leave (drops happen from then on)."""
    _add_frame(asm, ms)
    (frame,) = asm.pop_ready(now_ns=0)
    assert frame.usable
    return asm


def _add_frame(asm, ms, *, info=True, mask=True, info_offset_ns=0, arrival=0):
    ns = T0 + int(ms * MS)
    asm.add_image(ns, CAM, f'image{ms}', arrival)
    if info:
        asm.add_camera_info(ns + info_offset_ns, f'info{ms}')
    if mask:
        asm.add_mask(ns, f'mask{ms}')
    return ns


def test_complete_frame_released_with_joints_and_tf_at_its_stamp():
    asm = _world()
    ns = _add_frame(asm, 33.0)
    (frame,) = asm.pop_ready()
    assert frame.usable and frame.problems == ()
    assert (frame.image, frame.camera_info, frame.mask) == ('image33.0', 'info33.0', 'mask33.0')
    np.testing.assert_allclose(frame.joints.q, np.full(16, 0.033), atol=1e-12)
    assert frame.joints.interpolated
    T_cam_base = np.linalg.inv(T_WORLD_CAM) @ _T_world_base(ns)
    np.testing.assert_allclose(frame.T_cam_base, T_cam_base, atol=1e-4)  # slerp vs exact
    assert asm.pending_count == 0


def test_camera_info_matched_within_the_tolerance_only():
    asm = _world(stamp_tolerance_ns=MS)
    _add_frame(asm, 10.0, info_offset_ns=600_000)
    (frame,) = asm.pop_ready()
    assert frame.camera_info == 'info10.0'
    ns = _add_frame(asm, 20.0, info=False)
    assert asm.pop_ready() == []  # waiting for its camera_info
    asm.add_camera_info(ns + 2 * MS, 'off by 2 ms')  # in stamp order: ns's will not come
    (frame,) = asm.pop_ready()
    # The latest camera_info stands in (intrinsics rarely change), reported.
    assert frame.usable and frame.camera_info == 'off by 2 ms'
    assert [p.kind for p in frame.problems] == ['reused_camera_info']


def test_no_camera_info_at_all_is_fatal():
    asm = _world()
    _add_frame(asm, 10.0, info=False)
    (frame,) = asm.pop_ready(flush=True)
    assert not frame.usable and [p.kind for p in frame.problems] == ['no_camera_info']


def test_replay_waits_for_a_missing_mask_until_data_time_passes():
    asm = _world(tf_until_ms=400.0, joints_until_ms=400.0)
    asm.advance_data_time(T0)
    ns = _add_frame(asm, 0.0, mask=False)
    assert asm.pop_ready() == []
    asm.advance_data_time(ns + 99 * MS)
    assert asm.pop_ready() == []
    asm.advance_data_time(ns + 100 * MS)
    (frame,) = asm.pop_ready()
    assert frame.usable and frame.mask is None
    assert [p.kind for p in frame.problems] == ['missing_mask']


def test_replay_stops_waiting_for_a_mask_when_a_newer_mask_arrives():
    asm = _world()
    ns = _add_frame(asm, 0.0, mask=False)
    assert asm.pop_ready() == []
    asm.add_mask(ns + 33 * MS, 'next mask')
    (frame,) = asm.pop_ready()
    assert frame.usable and frame.mask is None


def test_replay_keeps_stamp_order():
    asm = _world()
    _add_frame(asm, 0.0, mask=False)  # waits for its mask ...
    asm.add_image(T0 + 10 * MS, CAM, 'image10.0', 0)  # ... and this one, behind it, too
    asm.add_camera_info(T0 + 10 * MS, 'info10.0')
    assert asm.pop_ready() == []
    asm.add_mask(T0, 'mask0 late')
    frames = asm.pop_ready()
    assert [(f.image, f.mask) for f in frames] == [('image0.0', 'mask0 late')]
    asm.add_mask(T0 + 10 * MS, 'mask10')
    assert [f.image for f in asm.pop_ready()] == ['image10.0']
    # A frame waiting for an initial pose holds back a later one that could go.
    _add_frame(asm, 20.0)
    _add_frame(asm, 30.0)
    assert asm.pop_ready(initialised=lambda stamp: stamp >= T0 + 30 * MS) == []
    assert len(asm.pop_ready(initialised=lambda stamp: True)) == 2


def test_image_time_going_backwards_rejected():
    asm = _world()
    _add_frame(asm, 20.0)
    with pytest.raises(TimeWentBackwardsError, match='not after the previous image'):
        asm.add_image(T0 + 10 * MS, CAM, 'old', 0)
    with pytest.raises(TimeWentBackwardsError):
        asm.add_image(T0 + 20 * MS, CAM, 'same stamp', 0)
    assert [f.image for f in asm.pop_ready()] == ['image20.0']


def test_empty_frame_id_rejected():
    with pytest.raises(InputError, match='frame_id'):
        _world().add_image(T0, '', 'x', 0)


def test_missing_tf_is_fatal_after_the_wait():
    asm = _world(tf_until_ms=50.0, joints_until_ms=500.0, tf_tolerance_ns=20 * MS)
    _add_frame(asm, 65.0)  # 15 ms after the last TF: within the tolerance, but waits first
    _add_frame(asm, 100.0)  # 50 ms after: beyond the tolerance
    assert asm.pop_ready() == []  # the first waits for an exact TF
    asm.advance_data_time(T0 + 200 * MS)
    held, missing = asm.pop_ready()
    assert held.usable
    np.testing.assert_allclose(held.T_cam_base,
                               np.linalg.inv(T_WORLD_CAM) @ _T_world_base(T0 + 50 * MS),
                               atol=1e-9)
    assert not missing.usable
    (problem,) = missing.problems
    assert problem.kind == 'missing_tf' and 'extrapolation into the future' in problem.message


def test_unknown_hand_root_is_missing_tf():
    asm = _world(hand_root_frame='other_hand_base_link')
    _add_frame(asm, 10.0)
    (frame,) = asm.pop_ready(flush=True)
    assert [p.kind for p in frame.problems] == ['missing_tf']
    assert 'other_hand_base_link' in frame.problems[0].message


def test_image_shortly_before_the_first_joint_state_and_tf_holds_them():
    """A recording's first image a few ms before the first joint state and TF (INTERFACES.md
    bags from real robots): the first samples are held, reported as non-fatal problems."""
    asm = _world()  # TF from -50 ms, joints from -45 ms
    _add_frame(asm, -55.0)
    (frame,) = asm.pop_ready(flush=True)
    assert frame.usable
    assert sorted(p.kind for p in frame.problems) == ['early_joint_states', 'early_tf']
    assert not any(p.fatal for p in frame.problems)
    messages = {p.kind: p.message for p in frame.problems}
    assert '10.0 ms before the first joint state' in messages['early_joint_states']
    assert '5.0 ms before the first transform' in messages['early_tf']
    np.testing.assert_allclose(frame.joints.q, asm.joints.lookup(T0 - 45 * MS).q)
    # The first TF sample itself (the bisection finds its stamp exactly).
    np.testing.assert_allclose(frame.T_cam_base,
                               np.linalg.inv(T_WORLD_CAM) @ _T_world_base(T0 - 50 * MS),
                               atol=1e-12)


@pytest.mark.parametrize('image_ms, tolerance_ms, fatal', [
    (-80.0, 20, ['missing_tf', 'no_joint_states']),  # 35 / 30 ms early: beyond 20 ms
    (-55.0, 0, ['missing_tf', 'no_joint_states']),  # no tolerance: as before
    (-60.0, 12, ['no_joint_states']),  # TF 10 ms early (held), joints 15 ms (not)
])
def test_image_earlier_than_the_past_tolerance_is_skipped(image_ms, tolerance_ms, fatal):
    asm = _world(past_tolerance_ns=tolerance_ms * MS)
    _add_frame(asm, image_ms)
    (frame,) = asm.pop_ready(flush=True)
    assert not frame.usable
    assert sorted(p.kind for p in frame.problems if p.fatal) == fatal
    if 'missing_tf' in fatal:
        (tf_problem,) = [p for p in frame.problems if p.kind == 'missing_tf']
        assert 'extrapolation into the past' in tf_problem.message


def test_joint_stream_that_stops_holds_the_hand_with_a_warning():
    asm = _world(tf_until_ms=1000.0, joints_until_ms=60.0, max_joint_age_ns=100 * MS)
    _add_frame(asm, 100.0)  # newest joints 45 ms before: normal hold
    _add_frame(asm, 300.0)  # 245 ms before: stale
    asm.advance_data_time(T0 + 900 * MS)
    recent, stale = asm.pop_ready()
    assert recent.usable and recent.problems == ()
    assert not recent.joints.interpolated and recent.joints.age_s == pytest.approx(0.045)
    assert stale.usable
    assert [p.kind for p in stale.problems] == ['stale_joint_states']
    np.testing.assert_allclose(stale.joints.q, recent.joints.q)


def test_no_joint_states_is_fatal():
    asm = _world()
    asm.joints.clear()
    _add_frame(asm, 10.0)
    (frame,) = asm.pop_ready(flush=True)
    assert [p.kind for p in frame.problems] == ['no_joint_states']


def test_replay_waits_for_an_initial_pose():
    asm = _world()
    _add_frame(asm, 10.0)
    assert asm.pop_ready(initialised=lambda stamp: False) == []
    (frame,) = asm.pop_ready(initialised=lambda stamp: stamp >= T0)
    assert frame.usable
    _add_frame(asm, 20.0)
    (frame,) = asm.pop_ready(flush=True, initialised=lambda stamp: False)
    assert [p.kind for p in frame.problems] == ['no_initial_pose']


def test_wall_clock_expiry_releases_a_frame_whose_inputs_never_come():
    asm = _world(wall_wait_ns=500 * MS)
    _add_frame(asm, 10.0, mask=False, arrival=1_000 * MS)
    assert asm.pop_ready() == []  # data-driven: still waiting
    assert asm.pop_ready(now_ns=1_400 * MS) == []
    (frame,) = asm.pop_ready(now_ns=1_500 * MS)
    assert frame.usable and frame.mask is None


def test_too_many_pending_frames_evicts_the_oldest():
    asm = _world(max_pending=2)
    for ms in (0.0, 10.0, 20.0):
        _add_frame(asm, ms, info=False)
    frames = asm.pop_ready(flush=True)
    assert [(f.image, f.problems[0].kind) for f in frames] == [
        ('image0.0', 'evicted'), ('image10.0', 'no_camera_info'),
        ('image20.0', 'no_camera_info')]


def test_clear_forgets_pending_frames_and_time():
    asm = _world()
    _add_frame(asm, 20.0, mask=False)
    asm.clear()
    assert asm.pending_count == 0 and asm.data_time_ns is None
    _add_frame(asm, 10.0)  # earlier than before the clear: accepted
    assert [f.image for f in asm.pop_ready()] == ['image10.0']


# ---------------------------------------------------------------------------------------------
# Live mode
# ---------------------------------------------------------------------------------------------
def test_live_keeps_the_newest_frame_and_reports_drops():
    asm = _started(_world(mode='live', wall_wait_ns=10 * MS))
    _add_frame(asm, 0.0)
    _add_frame(asm, 33.0, info=False)  # never gets its camera_info
    _add_frame(asm, 66.0)
    _add_frame(asm, 100.0, arrival=0)
    frames = asm.pop_ready(now_ns=0)
    assert [(f.image, [p.kind for p in f.problems]) for f in frames] == [
        ('image0.0', ['dropped']), ('image33.0', ['dropped']), ('image66.0', ['dropped']),
        ('image100.0', [])]
    # Its camera_info not there (DDS can repair a lost one 13-150 ms late): the latest one
    # stands in at once, intrinsics do not change within a stream.
    _add_frame(asm, 133.0, info=False, arrival=0)
    (late,) = asm.pop_ready(now_ns=0)
    assert late.usable and late.camera_info == 'info100.0'
    assert [p.kind for p in late.problems] == ['reused_camera_info']


def test_live_before_any_camera_info_keeps_only_frames_that_have_one():
    """Before the camera_info stream's first message a frame waits up to 0.5 s (not only
    the wall wait) for it, then goes without (fatal)."""
    asm = _world(mode='live', wall_wait_ns=10 * MS)
    _add_frame(asm, 0.0, info=False, arrival=0)
    assert asm.pop_ready(now_ns=5 * MS) == []
    assert asm.pop_ready(now_ns=10 * MS) == []  # the stream's first camera_info may be late
    (frame,) = asm.pop_ready(now_ns=500 * MS)
    assert [p.kind for p in frame.problems] == ['no_camera_info']
    # A late first camera_info: the oldest frame that waited for it leaves first, alone
    # (nothing is dropped before the first usable frame has left: the initial pose applies to
    # it); the others then go the live way (the newest kept, the older dropped).
    asm = _world(mode='live', wall_wait_ns=10 * MS)
    for ms in (0.0, 33.0, 66.0):
        _add_frame(asm, ms, info=False, arrival=0)
    assert asm.pop_ready(now_ns=100 * MS) == []
    asm.add_camera_info(T0 + int(66.0 * MS), 'info66.0')
    (first,) = asm.pop_ready(now_ns=101 * MS)
    assert first.image == 'image0.0' and first.usable
    assert [p.kind for p in first.problems] == ['reused_camera_info']
    dropped, newest = asm.pop_ready(now_ns=102 * MS)
    assert (dropped.image, [p.kind for p in dropped.problems]) == ('image33.0', ['dropped'])
    assert newest.image == 'image66.0' and newest.usable


def test_live_does_not_wait_for_a_mask_nor_an_initial_pose():
    asm = _world(mode='live', wall_wait_ns=10 * MS)
    _add_frame(asm, 50.0, mask=False)
    (frame,) = asm.pop_ready(now_ns=0, initialised=lambda stamp: True)
    assert frame.usable and frame.mask is None
    _add_frame(asm, 60.0)
    (frame,) = asm.pop_ready(now_ns=0, initialised=lambda stamp: False)
    assert [p.kind for p in frame.problems] == ['no_initial_pose']


def test_live_waits_for_a_mask_only_when_told_to():
    asm = _world(mode='live', wall_wait_ns=10 * MS, live_mask_wait_ns=40 * MS)
    ns = _add_frame(asm, 50.0, mask=False, arrival=0)
    assert asm.pop_ready(now_ns=20 * MS) == []  # joints and TF are there; the mask is not
    asm.add_mask(ns, 'late mask')
    (frame,) = asm.pop_ready(now_ns=25 * MS)
    assert frame.mask == 'late mask' and frame.problems == ()
    _add_frame(asm, 60.0, mask=False, arrival=100 * MS)
    (frame,) = asm.pop_ready(now_ns=140 * MS)  # waited 40 ms: goes without
    assert frame.usable and [p.kind for p in frame.problems] == ['missing_mask']


def test_live_waits_briefly_for_joints_after_the_stamp():
    asm = _world(mode='live', wall_wait_ns=10 * MS, joints_until_ms=100.0)
    ns = _add_frame(asm, 110.0, arrival=0)  # newest joints 5 ms before
    assert asm.pop_ready(now_ns=5 * MS) == []
    asm.joints.add(ns + 5 * MS, NAMES, np.full(16, 0.115))
    (frame,) = asm.pop_ready(now_ns=6 * MS)
    assert frame.joints.interpolated
    np.testing.assert_allclose(frame.joints.q, np.full(16, 0.110), atol=1e-12)
    ns = _add_frame(asm, 140.0, arrival=10 * MS)
    (frame,) = asm.pop_ready(now_ns=20 * MS)  # waited 10 ms: the newest is held
    assert frame.usable and not frame.joints.interpolated


def test_live_holds_recent_joints_and_tf_at_once():
    """live_hold_ns: a frame whose newest joint state and hand TF are at most that old leaves
    at once with them held; one whose samples are older waits for newer ones as before."""
    asm = _world(mode='live', wall_wait_ns=50 * MS, joints_until_ms=105.0, tf_until_ms=100.0,
                 live_hold_ns=20 * MS)
    ns = _add_frame(asm, 110.0, arrival=0)  # joints 5 ms, TF 10 ms before its stamp
    (frame,) = asm.pop_ready(now_ns=0)
    assert frame.usable and frame.problems == ()
    assert not frame.joints.interpolated and frame.joints.age_s == pytest.approx(0.005)
    np.testing.assert_allclose(frame.joints.q, np.full(16, 0.105), atol=1e-12)
    T_cam_base = np.linalg.inv(T_WORLD_CAM) @ _T_world_base(ns - 10 * MS)  # the newest, held
    np.testing.assert_allclose(frame.T_cam_base, T_cam_base, atol=1e-9)
    _add_frame(asm, 123.0, arrival=10 * MS)  # joints 18 ms, TF 23 ms before: waits for TF
    assert asm.pop_ready(now_ns=10 * MS) == []
    asm.tf.set_transform(StampedTransform.from_matrix(WORLD, BASE, T0 + 110 * MS,
                                                      _T_world_base(T0 + 110 * MS)),
                         is_static=False)
    (frame,) = asm.pop_ready(now_ns=11 * MS)  # TF now 13 ms before: held
    assert frame.usable and not frame.joints.interpolated
    _add_frame(asm, 140.0, arrival=20 * MS)  # joints 35 ms before: waits up to wall_wait_ns
    assert asm.pop_ready(now_ns=69 * MS) == []
    (frame,) = asm.pop_ready(now_ns=70 * MS)
    assert frame.usable


def test_replay_never_holds_instead_of_waiting():
    asm = _world(joints_until_ms=105.0, live_hold_ns=20 * MS)
    _add_frame(asm, 110.0)
    assert asm.pop_ready() == []  # data time 110 ms: the joint state after 110 may come


def test_config_validation():
    with pytest.raises(InputError, match="mode: expected one of"):
        AssemblyConfig(mode='fast')
    with pytest.raises(InputError, match='data_wait_ns'):
        AssemblyConfig(data_wait_ns=-1)
    with pytest.raises(InputError, match='max_pending'):
        AssemblyConfig(max_pending=0)
    with pytest.raises(InputError, match=r'past_tolerance_ns: expected an integer >= 0 \[ns\]'):
        AssemblyConfig(past_tolerance_ns=-1)


def test_live_newer_frames_cannot_starve_the_tracker():
    """Joint states lag the images: each new frame replaces the waiting one, but the newest
    waits only as long as the first would have, then goes with the held joints."""
    asm = _started(_world(mode='live', wall_wait_ns=10 * MS, joints_until_ms=100.0))
    _add_frame(asm, 110.0, arrival=0)  # newest joints 5 ms before: waits
    assert asm.pop_ready(now_ns=4 * MS) == []
    _add_frame(asm, 143.0, arrival=8 * MS)
    dropped, = asm.pop_ready(now_ns=9 * MS)
    assert [p.kind for p in dropped.problems] == ['dropped']
    (frame,) = asm.pop_ready(now_ns=10 * MS)  # 10 ms after the first arrival, 2 after its own
    assert frame.image == 'image143.0' and frame.usable
    assert frame.arrival_ns == 8 * MS  # its own arrival, for latency figures
    assert not frame.joints.interpolated


def test_live_waits_count_from_when_the_caller_became_idle():
    """Messages queued while the caller tracked a frame arrive one per executor round after it:
    a frame that arrived during that time still waits for them."""
    asm = _world(mode='live', wall_wait_ns=10 * MS, joints_until_ms=100.0)
    _add_frame(asm, 110.0, arrival=0)
    asm.note_idle(50 * MS)  # busy until 50 ms
    assert asm.pop_ready(now_ns=55 * MS) == []  # would have expired at 10 ms otherwise
    (frame,) = asm.pop_ready(now_ns=60 * MS)
    assert frame.usable


def test_live_does_not_drop_a_ready_frame_for_a_newer_one_that_waits():
    """A newer image whose mask is still on its way does not replace a frame that can be
    tracked now; once the older one has left, the newer one waits for its mask as usual."""
    asm = _world(mode='live', wall_wait_ns=10 * MS, live_mask_wait_ns=20 * MS)
    _add_frame(asm, 50.0, arrival=0)  # complete
    ns = _add_frame(asm, 83.0, mask=False, arrival=1 * MS)  # its mask comes later
    (frame,) = asm.pop_ready(now_ns=2 * MS)
    assert frame.image == 'image50.0' and frame.problems == ()
    assert asm.pop_ready(now_ns=3 * MS) == []  # the newer one waits for its mask
    asm.add_mask(ns, 'mask83')
    (frame,) = asm.pop_ready(now_ns=4 * MS)
    assert frame.image == 'image83.0' and frame.mask == 'mask83' and frame.problems == ()


def test_live_drops_an_older_frame_for_a_newer_one_that_is_ready_too():
    asm = _started(_world(mode='live', wall_wait_ns=10 * MS, live_mask_wait_ns=20 * MS))
    _add_frame(asm, 50.0, arrival=0)
    _add_frame(asm, 83.0, arrival=1 * MS)
    dropped, frame = asm.pop_ready(now_ns=2 * MS)
    assert [p.kind for p in dropped.problems] == ['dropped'] and dropped.image == 'image50.0'
    assert frame.image == 'image83.0' and frame.usable


def test_live_learns_how_long_to_wait_for_masks():
    """live_mask_wait_ns = MASK_WAIT_AUTO: no wait before a mask's delay is known; then the
    90th percentile of the masks' delays after their images + 5 ms; none once masks stop."""
    from handypriors_ros.core.frames.assembler import MASK_WAIT_AUTO

    asm = _world(mode='live', wall_wait_ns=10 * MS, live_mask_wait_ns=MASK_WAIT_AUTO)
    assert asm.mask_wait_ns(0) == 0
    ns = _add_frame(asm, 0.0, mask=False, arrival=0)
    (frame,) = asm.pop_ready(now_ns=1 * MS)  # nothing learned yet: goes without its mask
    assert frame.mask is None and [p.kind for p in frame.problems] == ['missing_mask']
    asm.add_mask(ns, 'late', arrival_ns=12 * MS)  # too late for its frame, but timed
    assert asm.mask_wait_ns(13 * MS) == 17 * MS
    # Masks 8..12 ms after their images (and one before it: a delay of 0).
    arrivals = [(33.0, 8), (66.0, 10), (100.0, 12), (133.0, -2)]
    for ms, delay in arrivals:
        t = int(ms * MS)
        ns = _add_frame(asm, ms, mask=False, arrival=t)
        asm.add_mask(ns, f'mask{ms}', arrival_ns=t + delay * MS)
        asm.pop_ready(now_ns=t + max(delay, 0) * MS)
    delays = np.array([12, 8, 10, 12, 0]) * MS
    assert asm.mask_wait_ns(140 * MS) == int(np.percentile(delays, 90)) + 5 * MS
    wait = asm.mask_wait_ns(140 * MS)
    ns = _add_frame(asm, 166.0, mask=False, arrival=166 * MS)
    assert asm.pop_ready(now_ns=166 * MS + wait - 1) == []  # waits for its mask
    asm.add_mask(ns, 'mask166', arrival_ns=166 * MS + wait - 1)
    (frame,) = asm.pop_ready(now_ns=166 * MS + wait - 1)
    assert frame.mask == 'mask166'
    # The segmenter stops: after 1 s without a mask, frames no longer wait.
    late = 166 * MS + wait + 1_100 * MS
    asm.joints.add(T0 + 2_000 * MS, NAMES, np.full(16, 2.0))
    assert asm.mask_wait_ns(late) == 0


def test_auto_mask_wait_is_the_only_negative_value_accepted():
    from handypriors_ros.core.frames.assembler import MASK_WAIT_AUTO

    AssemblyConfig(mode='live', live_mask_wait_ns=MASK_WAIT_AUTO)
    with pytest.raises(InputError, match='live_mask_wait_ns'):
        AssemblyConfig(mode='live', live_mask_wait_ns=-2)


def test_live_releases_a_frame_before_its_mask_when_told_to():
    """release_before_mask: a frame that waits for its mask only leaves at once with the time
    until which its mask may still come; the caller takes the mask from the store later."""
    asm = _world(mode='live', wall_wait_ns=10 * MS, live_mask_wait_ns=20 * MS,
                 release_before_mask=True)
    ns = _add_frame(asm, 50.0, mask=False, arrival=3 * MS)
    (frame,) = asm.pop_ready(now_ns=4 * MS)
    assert frame.usable and frame.mask is None and frame.problems == ()
    assert frame.mask_deadline_ns == 23 * MS
    assert asm.take_mask(ns) is None
    asm.add_mask(ns + 100, 'mask50')  # within the stamp tolerance
    assert asm.take_mask(ns) == 'mask50' and asm.take_mask(ns) is None
    # A frame that has its mask, or waits for nothing (mask wait 0), has no deadline.
    _add_frame(asm, 83.0, arrival=5 * MS)
    (frame,) = asm.pop_ready(now_ns=6 * MS)
    assert frame.mask == 'mask83.0' and frame.mask_deadline_ns is None
    # Released late (the caller was busy until 40 ms): the deadline still counts from the
    # image's arrival (its mask comes in another thread meanwhile), not from the idle time.
    asm.note_idle(40 * MS)
    _add_frame(asm, 99.0, mask=False, arrival=9 * MS)
    (frame,) = asm.pop_ready(now_ns=40 * MS)
    assert frame.mask_deadline_ns == 29 * MS
    asm.config = AssemblyConfig(**{**asm.config.__dict__, 'live_mask_wait_ns': 0})
    _add_frame(asm, 116.0, mask=False, arrival=7 * MS)
    (frame,) = asm.pop_ready(now_ns=8 * MS)
    assert frame.mask_deadline_ns is None
    assert [p.kind for p in frame.problems] == ['missing_mask']
