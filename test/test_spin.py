"""run_node's spin loop: a message the executor cannot take is skipped, not fatal; a take that
fails because Ctrl-C shut the context down is an interruption (exit status, not a traceback)."""
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
    assert spin._spin(executor, logger, done) is True
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
    assert spin._spin(executor, logger, None) is False
    assert executor.calls == 3 and logger.errors == []


def test_spinning_ends_normally_at_shutdown(monkeypatch):
    state = {'ok': True}
    monkeypatch.setattr(spin.rclpy, 'ok', lambda: state['ok'])
    executor = _Executor(set(), lambda n: n == 2 and state.update(ok=False))
    assert spin._spin(executor, _Logger(), None) is True and executor.calls == 2
