"""The one ``main()`` body of the package's nodes: init, spin, shut down, exit status."""
from __future__ import annotations

from typing import Callable

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from handypriors_ros.core.errors import HandyPriorsError


def run_node(name: str, make_node: Callable[[], Node], *, args: list[str] | None = None,
             until_done: bool = False, unfinished_code: int = 0,
             interrupted_code: int = 0) -> int:
    """Create a node, spin it on a single-threaded executor and return the exit status.

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
    rclpy.init(args=args)
    logger = rclpy.logging.get_logger(name)
    node: Node | None = None
    try:
        node = make_node()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if not _spin(executor, logger, None if not until_done else node.done):
            return interrupted_code
        if not until_done:
            return 0
        return int(node.done.result()) if node.done.done() else unfinished_code
    except (KeyboardInterrupt, ExternalShutdownException):
        return interrupted_code
    except (HandyPriorsError, ParameterException) as exc:
        logger.fatal(str(exc))
        return 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


def _spin(executor: SingleThreadedExecutor, logger, done) -> bool:
    """Spin until shut down (or until ``done``, a future, completes). A message the executor
    cannot take (rclpy raises RuntimeError converting it, e.g. while the context is being shut
    down, or for a message its type support cannot convert) is logged and skipped: a node does
    not die on one message. Returns False when a shutdown interrupted a take (Ctrl-C)."""
    while rclpy.ok() and (done is None or not done.done()):
        try:
            executor.spin_once(timeout_sec=0.5)
        except RuntimeError as exc:
            if not rclpy.ok():  # Ctrl-C came while a message was being taken
                return False
            logger.error(f'a message could not be taken and was skipped: {exc}')
    return True
