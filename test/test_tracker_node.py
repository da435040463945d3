"""The tracker node in this process (callbacks called directly, outputs captured through its
publish hook): parameters, live and replay frame handling, bad messages, reset, diagnostics.
Over DDS between processes: test_tracker_node_dds.py."""
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip('rclpy', reason='rclpy is not installed (./run.sh test)')
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from ros_helpers.bag_publisher import ros_type  # noqa: E402
from ros_helpers.domains import free_domain_id  # noqa: E402
from ros_helpers.bad_inputs import bad_messages, predicted_images  # noqa: E402
from ros_helpers.synthetic import ground_truth, tiny_sequence  # noqa: E402

from handypriors_ros import interfaces  # noqa: E402
from handypriors_ros.bag import BagReader  # noqa: E402
from handypriors_ros.core import metrics  # noqa: E402
from handypriors_ros.core.errors import InputError, ModelError  # noqa: E402
from handypriors_ros.core.models.object_model import ObjectModel  # noqa: E402
from handypriors_ros.core.tracking.config import TrackerConfig  # noqa: E402
from handypriors_ros.jobs import track as track_job  # noqa: E402
from handypriors_ros.ros.conversions import (pose_to_matrix, pose_stamped_to_matrix,  # noqa: E402
                                             stamp_to_ns)
from handypriors_ros.ros.tracker_node import TrackerNode, main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def sequence(tmp_path_factory):
    return tiny_sequence(tmp_path_factory)


@pytest.fixture(scope='module')
def messages(sequence):
    """The bag's messages as rclpy messages, in log-time order: [(topic, msg)]."""
    with BagReader(sequence / 'bag') as reader:
        types = {t: ros_type(mt) for t, (mt, _) in reader.topics.items()}
        return [(m.topic, deserialize_message(m.rawdata, types[m.topic]))
                for m in reader.messages()]


@pytest.fixture(scope='module')
def logged_messages(sequence):
    """[(log_time_ns, topic, msg)] in log-time order."""
    with BagReader(sequence / 'bag') as reader:
        types = {t: ros_type(mt) for t, (mt, _) in reader.topics.items()}
        return [(m.log_time_ns, m.topic, deserialize_message(m.rawdata, types[m.topic]))
                for m in reader.messages()]


@pytest.fixture
def ros_context():
    context = rclpy.context.Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


class Outputs:
    """What a node published, by topic."""

    def __init__(self):
        self.by_topic = {}

    def __call__(self, topic, msg):
        self.by_topic.setdefault(topic, []).append(msg)

    def __getitem__(self, topic):
        return self.by_topic.get(topic, [])


def _node(context, sequence, outputs=None, *, threaded=False, node_kwargs=None, **params):
    """A tracker node; live mode without its worker thread unless ``threaded`` (the tests
    call process_pending themselves). The live catch-up (live_behind_s, live_drop_s,
    live_budget_s) is off
    unless a test sets it: the tests step frames whenever they get to them, so what they track
    must not depend on how long that took."""
    params = {'live_behind_s': 0.0, 'live_drop_s': 0.0, 'live_budget_s': 0.0, **params}
    overrides = [Parameter('object_mesh', value=str(sequence / 'object.ply'))]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    return TrackerNode(context=context, parameter_overrides=overrides, publish_hook=outputs,
                       threaded=threaded, **(node_kwargs or {}))


def _feed(node, messages, *, skip=()):
    callbacks = {interfaces.IMAGE_TOPIC: node.on_image,
                 interfaces.CAMERA_INFO_TOPIC: node.on_camera_info,
                 interfaces.MASK_TOPIC: node.on_mask,
                 interfaces.JOINT_STATES_TOPIC: node.on_joint_states,
                 interfaces.TF_TOPIC: node.on_tf, interfaces.TF_STATIC_TOPIC: node.on_tf_static,
                 interfaces.INITIAL_POSE_TOPIC: node.on_initial_pose}
    for topic, msg in messages:
        if topic not in skip:
            callbacks[topic](msg)


def _step_live(node, messages, frames, *, after_feed=None):
    """Feed the messages image by image (each image with what precedes it) and process each
    at once, for the first ``frames`` images (a live node without its worker thread);
    ``after_feed(i)`` runs between the feed of image i (from 1) and its processing. Returns
    process_pending's counts."""
    at = [i for i, (t, _) in enumerate(messages) if t == interfaces.IMAGE_TOPIC]
    counts = []
    for i in range(1, frames + 1):
        _feed(node, messages[at[i - 1] if i > 1 else 0:at[i]])
        if after_feed is not None:
            after_feed(i)
        counts.append(node.process_pending(now_ns=time.monotonic_ns() + 10**9))
    return counts


def _initial_pose_param(messages):
    (msg,) = [m for t, m in messages if t == interfaces.INITIAL_POSE_TOPIC]
    T = pose_stamped_to_matrix(msg)[2]
    p, o = msg.pose.position, msg.pose.orientation
    return T, [p.x, p.y, p.z, o.x, o.y, o.z, o.w]


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------
def test_config_yaml_holds_every_default():
    text = (REPO / 'config' / 'tracker.yaml').read_text()
    assert text == track_job.tracker_yaml(), (
        'config/tracker.yaml is out of date: python -m handypriors_ros.jobs tracker > '
        'config/tracker.yaml')
    values = yaml.safe_load(text)['/**']['ros__parameters']
    options = track_job.TRACKER_NODE_SCHEMA.node_options
    assert list(values) == [o.name for o in options]
    for option in options:
        default = list(option.default) if isinstance(option.default, tuple) else option.default
        assert values[option.name] == default, option.name
    # The node's file is a valid parameters file of the track job too.
    assert track_job.TRACK_SCHEMA.read_params_file(REPO / 'config' / 'tracker.yaml')


def test_every_tracker_config_field_is_a_parameter_with_units_where_dimensional():
    options = {o.name: o for o in track_job.tracker_config_options()}
    assert set(options) == set(TrackerConfig.__dataclass_fields__)
    for name, option in options.items():
        if name.endswith(('_m', '_px', '_std')) or name.startswith('q_'):
            assert re.search(r'\[(m|px|rad)\]', option.description), name
    for option in track_job.TRACKER_NODE_SCHEMA.options:
        if option.name.endswith('_s'):
            assert '[s]' in option.description, option.name


def test_parameters_declared_with_descriptors(ros_context, sequence):
    node = _node(ros_context, sequence)
    try:
        scale = node.describe_parameter('object_scale')
        assert scale.read_only and 'metres' in scale.description
        assert scale.floating_point_range[0].from_value > 0
        for name in ('object_mesh', 'hand_urdf', 'joint_prefix', 'device', 'renderer', 'mode',
                     'object_frame', 'image_qos_reliability', 'gate_probability'):
            assert node.describe_parameter(name).read_only, name
        sigma = node.describe_parameter('contour_sigma_px')
        assert not sigma.read_only and '[px]' in sigma.description
        assert 'one of: live, replay' in node.describe_parameter('mode').description
        assert node.get_parameter('image_qos_reliability').value == 'auto'
        # No image publisher yet: auto waits for one before subscribing.
        assert node.image_reliability is None
        assert node.get_subscriptions_info_by_topic(interfaces.IMAGE_TOPIC) == []
        assert node.get_parameter('object_frame').value == interfaces.OBJECT_FRAME
        # Declared by type only (rclpy cannot type an empty list): unset means empty.
        # (an int in the descriptor; Parameter.Type is an IntEnum in Kilted, a plain Enum in
        # Jazzy: compare with its value)
        assert node.describe_parameter('initial_pose').type == \
            Parameter.Type.DOUBLE_ARRAY.value
        assert not node.has_parameter('initial_pose') or node.config.initial_pose == ()
        assert node.hand_root_frame == interfaces.HAND_ROOT_FRAME
    finally:
        node.destroy_node()


def test_run_time_parameter_changes_validated(ros_context, sequence):
    node = _node(ros_context, sequence)
    try:
        (ok,) = node.set_parameters([Parameter('contour_sigma_px', value=3.5)])
        assert ok.successful and node.tracker.config.contour_sigma_px == 3.5
        (ok,) = node.set_parameters([Parameter('measurements', value=['none'])])
        assert ok.successful and node.tracker.config.measurements == ()
        (bad,) = node.set_parameters([Parameter('measurements', value=['contour', 'sonar'])])
        assert not bad.successful and "measurements: unknown ['sonar']" in bad.reason
        (bad,) = node.set_parameters([Parameter('contour_sigma_px', value=-1.0)])
        assert not bad.successful and 'out of range' in bad.reason
        (bad,) = node.set_parameters([Parameter('initial_pose', value=[0.0, 0.1])])
        assert not bad.successful and 'initial_pose: expected [] or 7' in bad.reason
        (bad,) = node.set_parameters([Parameter('q_contact', value=[0.1, 0.1])])
        assert not bad.successful and 'q_contact: expected 6 positive' in bad.reason
        (bad,) = node.set_parameters([Parameter('mode', value='replay')])
        assert not bad.successful
        assert node.tracker.config.contour_sigma_px == 3.5  # old values kept
        assert node.get_parameter('mode').value == 'live'
    finally:
        node.destroy_node()


@pytest.mark.parametrize('params,error,match', [
    ({'mode': 'fast'}, InputError, r"mode: expected one of \['live', 'replay'\], got 'fast'"),
    ({'renderer': 'opengl'}, InputError, 'renderer: expected one of'),
    ({'device': 'tpu'}, InputError, 'device: expected one of'),
    ({'image_qos_reliability': 'fast'}, InputError, 'image_qos_reliability: expected one of'),
    ({'initial_pose': [0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0]}, InputError,
     'initial_pose: expected a non-zero quaternion'),
    ({'joint_name_map': ['joint_a']}, InputError, "joint_name_map: expected entries"),
    ({'dynamics': 'magic'}, InputError, 'dynamics: expected one of'),
    ({'object_mesh': '/nonexistent/mug.ply'}, ModelError, 'object_mesh: .*mug.ply'),
    ({'object_scale': -1.0}, rclpy.exceptions.ParameterException, 'object_scale'),
])
def test_invalid_parameters_at_start(ros_context, sequence, params, error, match):
    with pytest.raises(error, match=match):
        _node(ros_context, sequence, **params)


def test_main_with_unreadable_mesh_exits_nonzero_with_the_reason(capfd):
    code = main(['tracker_node', '--ros-args', '-p', 'object_mesh:=/nonexistent/mug.ply'])
    assert code == 1
    err = capfd.readouterr().err
    assert 'object_mesh:' in err and '/nonexistent/mug.ply' in err


def test_main_without_mesh_names_the_parameter(capfd):
    assert main(['tracker_node']) == 1
    assert "object_mesh: expected a path, got ''" in capfd.readouterr().err


# ---------------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------------
def test_live_mode_tracks_the_newest_frame_and_counts_drops(ros_context, sequence, messages):
    """Messages delivered while the node is busy: only the newest frame is tracked, the others
    are dropped and answered predict-only (once a first frame has been tracked: before it,
    none is dropped, the initial pose applies to the first)."""
    T_init, pose = _initial_pose_param(messages)
    out = Outputs()
    node = _node(ros_context, sequence, out, mode='live', initial_pose=pose,
                 publish_markers=True)

    def tracked():  # stamps of the frames stepped (not answered as '[dropped]' etc.)
        return [stamp_to_ns(m.header.stamp) for m in out[interfaces.TRACK_TOPIC]
                if not m.status_reason.startswith('predict only: [')]

    try:
        images = [m for t, m in messages if t == interfaces.IMAGE_TOPIC]
        first = stamp_to_ns(images[0].header.stamp)
        last_two = {stamp_to_ns(m.header.stamp) for m in images[-2:]}
        at = {stamp_to_ns(m.header.stamp): i for i, (t, m) in enumerate(messages)
              if t == interfaces.IMAGE_TOPIC}
        # The first frame (its messages up to the second image): tracked.
        _feed(node, messages[:at[stamp_to_ns(images[1].header.stamp)]])
        assert node.process_pending(now_ns=time.monotonic_ns() + 10**9) == 1
        assert tracked() == [first]
        # Everything up to the second-to-last image arrives; the guard condition that would
        # process it never runs here (no executor): the node has only stored the messages.
        cut = at[min(last_two)]
        _feed(node, messages[at[stamp_to_ns(images[1].header.stamp)]:cut + 1])
        assert node.process_pending(now_ns=time.monotonic_ns() + 10**9) == 1
        assert tracked() == [first, min(last_two)]
        assert node.problem_counts['dropped'] == len(images) - 3
        predicted = [m for m in out[interfaces.TRACK_TOPIC]
                     if m.status_reason.startswith('predict only: [dropped]')]
        assert len(predicted) == len(images) - 3
        # The last frame then comes on its own and is tracked too.
        _feed(node, messages[cut + 1:])
        node.process_pending(now_ns=time.monotonic_ns() + 10**9)
        assert tracked() == [first, *sorted(last_two)]
        markers = out[interfaces.MARKERS_TOPIC]
        assert len(markers) == 3
        kinds = [(m.ns, m.id, m.type) for m in markers[0].markers]
        assert (kinds[0][1], kinds[0][2]) == (0, 11)  # object mesh, TRIANGLE_LIST
        assert markers[0].markers[0].header.frame_id == interfaces.OBJECT_FRAME
        assert len(markers[0].markers[-1].points) == 4  # fingertips
    finally:
        node.destroy_node()


def test_replay_bad_messages_are_counted_and_every_good_frame_tracked(ros_context, sequence,
                                                                      logged_messages):
    out = Outputs()
    node = _node(ros_context, sequence, out, mode='replay')
    try:
        bad, good = bad_messages(logged_messages)
        bad = [(topic, msg) for _, topic, msg in bad]
        _feed(node, bad)
        node.process_pending(flush=True)
        # Every good frame tracked; a frame that cannot be assembled after initialisation
        # gets a predict-only estimate (pose and track, its reason naming the problem).
        predicted = {stamp_to_ns(t.header.stamp): t for t in out[interfaces.TRACK_TOPIC]
                     if t.status_reason.startswith('predict only: [')}
        expected = predicted_images(good)
        assert sorted(predicted) == sorted(expected), sorted(predicted)
        for stamp, t in predicted.items():
            assert t.pose.covariance[0] > 0, t.pose.covariance
            assert t.status_reason.startswith(f'predict only: [{expected[stamp]}]'), \
                t.status_reason
        poses = [p for p in out[interfaces.OBJECT_POSE_TOPIC]
                 if stamp_to_ns(p.header.stamp) not in predicted]
        assert [stamp_to_ns(p.header.stamp) for p in poses] == good
        assert len(out[interfaces.OBJECT_POSE_TOPIC]) == len(good) + len(predicted)
        for kind in ('bad_image', 'bad_camera_info', 'nan_joints', 'time_backwards',
                     'missing_tf'):
            assert node.problem_counts[kind] >= 1, (kind, node.problem_counts)
        gt = ground_truth(sequence)
        T = np.array([pose_to_matrix(p.pose.pose) for p in poses])
        points = ObjectModel.from_file(sequence / 'object.ply').sample_points.numpy()
        add_s = metrics.add_s(T, np.array([gt[s] for s in good]), points)
        assert add_s.mean() < 0.015, add_s
        # Diagnostics say it.
        node.publish_diagnostics()
        (diag,) = out['/diagnostics']
        status = diag.status[0]
        values = {kv.key: kv.value for kv in status.values}
        assert status.level == status.WARN and 'missing_tf' in status.message
        assert int(values['count_bad_image']) >= 1
        assert int(values['frames_tracked']) == len(good)
        assert float(values['latency_total_p50_ms']) > 0
        assert 'rate_image_hz' in values and values['mode'] == 'replay'
    finally:
        node.destroy_node()


@pytest.fixture
def isolated_context():
    """A context in a domain no other process uses (a service call must reach this node)."""
    context = rclpy.context.Context()
    rclpy.init(context=context, domain_id=free_domain_id())
    yield context
    rclpy.try_shutdown(context=context)


def test_reset_service(isolated_context, sequence, messages):
    from std_srvs.srv import Trigger
    ros_context = isolated_context
    node = _node(ros_context, sequence, Outputs(), mode='replay')
    client_node = rclpy.create_node('reset_client', context=ros_context)
    executor = rclpy.executors.SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    executor.add_node(client_node)
    client = client_node.create_client(Trigger, interfaces.RESET_SERVICE)

    def call():
        assert client.wait_for_service(timeout_sec=5.0)
        future = client.call_async(Trigger.Request())
        executor.spin_until_future_complete(future, timeout_sec=5.0)
        return future.result()

    try:
        before = call()
        assert not before.success and 'no initial pose' in before.message
        _feed(node, messages)
        node.process_pending(flush=True)
        assert node.frames_tracked == 6
        after = call()
        assert after.success and 're-initialised' in after.message
        # Buffers were cleared: the same bag again (time jumps back) is tracked again.
        _feed(node, messages)
        node.process_pending(flush=True)
        assert node.frames_tracked == 12
    finally:
        executor.shutdown()
        client_node.destroy_node()
        node.destroy_node()


# ---------------------------------------------------------------------------------------------
# Real time, names, QoS, outputs (issues 12 and 14)
# ---------------------------------------------------------------------------------------------
def test_live_frames_behind_skip_the_costly_measurements(ros_context, sequence, messages):
    """live_behind_s: a frame whose step starts more than this after its arrival is tracked
    without the measurements of live_behind_skip (the appearance by default; here the object
    centre, which this untextured object makes every frame) and counted as 'behind' (here
    every frame: 1 us); with 0 no frame is."""
    _, pose = _initial_pose_param(messages)
    runs = {}
    for behind_s in (0.0, 1e-6):
        out = Outputs()
        node = _node(ros_context, sequence, out, mode='live', initial_pose=pose,
                     publish_markers=False, live_behind_s=behind_s,
                     live_behind_skip=['object_center'])
        try:
            assert _step_live(node, messages, 4) == [1] * 4
            names = [{r.name for r in m.residuals} for m in out[interfaces.TRACK_TOPIC]]
            runs[behind_s] = names, node.problem_counts['behind']
        finally:
            node.destroy_node()
    names, behind = runs[0.0]
    assert len(names) == 4 and behind == 0
    assert all('object_center' in n for n in names), names
    names, behind = runs[1e-6]
    assert len(names) == 4 and behind == 4
    assert not any('object_center' in n for n in names) and all('contour' in n for n in names), \
        names


def test_live_frames_far_behind_are_answered_with_the_prediction(ros_context, sequence,
                                                                 messages):
    """live_drop_s: a frame whose step would start more than this after its arrival is
    answered at once with the hand-driven prediction and counted as dropped, never two in a
    row (here 1 us: every other frame after the first); with 0 every frame is tracked."""
    _, pose = _initial_pose_param(messages)
    for drop_s, expected in ((0.0, [True] * 5), (1e-6, [True, False, True, False, True])):
        out = Outputs()
        node = _node(ros_context, sequence, out, mode='live', initial_pose=pose,
                     publish_markers=False, live_drop_s=drop_s, live_behind_s=0.0)
        try:
            _step_live(node, messages, 5)
            answers = out[interfaces.TRACK_TOPIC]
            tracked = [not m.status_reason.startswith('predict only: [dropped]')
                       for m in answers]
            assert tracked == expected, [m.status_reason for m in answers]
            assert node.problem_counts['dropped'] == expected.count(False)
            assert len(out[interfaces.TF_TOPIC]) == 5  # every frame answered with a pose
        finally:
            node.destroy_node()


def test_live_budget_skips_then_drops_by_the_cost_of_recent_steps(ros_context, sequence,
                                                                 messages):
    """live_budget_s: with the last steps' cost (p75) the step would end after the budget ->
    the frame skips live_behind_skip (here the object centre) when the steps skipping it fit,
    and is answered with the prediction (never two in a row) when they do not either; fewer
    than 5 steps of a kind decide nothing (no skipping steps yet: it skips, to learn their
    cost, rather than drop), and 0 turns it off. (The recent costs are set, as a node that had
    been slow would have them: 200 ms, against a 50 ms budget.)"""
    _, pose = _initial_pose_param(messages)
    slow, fast = [0.2] * 5, [0.001] * 5
    cases = {  # (budget, full steps' costs, skipping steps' costs) -> tracked?, skipped?
        'fits': (0.05, fast, fast, [True] * 5, [False] * 5),
        'full too slow': (0.05, slow, fast, [True] * 5, [False] + [True] * 4),
        'both too slow': (0.05, slow, slow, [True, False, True, False, True],
                          [False, None, True, None, True]),
        'too few steps': (0.05, slow[:1], slow[:1], [True] * 5, [False] * 5),  # 1 + 3
        'no skipping steps yet': (0.05, slow, [], [True] * 5, [False] + [True] * 4),
        'off': (0.0, slow, slow, [True] * 5, [False] * 5)}
    for name, (budget, full, skipping, tracked, skipped) in cases.items():
        out = Outputs()
        node = _node(ros_context, sequence, out, mode='live', initial_pose=pose,
                     publish_markers=False, live_budget_s=budget,
                     live_behind_skip=['object_center'])
        def slow_so_far(i, node=node, full=full, skipping=skipping):
            if i == 2:  # once the track is on (the first frame initialises)
                node._step_cost_s[False].extend(full)
                node._step_cost_s[True].extend(skipping)

        try:
            _step_live(node, messages, 5, after_feed=slow_so_far)
            answers = out[interfaces.TRACK_TOPIC]
            got = [not m.status_reason.startswith('predict only: [dropped]') for m in answers]
            assert got == tracked, (name, [m.status_reason for m in answers])
            got_skipped = [None if not t else not any(r.name == 'object_center'
                                                      for r in m.residuals)
                           for t, m in zip(got, answers)]
            assert got_skipped == skipped, name
            assert node.problem_counts['dropped'] == tracked.count(False), name
            assert node.problem_counts['behind'] == skipped.count(True), name
            assert len(out[interfaces.TF_TOPIC]) == 5, name  # every frame answered with a pose
        finally:
            node.destroy_node()


def test_live_worker_thread_tracks_newest_frames_without_a_backlog(ros_context, sequence,
                                                                   messages):
    """Callbacks only store; the worker thread tracks. Everything delivered at once: the
    callbacks return at once, the worker tracks the newest frames, the others are dropped and
    counted, and none is left waiting."""
    _, pose = _initial_pose_param(messages)
    out = Outputs()
    node = _node(ros_context, sequence, out, threaded=True, mode='live', initial_pose=pose,
                 publish_markers=False)
    try:
        images = [m for t, m in messages if t == interfaces.IMAGE_TOPIC]
        t0 = time.thread_time()  # CPU time of the callbacks (not the GIL waits: the worker
        _feed(node, messages)     # may track a ready frame meanwhile)
        feed_s = time.thread_time() - t0
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline and (
                node.frames_tracked + node.problem_counts['dropped'] < len(images)):
            time.sleep(0.02)
        with node._step_lock:  # the last frame is counted before it is published
            tracked = [stamp_to_ns(m.header.stamp) for m in out[interfaces.TRACK_TOPIC]]
        assert tracked, 'the worker tracked nothing'
        assert tracked == sorted(tracked)
        assert tracked[-1] == stamp_to_ns(images[-1].header.stamp)  # the newest one
        assert node.frames_tracked + node.problem_counts['dropped'] == len(images)
        assert node._assembler.pending_count == 0
        # Storing 6 frames' messages cost far less than tracking one frame.
        assert feed_s < max(node.processing_s), (feed_s, node.processing_s)
        stages = [s.stage for s in out[interfaces.TRACK_TOPIC][-1].latency]
        for stage in ('wait', 'input', 'track', 'publish', 'total'):
            assert stage in stages, stages
    finally:
        node.destroy_node()
    assert not node._worker.is_alive()


def _when_waiting_for_mask(node, stamp_ns: int) -> threading.Event:
    """An event set when the node's worker starts waiting for the mask of the frame at
    ``stamp_ns`` (a spy on ``TrackerNode._await_mask``)."""
    waiting = threading.Event()
    await_mask = node._await_mask

    def spy(frame, size_hw):
        if frame.stamp_ns == stamp_ns:
            waiting.set()
        return await_mask(frame, size_hw)

    node._await_mask = spy
    return waiting


def test_live_worker_tracks_a_frame_before_its_mask_and_waits_for_it(ros_context, sequence,
                                                                      messages):
    """Threaded live mode: a frame whose mask is on its way is released and stepped at once;
    the tracker waits for the mask after its predict and render (stage 'mask_wait') and uses
    it when it comes; nothing is counted missing."""
    _, pose = _initial_pose_param(messages)
    out = Outputs()
    node = _node(ros_context, sequence, out, threaded=True, mode='live', initial_pose=pose,
                 publish_markers=False, live_mask_wait_s=1.0)
    try:
        images = [m for t, m in messages if t == interfaces.IMAGE_TOPIC]
        at = [i for i, (t, _) in enumerate(messages) if t == interfaces.IMAGE_TOPIC]
        # The first frame as it comes (the first step warms up: longer than any mask wait);
        # then the second frame's messages but its mask.
        _feed(node, messages[:at[1]])
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline and node.frames_tracked < 1:
            time.sleep(0.01)
        waiting = _when_waiting_for_mask(node, stamp_to_ns(images[1].header.stamp))
        held = [(t, m) for t, m in messages[at[1]:at[2]] if t == interfaces.MASK_TOPIC]
        _feed(node, messages[at[1]:at[2]], skip=(interfaces.MASK_TOPIC,))
        assert waiting.wait(30.0)  # the worker stepped the frame and waits for its mask
        assert node.frames_tracked == 1
        _feed(node, held)
        _feed(node, messages[at[2]:])
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline and (
                node.frames_tracked + node.problem_counts['dropped'] < len(images)):
            time.sleep(0.02)
        with node._step_lock:
            answers = list(out[interfaces.TRACK_TOPIC])
        waits = [{s.stage: s.seconds for s in m.latency}.get('mask_wait') for m in answers]
        waits = [w for w in waits if w is not None]
        assert waits and all(0.0 <= w < 1.0 for w in waits), waits
        assert node.problem_counts['missing_mask'] == 0, node.problem_counts
        assert node.frames_tracked >= 1
    finally:
        node.destroy_node()


def test_live_first_frame_waits_for_its_mask_inside_the_step(ros_context, sequence,
                                                             messages):
    """The first frame, whose initial pose is applied as it is stepped, also waits for its
    mask inside the step (after the predict and render: its answer carries stage
    'mask_wait'), not before it: the initial pose is applied under the input lock, the step
    runs without it (the mask's arrival needs that lock)."""
    _, pose = _initial_pose_param(messages)
    out = Outputs()
    node = _node(ros_context, sequence, out, threaded=True, mode='live', initial_pose=pose,
                 publish_markers=False, live_mask_wait_s=1.0)
    try:
        at = [i for i, (t, _) in enumerate(messages) if t == interfaces.IMAGE_TOPIC]
        first = stamp_to_ns(messages[at[0]][1].header.stamp)
        waiting = _when_waiting_for_mask(node, first)
        held = [(t, m) for t, m in messages[:at[1]] if t == interfaces.MASK_TOPIC]
        # (the bag's initial-pose message left out: fed after the image, it would be pending
        # again for the next frame whenever the worker had applied the parameter's first)
        _feed(node, messages[:at[1]], skip=(interfaces.MASK_TOPIC, interfaces.INITIAL_POSE_TOPIC))
        assert waiting.wait(30.0)  # the worker stepped the first frame and waits for its mask
        assert node.session.pending_initial_poses == 0  # applied before the step
        _feed(node, held)
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline and node.frames_tracked < 1:
            time.sleep(0.01)
        with node._step_lock:
            answers = list(out[interfaces.TRACK_TOPIC])
        assert len(answers) == 1 and stamp_to_ns(answers[0].header.stamp) == first
        stages = {s.stage: s.seconds for s in answers[0].latency}
        assert 0.0 <= stages['mask_wait'] < 1.0, stages
        assert node.problem_counts['missing_mask'] == 0, node.problem_counts
    finally:
        node.destroy_node()


def test_reception_latency_from_the_message_info(ros_context, sequence, messages):
    """The DDS source timestamp of an image gives the 'reception' stage and 'end_to_end'."""
    _, pose = _initial_pose_param(messages)
    out = Outputs()
    node = _node(ros_context, sequence, out, mode='replay', initial_pose=pose)
    try:
        for topic, msg in messages:
            if topic == interfaces.IMAGE_TOPIC:
                node.on_image(msg, {'source_timestamp': time.time_ns() - 7_000_000})
            elif topic != interfaces.INITIAL_POSE_TOPIC:
                _feed(node, [(topic, msg)])
        node.process_pending(flush=True)
        tracks = out[interfaces.TRACK_TOPIC]
        assert tracks
        for track in tracks:
            lat = {s.stage: s.seconds for s in track.latency}
            assert 0.007 <= lat['reception'] < 5.0, lat
            assert lat['end_to_end'] == pytest.approx(lat['reception'] + lat['total'])
    finally:
        node.destroy_node()


def test_names_follow_the_namespace(ros_context, sequence):
    node = _node(ros_context, sequence)
    moved = _node(ros_context, sequence, node_kwargs={'namespace': '/robot2'},
                  image_qos_reliability='reliable')  # (auto waits for a camera to subscribe)
    try:
        assert node._pose_pub.topic_name == interfaces.OBJECT_POSE_TOPIC
        assert node._track_pub.topic_name == interfaces.TRACK_TOPIC
        assert node._markers_pub.topic_name == interfaces.MARKERS_TOPIC
        assert node._debug_pub.topic_name == interfaces.DEBUG_IMAGE_TOPIC
        services = dict(node.get_service_names_and_types_by_node('tracker_node', '/handypriors'))
        assert interfaces.RESET_SERVICE in services
        assert moved._pose_pub.topic_name == '/robot2/object_pose'
        assert moved._track_pub.topic_name == '/robot2/track'
        assert moved._markers_pub.topic_name == '/robot2/markers'
        services = dict(moved.get_service_names_and_types_by_node('tracker_node', '/robot2'))
        assert '/robot2/reset' in services
        subs = dict(moved.get_subscriber_names_and_types_by_node('tracker_node', '/robot2'))
        assert '/robot2/initial_pose' in subs
        assert interfaces.IMAGE_TOPIC in subs and interfaces.JOINT_STATES_TOPIC in subs
        assert moved._tf_pub.topic_name == '/tf'
    finally:
        moved.destroy_node()
        node.destroy_node()


def _subscription_reliability(node, topic):
    from rclpy.qos import QoSReliabilityPolicy
    infos = [i for i in node.get_subscriptions_info_by_topic(topic)
             if i.node_name == node.get_name() and i.node_namespace == node.get_namespace()]
    assert len(infos) == 1, infos
    return {QoSReliabilityPolicy.RELIABLE: 'reliable',
            QoSReliabilityPolicy.BEST_EFFORT: 'best_effort'}[infos[0].qos_profile.reliability]


@pytest.mark.parametrize('publisher', ['reliable', 'best_effort'])
def test_image_qos_auto_matches_the_publisher(ros_context, sequence, publisher):
    from sensor_msgs.msg import Image
    from handypriors_ros.ros.qos import image_qos
    camera = rclpy.create_node('fake_camera', context=ros_context)
    camera.create_publisher(Image, interfaces.IMAGE_TOPIC, image_qos(publisher, 5))
    node = _node(ros_context, sequence)
    try:
        assert node.image_reliability == publisher
        assert _subscription_reliability(node, interfaces.IMAGE_TOPIC) == publisher
        assert _subscription_reliability(node, interfaces.CAMERA_INFO_TOPIC) == publisher
    finally:
        node.destroy_node()
        camera.destroy_node()


def test_image_qos_auto_waits_for_the_camera_then_falls_back_to_best_effort(ros_context,
                                                                           sequence):
    from sensor_msgs.msg import Image
    from handypriors_ros.ros.qos import image_qos
    node = _node(ros_context, sequence)
    camera = rclpy.create_node('fake_camera', context=ros_context)
    late = rclpy.create_node('late_camera', context=ros_context)
    try:
        # A camera that comes within the wait: subscribed like it at once (no swap).
        camera.create_publisher(Image, interfaces.IMAGE_TOPIC, image_qos('reliable', 5))
        node._check_image_publishers()
        assert _subscription_reliability(node, interfaces.IMAGE_TOPIC) == 'reliable'
        # No camera within the wait: best-effort (matches any), reliable once a reliable one
        # appears.
        other = _node(ros_context, sequence, image_topic='/other/image_raw',
                      camera_info_topic='/other/camera_info')
        try:
            other._check_image_publishers()
            assert other.image_reliability is None
            other._auto_deadline = 0.0
            other._check_image_publishers()
            assert _subscription_reliability(other, '/other/image_raw') == 'best_effort'
            late.create_publisher(Image, '/other/image_raw', image_qos('reliable', 5))
            other._check_image_publishers()
            assert other.image_reliability == 'reliable'
            assert _subscription_reliability(other, '/other/image_raw') == 'reliable'
            assert _subscription_reliability(other, '/other/camera_info') == 'reliable'
        finally:
            other.destroy_node()
    finally:
        late.destroy_node()
        camera.destroy_node()
        node.destroy_node()


def test_qos_overrides_and_joint_states_qos_are_honoured(ros_context, sequence):
    from sensor_msgs.msg import Image
    from handypriors_ros.ros.qos import image_qos
    camera = rclpy.create_node('fake_camera', context=ros_context)
    camera.create_publisher(Image, interfaces.IMAGE_TOPIC, image_qos('reliable', 5))
    override = f'qos_overrides.{interfaces.IMAGE_TOPIC}.subscription.reliability'
    node = _node(ros_context, sequence, joint_states_qos_reliability='best_effort',
                 **{override: 'best_effort',
                    f'qos_overrides.{interfaces.JOINT_STATES_TOPIC}.subscription.depth': 7})
    try:
        assert node.get_parameter(override).value == 'best_effort'
        assert _subscription_reliability(node, interfaces.IMAGE_TOPIC) == 'best_effort'
        # auto matched the reliable camera where no override was given
        assert _subscription_reliability(node, interfaces.CAMERA_INFO_TOPIC) == 'reliable'
        assert _subscription_reliability(node, interfaces.JOINT_STATES_TOPIC) == 'best_effort'
        (sub,) = [s for s in node.subscriptions if s.topic_name == interfaces.JOINT_STATES_TOPIC]
        assert sub.qos_profile.depth == 7  # (endpoint info does not carry the depth)
    finally:
        node.destroy_node()
        camera.destroy_node()


@pytest.mark.parametrize('publish_lost', [False, True])
def test_lost_frames_give_no_tf_and_no_pose_unless_asked(ros_context, sequence, messages,
                                                         publish_lost):
    """Every other frame comes out of the tracker LOST (the session's step wrapped): those
    give their TrackedObject only, unless publish_lost."""
    import dataclasses
    from handypriors_ros.core.tracking.types import TrackStatus
    _, pose = _initial_pose_param(messages)
    out = Outputs()
    node = _node(ros_context, sequence, out, mode='replay', initial_pose=pose,
                 publish_lost=publish_lost)
    step = node.session.step

    def every_other_lost(frame, camera_frame, **kwargs):
        result = step(frame, camera_frame, **kwargs)
        if result is not None and node.session.frames_tracked % 2 == 0:
            result = dataclasses.replace(result, status=TrackStatus.LOST, status_reason='test')
        return result

    node.session.step = every_other_lost
    try:
        _feed(node, messages)
        node.process_pending(flush=True)
        tracks = out[interfaces.TRACK_TOPIC]
        lost = [stamp_to_ns(t.header.stamp) for t in tracks if t.status == t.STATUS_LOST]
        assert len(tracks) == 6 and len(lost) == 3
        posed = [stamp_to_ns(p.header.stamp) for p in out[interfaces.OBJECT_POSE_TOPIC]]
        tfs = [stamp_to_ns(m.transforms[0].header.stamp) for m in out[interfaces.TF_TOPIC]]
        expected = [stamp_to_ns(t.header.stamp) for t in tracks
                    if publish_lost or t.status != t.STATUS_LOST]
        assert posed == expected and tfs == expected
    finally:
        node.destroy_node()


def test_diagnostics_warn_when_an_input_stalls_and_error_when_it_is_gone(ros_context, sequence,
                                                                          messages):
    _, pose = _initial_pose_param(messages)
    out = Outputs()
    node = _node(ros_context, sequence, out, mode='replay', initial_pose=pose,
                 input_stall_s=0.3, input_gone_s=1.0)
    try:
        _feed(node, messages)
        node.process_pending(flush=True)
        node.publish_diagnostics()
        first = out['/diagnostics'][-1].status[0]
        values = {kv.key: float(kv.value) for kv in first.values if kv.key.startswith('silent_')}
        assert set(values) == {'silent_image_s', 'silent_camera_info_s',
                               'silent_joint_states_s', 'silent_tf_s', 'silent_mask_s'}
        assert first.level != first.ERROR and 'stalled' not in first.message
        time.sleep(0.4)
        node.publish_diagnostics()
        warn = out['/diagnostics'][-1].status[0]
        assert warn.level == warn.WARN and 'stalled: image' in warn.message, warn.message
        time.sleep(0.7)
        node.publish_diagnostics()
        error = out['/diagnostics'][-1].status[0]
        assert error.level == error.ERROR, error.message
        assert 'no image for' in error.message and 'joint_states' in error.message
        values = {kv.key: kv.value for kv in error.values}
        assert float(values['rate_image_hz']) == 0.0
    finally:
        node.destroy_node()


def test_debug_image_draws_the_outline_over_the_camera_image(ros_context, sequence, messages):
    _, pose = _initial_pose_param(messages)
    out = Outputs()
    node = _node(ros_context, sequence, out, mode='replay', initial_pose=pose,
                 debug_image=True, debug_image_period_s=0.0)
    try:
        _feed(node, messages)
        node.process_pending(flush=True)
        debug = out[interfaces.DEBUG_IMAGE_TOPIC]
        images = {stamp_to_ns(m.header.stamp): m for t, m in messages
                  if t == interfaces.IMAGE_TOPIC}
        assert len(debug) == len(out[interfaces.TRACK_TOPIC]) > 0
        for msg in debug:
            src = images[stamp_to_ns(msg.header.stamp)]
            assert (msg.width, msg.height, msg.encoding) == (src.width, src.height, 'rgb8')
            drawn = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)
            green = np.all(drawn == (40, 230, 40), axis=2) | np.all(drawn == (230, 40, 40),
                                                                    axis=2)
            assert green.sum() > 50  # an outline, not a dot
        # Throttled: one per period.
        node.set_parameters([Parameter('debug_image_period_s', value=60.0)])
        n = len(debug)
        _feed(node, [(t, m) for t, m in messages if t != interfaces.INITIAL_POSE_TOPIC])
        node._on_reset(*_trigger())
        _feed(node, messages)
        node.process_pending(flush=True)
        assert len(out[interfaces.DEBUG_IMAGE_TOPIC]) == n
    finally:
        node.destroy_node()


def _trigger():
    from std_srvs.srv import Trigger
    return Trigger.Request(), Trigger.Response()


@pytest.mark.parametrize('mode, expected', [('live', 'best_effort'), ('replay', 'reliable')])
def test_state_streams_best_effort_live_reliable_in_replay(ros_context, sequence, mode,
                                                           expected):
    """joint_states / tf reliability auto: a lost sample never holds the later ones live."""
    node = _node(ros_context, sequence, mode=mode)
    try:
        assert _subscription_reliability(node, interfaces.JOINT_STATES_TOPIC) == expected
        assert _subscription_reliability(node, interfaces.TF_TOPIC) == expected
        assert _subscription_reliability(node, interfaces.TF_STATIC_TOPIC) == 'reliable'
    finally:
        node.destroy_node()
