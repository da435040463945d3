"""run_node's spin loop: a message the executor cannot take is skipped, not fatal; a take that
fails because Ctrl-C shut the context down is an interruption (exit status, not a traceback)."""
import contextlib
import threading
import time

import pytest

pytest.importorskip('rclpy')

from rclpy.task import Future  # noqa: E402

from handypriors_ros.ros import spin  # noqa: E402


class _Logger:
    def __init__(self):
        self.errors = []

    def error(self, text):
        self.errors.append(text)


class _Executor:
    """spin_once raises RuntimeError (as rclpy's take_message does) on the listed calls."""

    def __init__(self, raise_on, on_call):
        self.calls = 0
        self.raise_on = raise_on
        self.on_call = on_call

    def spin_once(self, timeout_sec=None):
        self.calls += 1
        self.on_call(self.calls)
        if self.calls in self.raise_on:
            raise RuntimeError("Unable to convert call argument '0' to Python object")


def test_a_message_that_cannot_be_taken_is_logged_and_skipped(monkeypatch):
    monkeypatch.setattr(spin.rclpy, 'ok', lambda: True)
    done = Future()
    executor = _Executor({1, 2}, lambda n: n == 4 and done.set_result(0))
    logger = _Logger()
    assert spin.spin_nodes(executor, logger, done) is True
    assert executor.calls == 4 and len(logger.errors) == 2
    assert 'could not be taken and was skipped' in logger.errors[0]
    assert 'Unable to convert' in logger.errors[0]


def test_a_take_that_fails_during_shutdown_is_an_interruption(monkeypatch):
    state = {'ok': True}
    monkeypatch.setattr(spin.rclpy, 'ok', lambda: state['ok'])

    def shut_down(n):
        if n == 3:
            state['ok'] = False  # Ctrl-C: the context goes down while a message is taken

    executor = _Executor({3}, shut_down)
    logger = _Logger()
    assert spin.spin_nodes(executor, logger, None) is False
    assert executor.calls == 3 and logger.errors == []


def test_spinning_ends_normally_at_shutdown(monkeypatch):
    state = {'ok': True}
    monkeypatch.setattr(spin.rclpy, 'ok', lambda: state['ok'])
    executor = _Executor(set(), lambda n: n == 2 and state.update(ok=False))
    assert spin.spin_nodes(executor, _Logger(), None) is True and executor.calls == 2


# -- the executor (the node's ``executor`` parameter) ------------------------------------------
def test_auto_is_the_events_executor_where_rclpy_has_one(monkeypatch):
    from handypriors_ros.core.errors import InputError

    monkeypatch.setattr(spin, 'events_executor_available', lambda: True)
    assert spin.resolve_executor('auto') == 'events'
    assert spin.resolve_executor('single_threaded') == 'single_threaded'
    monkeypatch.setattr(spin, 'events_executor_available', lambda: False)
    assert spin.resolve_executor('auto') == 'single_threaded'
    with pytest.raises(InputError, match="executor: 'events' needs"):
        spin.resolve_executor('events')
    with pytest.raises(InputError, match='executor: expected one of'):
        spin.resolve_executor('multi_threaded')


def test_events_executor_available_matches_rclpy():
    try:
        from rclpy.experimental import EventsExecutor  # noqa: F401
        present = True
    except ImportError:
        present = False
    assert spin.events_executor_available() is present


def _executor_kinds():
    """The executor kinds this rclpy has."""
    return ['single_threaded'] + (['events'] if spin.events_executor_available() else [])


@contextlib.contextmanager
def _node_on(kind, name):
    """A node in a context of its own (a free ROS domain) and an executor of ``kind``."""
    import rclpy
    from ros_helpers.domains import free_domain_id

    context = rclpy.context.Context()
    rclpy.init(context=context, domain_id=free_domain_id())
    node = rclpy.create_node(f'{name}_{kind}', context=context)
    executor = spin.make_executor(kind, context=context)
    try:
        yield node, executor
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_make_executor_spins_a_subscription_and_a_timer():
    """Each kind that this rclpy has delivers a message over DDS and fires a timer."""
    from std_msgs.msg import String

    for kind in _executor_kinds():
        with _node_on(kind, 'spin_test') as (node, executor):
            got, ticks = [], []
            node.create_subscription(String, 'spin_test', lambda m: got.append(m.data), 10)
            node.create_timer(0.01, lambda: ticks.append(1))
            pub = node.create_publisher(String, 'spin_test', 10)
            executor.add_node(node)
            expected = type(executor).__name__
            assert ('Events' in expected) == (kind == 'events'), expected
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline and not (got and len(ticks) >= 3):
                pub.publish(String(data='x'))
                executor.spin_once(timeout_sec=0.05)
            assert got and got[0] == 'x', kind
            assert len(ticks) >= 3, kind


def test_spin_nodes_fires_timers_on_every_executor_kind():
    """run_node and tracker_with_camera spin with spin_nodes: each kind fires a node's timer
    there, with no message traffic at all (rclpy 9.1.2's events executor fires none in
    spin() or spin_until_future_complete())."""
    for kind in _executor_kinds():
        with _node_on(kind, 'spin_nodes_test') as (node, executor):
            ticks, done = [], Future()
            node.create_timer(0.01, lambda: ticks.append(1))
            executor.add_node(node)
            threading.Timer(0.5, lambda: done.set_result(0)).start()
            assert spin.spin_nodes(executor, _Logger(), done) is True
            assert len(ticks) >= 10, (kind, len(ticks))  # ~50 in 0.5 s


_CTRL_C_CHILD = r'''
import sys
import rclpy
from rclpy.node import Node
from std_srvs.srv import Trigger
from handypriors_ros.ros import spin

class Served(Node):
    executor_kind = sys.argv[1]

    def __init__(self):
        super().__init__('handypriors_test_ctrl_c')
        self.create_service(Trigger, 'handypriors_test_ctrl_c', lambda req, res: res)
        self.create_timer(0.01, lambda: None)
        self.create_timer(0.2, lambda: print('spinning', flush=True))

sys.exit(spin.run_node('ctrl_c', Served, interrupted_code=7))
'''


@pytest.mark.parametrize('kind', _executor_kinds())
def test_ctrl_c_ends_a_spinning_node_with_the_interrupted_status(kind):
    """SIGINT while spinning (what ``ros2 launch`` sends on Ctrl-C): run_node returns its
    ``interrupted_code``, with no traceback. (The abort that spin.InterruptGuard prevents,
    tracker_node dying with SIGABRT under ``ros2 launch``, did not occur in this small node:
    test_launch_run.py checks it on the real launch.)"""
    import os
    import signal
    import subprocess
    import sys
    from ros_helpers.domains import free_domain_id
    env = dict(os.environ, ROS_DOMAIN_ID=str(free_domain_id()))
    child = subprocess.Popen([sys.executable, '-c', _CTRL_C_CHILD, kind], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == 'spinning', child.stderr.read()
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 7, err
    assert 'Fatal Python error' not in err and 'Traceback' not in err, err
