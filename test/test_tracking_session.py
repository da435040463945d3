"""The tracking session (core.tracking.session), shared by ``handypriors track`` and the tracker
node: initial poses wait for their frame (converted through TF when in another frame), frames
before any initial pose and frames the tracker rejects are counted and skipped, results are
counted by status. A stand-in tracker records what the session asks of it."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.frames import Frame, InitialPose, ProblemCounter
from handypriors_ros.core.geometry.transform_buffer import StampedTransform, TransformBuffer
from handypriors_ros.core.render.camera import PinholeCamera
from handypriors_ros.core.tracking.session import TrackingSession
from handypriors_ros.core.tracking.tracker import NotInitialisedError
from handypriors_ros.core.tracking.types import TrackResult, TrackStatus

CAM = 'camera_color_optical_frame'
MS = 1_000_000
T0 = 1_700_000_000_000_000_000


class StandIn:
    """What the session uses of ObjectTracker: ekf, initialise, step, reset."""

    def __init__(self):
        self.ekf = None
        self.initialised_with = []
        self.skipped = []  # the skip of each step

    def initialise(self, T):
        self.ekf = object()
        self.initialised_with.append(np.asarray(T).copy())

    def step(self, frame, *, skip=()):
        self.skipped.append(tuple(skip))
        if self.ekf is None:
            raise NotInitialisedError('step before initialise')
        if not np.isfinite(frame.q).all():
            raise InputError('q: expected finite joint positions')
        return TrackResult(frame.stamp_ns, self.initialised_with[-1], np.eye(6),
                           TrackStatus.TRACKING)

    def reset(self):
        if not self.initialised_with:
            raise NotInitialisedError('reset: no initial pose has been given yet')
        self.initialise(self.initialised_with[-1])


def _frame(ms, q=0.0):
    cam = PinholeCamera(fx=100.0, fy=100.0, cx=15.5, cy=11.5, width=32, height=24)
    return Frame(stamp_ns=T0 + int(ms * MS), rgb=np.zeros((24, 32, 3), np.uint8), camera=cam,
                 q=np.full(16, q), T_cam_base=np.eye(4))


def _pose(x):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec([0.0, 0.2, x]).as_matrix()
    T[:3, 3] = [x, 0.0, 0.5]
    return T


@pytest.fixture
def session():
    return TrackingSession(StandIn(), TransformBuffer(), ProblemCounter(),
                           stamp_tolerance_ns=MS)


def test_initial_pose_waits_for_the_first_frame_at_or_after_its_stamp(session):
    session.add_initial_pose(InitialPose(T0 + 40 * MS, CAM, _pose(0.1)))
    assert not session.initialised_for(T0 + 30 * MS)
    assert session.initialised_for(T0 + 39 * MS)  # within the stamp tolerance
    assert session.step(_frame(30), CAM) is None
    assert session.problems.counts == {'no_initial_pose': 1}
    result = session.step(_frame(40), CAM)
    np.testing.assert_array_equal(result.T_cam_obj, _pose(0.1))
    assert session.pending_initial_poses == 0 and session.initialised_for(T0)
    assert session.frames_tracked == 1 and session.status_counts == {'tracking': 1}
    assert session.last_result is result


def test_of_several_due_poses_the_newest_wins_and_later_ones_wait(session):
    for ms, x in ((0, 0.1), (20, 0.2), (100, 0.3)):
        session.add_initial_pose(InitialPose(T0 + ms * MS, CAM, _pose(x)))
    session.step(_frame(50), CAM)
    assert len(session.tracker.initialised_with) == 1
    np.testing.assert_array_equal(session.tracker.initialised_with[0], _pose(0.2))
    session.step(_frame(100), CAM)  # re-initialisation
    np.testing.assert_array_equal(session.tracker.initialised_with[-1], _pose(0.3))


def test_pose_in_another_frame_goes_through_tf_at_its_stamp(session):
    T_cam_world = _pose(-0.3)
    session.tf.set_transform(StampedTransform.from_matrix(CAM, 'world', 0, T_cam_world),
                             is_static=True)
    session.add_initial_pose(InitialPose(T0, '/world', _pose(0.1)))
    session.step(_frame(0), CAM)
    np.testing.assert_allclose(session.tracker.initialised_with[0], T_cam_world @ _pose(0.1),
                               atol=1e-12)


def test_pose_in_an_unknown_frame_is_reported_and_dropped(session):
    session.add_initial_pose(InitialPose(0, 'nowhere', _pose(0.1)))
    assert session.step(_frame(0), CAM) is None
    assert session.problems.counts == {'bad_initial_pose': 1, 'no_initial_pose': 1}
    assert session.pending_initial_poses == 0


def test_a_frame_the_tracker_rejects_is_skipped_and_counted(session):
    session.add_initial_pose(InitialPose(0, '', _pose(0.1)))
    assert session.step(_frame(0, q=np.nan), CAM) is None
    assert session.problems.counts == {'bad_frame': 1}
    assert session.step(_frame(10), CAM) is not None and session.frames_tracked == 1


def test_reset_needs_an_initial_pose(session):
    with pytest.raises(NotInitialisedError):
        session.reset()
    with pytest.raises(InputError, match='T_frame_obj: expected a finite'):
        InitialPose(0, '', np.full((4, 4), np.nan))
    with pytest.raises(InputError, match='pose: expected an InitialPose'):
        session.add_initial_pose(_pose(0.1))


def test_an_image_that_cannot_be_assembled_gets_a_predict_only_answer_after_initialisation():
    """predict_only answers through the tracker once it has a pose (counted by status), and
    answers nothing before (the assembler already reported that frame's problem)."""

    class WithPredict(StandIn):
        def predict_only(self, stamp_ns, reason, q=None, T_cam_base=None):
            if self.ekf is None:
                raise NotInitialisedError('no pose')
            return TrackResult(stamp_ns, self.initialised_with[-1], 2 * np.eye(6),
                               TrackStatus.TRACKING, f'predict only: {reason}')

    s = TrackingSession(WithPredict(), TransformBuffer(), ProblemCounter(),
                        stamp_tolerance_ns=MS)
    assert s.predict_only(T0, 'no joint state') is None and s.frames_predicted == 0
    s.add_initial_pose(InitialPose(T0, '', _pose(0.1)))
    s.step(_frame(0), CAM)
    r = s.predict_only(T0 + 33 * MS, 'no joint state within 20 ms')
    assert r.status_reason == 'predict only: no joint state within 20 ms'
    assert s.frames_predicted == 1 and s.frames_tracked == 1
    assert s.status_counts['tracking'] == 2 and s.last_result is r
