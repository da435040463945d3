"""Stopping a long job cleanly: a :class:`StopRequest` the job polls between steps, and the
signal handlers that set it.

A job (``refine``) given a :class:`StopRequest` checks it after every iteration; once it is
set the job writes a checkpoint and raises :class:`JobStopped`, whose ``exit_code`` is what the
command exits with (130 for SIGINT / Ctrl-C, 143 for SIGTERM, as a shell reports a process
killed by them). The command line sets the request from SIGINT and SIGTERM
(:func:`stop_on_signals`); the refiner node sets it when it shuts down. A second signal while
the job is stopping interrupts it at once (``KeyboardInterrupt``): the previous checkpoint
stays.

Pure Python; no ROS.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from handypriors_ros.core.errors import HandyPriorsError

#: Exit status of a job stopped by a signal: 128 + the signal's number (what a shell shows).
EXIT_SIGINT = 128 + signal.SIGINT    # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143


class JobStopped(HandyPriorsError):
    """A job stopped on request, after saving what it can (the message says where and how to
    continue).

    Attributes:
        exit_code: the command's exit status (130 / 143 for a signal, 1 otherwise).
    """

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StopRequest:
    """A thread-safe request to stop, set once (by a signal handler, a node, a test) and polled
    by the job.

    Attributes:
        reason: why (``'SIGINT'``, ``'SIGTERM'``, ``'node shutdown'``); '' until requested.
        exit_code: the exit status the job should end with.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ''
        self.exit_code = 1

    def request(self, reason: str = 'stop requested', *, exit_code: int = 1) -> None:
        """Ask the job to stop at its next check (the first request's reason is kept)."""
        if not self._event.is_set():
            self.reason, self.exit_code = reason, exit_code
            self._event.set()

    @property
    def requested(self) -> bool:
        """Whether a stop was requested."""
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a stop is requested (or ``timeout`` s pass); whether it was."""
        return self._event.wait(timeout)

    def stopped(self, what: str) -> JobStopped:
        """The :class:`JobStopped` to raise, ``what`` saying what was saved and how to go on."""
        return JobStopped(f'stopped ({self.reason}): {what}', exit_code=self.exit_code)


@contextlib.contextmanager
def stop_on_signals(stop: StopRequest,
                    signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
                    ) -> Iterator[StopRequest]:
    """While the block runs, SIGINT and SIGTERM set ``stop`` (exit codes 130 / 143); a second
    signal raises ``KeyboardInterrupt`` at once. The previous handlers come back afterwards.
    Outside the main thread (where Python cannot install handlers) nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):  # noqa: ARG001 - the signal module's signature
        if stop.requested:
            raise KeyboardInterrupt
        stop.request(signal.Signals(signum).name, exit_code=128 + signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


__all__ = ['EXIT_SIGINT', 'EXIT_SIGTERM', 'JobStopped', 'StopRequest', 'stop_on_signals']
