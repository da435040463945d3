"""The one ``main()`` body of the package's nodes: init, spin, shut down, exit status; and the
executor a node spins on (:func:`make_executor`).

Executors: rclpy's ``SingleThreadedExecutor`` runs its wait loop in Python, so on 2 cores every
callback (100 Hz joint states and TF, images, masks) costs the tracker thread GIL time; rclpy's
events executor (``rclpy.experimental.EventsExecutor``, rclpy 9 = Kilted on) waits and
dispatches in C++. Measured with ``bench/bench_latency.py`` (2026-12-06, 2-core VM): the node's
step 40 -> 21-24 ms wall, image -> TF p50 61 -> 37-42 ms. It has no guard conditions and
passes no message info to two-argument callbacks (rclpy 9.1 raises ``SystemError`` for one), so
a node that uses either asks for the single-threaded executor (a node's ``executor_kind``).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Callable

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.context import Context
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.task import Future

from handypriors_ros.core.errors import HandyPriorsError, InputError
from handypriors_ros.jobs.track import EXECUTORS  # (the node's ``executor`` parameter)


def events_executor_available() -> bool:
    """Whether this rclpy has the events executor (rclpy 9 = Kilted on)."""
    try:
        from rclpy.experimental import EventsExecutor  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_executor(kind: str) -> str:
    """'events' or 'single_threaded' for a requested kind (:data:`EXECUTORS`).

    Raises:
        InputError: an unknown kind, or 'events' where rclpy has no events executor.
    """
    if kind not in EXECUTORS:
        raise InputError(f'executor: expected one of {", ".join(EXECUTORS)}, got {kind!r}')
    available = events_executor_available()
    if kind == 'events' and not available:
        raise InputError("executor: 'events' needs rclpy.experimental.EventsExecutor (ROS 2 "
                         'Kilted or newer); this rclpy has none: use auto or single_threaded')
    if kind == 'auto':
        return 'events' if available else 'single_threaded'
    return kind


def make_executor(kind: str, context: Context | None = None) -> Executor:
    """An executor of a kind ('events' or 'single_threaded'; 'auto' is resolved)."""
    if resolve_executor(kind) == 'events':
        from rclpy.experimental import EventsExecutor
        return EventsExecutor(context=context)
    return SingleThreadedExecutor(context=context)


class InterruptGuard:
    """Ctrl-C (SIGINT) for a process that spins rclpy nodes: while the nodes are made (models
    load for seconds) it raises KeyboardInterrupt as usual; once :meth:`spinning` is called it
    only notes the interrupt. rclpy's own handler (installed by ``rclpy.init``, after this one,
    and chaining to it) shuts the context down, and the spin loop ends.

    Why: Python's default handler raises KeyboardInterrupt wherever the main thread next runs
    Python code. When that is a call rclpy's C++ makes into Python (the events executor, while
    the nodes are destroyed), pybind11 cannot pass the exception on and aborts the process:
    measured, ``tracker_node`` died with SIGABRT (exit -6, "Fatal Python error: Aborted") on
    every Ctrl-C of ``ros2 launch tracker.launch.py``.
    """

    def __init__(self) -> None:
        self.interrupted = False
        self._spinning = False

    def spinning(self) -> None:
        """From now on an interrupt is only noted (the nodes are spun)."""
        self._spinning = True

    def _handle(self, signum, frame) -> None:
        self.interrupted = True
        if not self._spinning:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[InterruptGuard]:
        """Install the handler around ``rclpy.init`` ... ``rclpy.try_shutdown`` (main thread
        only; elsewhere Python cannot set handlers, and nothing is changed)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def run_node(name: str, make_node: Callable[[], Node], *, args: list[str] | None = None,
             until_done: bool = False, unfinished_code: int = 0,
             interrupted_code: int = 0) -> int:
    """Create a node, spin it on its executor and return the exit status (:func:`run_nodes`).

    The executor: the node's ``executor_kind`` attribute ('events' or 'single_threaded', see
    :func:`make_executor`), single-threaded for a node without one.

    Args:
        name: logger name for start-up errors.
        make_node: builds the node (after ``rclpy.init``).
        until_done: spin until the node's ``done`` future completes and return its result
            (a job node); else spin until shut down and return 0.
        unfinished_code: status when spinning ended before ``done`` completed.
        interrupted_code: status on Ctrl-C / external shutdown.
    Returns:
        the exit status; 1 on a start-up error (bad parameter, unreadable model), logged.
    """
    def build(nodes: list[Node]) -> tuple[str, Future | None]:
        node = make_node()
        nodes.append(node)
        return (getattr(node, 'executor_kind', 'single_threaded'),
                node.done if until_done else None)

    return run_nodes(name, build, args=args, unfinished_code=unfinished_code,
                     interrupted_code=interrupted_code)


def run_nodes(name: str, build: Callable[[list[Node]], tuple[str, Future | None]], *,
              args: list[str] | None = None, unfinished_code: int = 0,
              interrupted_code: int = 0) -> int:
    """The one ``main()`` body of a process that spins nodes: Ctrl-C (:class:`InterruptGuard`),
    ``rclpy.init``, one executor for all the nodes, the exit status, and the nodes destroyed
    (in reverse order) and rclpy shut down on every way out.

    Args:
        name: logger name for start-up errors.
        build: makes the nodes (after ``rclpy.init``), appending each to the list it is given as
            soon as it exists (so that it is destroyed if a later one fails), and returns the
            executor kind (:func:`make_executor`) and the future whose result ends the process
            with its status (None: spin until shut down, status 0).
        unfinished_code: status when spinning ended before that future completed.
        interrupted_code: status on Ctrl-C / external shutdown.
    Returns:
        the exit status; 1 on a start-up error (bad parameter, unreadable model), logged.
    """
    with InterruptGuard().installed() as guard:
        rclpy.init(args=args)
        logger = rclpy.logging.get_logger(name)
        nodes: list[Node] = []
        try:
            kind, done = build(nodes)
            executor = make_executor(kind)
            for node in nodes:
                executor.add_node(node)
            guard.spinning()
            if not spin_nodes(executor, logger, done) or guard.interrupted:
                return interrupted_code
            if done is None:
                return 0
            return int(done.result()) if done.done() else unfinished_code
        except (KeyboardInterrupt, ExternalShutdownException):
            return interrupted_code
        except (HandyPriorsError, ParameterException) as exc:
            logger.fatal(str(exc))
            return 1
        finally:
            for node in reversed(nodes):
                node.destroy_node()
            rclpy.try_shutdown()


def spin_nodes(executor: Executor, logger, done) -> bool:
    """Spin until shut down (or until ``done``, a future, completes), in ``spin_once`` rounds:
    rclpy 9.1.2's EventsExecutor fires timers in ``spin_once`` but never in ``spin()`` or
    ``spin_until_future_complete()`` (measured: a 20 ms timer, 100 calls in 2 s against 0), so
    every node of this package is spun here. A message the executor cannot take (rclpy raises
    RuntimeError converting it, e.g. while the context is being shut down, or for a message its
    type support cannot convert) is logged and skipped: a node does not die on one message.
    Returns False when a shutdown interrupted a take (Ctrl-C)."""
    ok = getattr(getattr(executor, 'context', None), 'ok', rclpy.ok)  # the executor's context
    while ok() and (done is None or not done.done()):
        try:
            executor.spin_once(timeout_sec=0.5)
        except RuntimeError as exc:
            if not ok():  # Ctrl-C came while a message was being taken
                return False
            logger.error(f'a message could not be taken and was skipped: {exc}')
    return True
