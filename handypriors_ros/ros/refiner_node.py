"""refiner_node: the offline refinement (``handypriors refine``) as a ROS 2 node.

Thin: the constructor declares every parameter of the job's one schema
(:data:`~handypriors_ros.jobs.refine.REFINE_SCHEMA`: the job's paths, the object, hand and
inputs, the refinement settings; read-only, typed and described; config/refine.yaml lists them),
reads them into a :class:`~handypriors_ros.jobs.refine.RefineJob` and starts the job
(:func:`~handypriors_ros.jobs.refine.run_refine`, the command line's) in a worker thread.
While it runs, progress (iteration, ETA) goes to ``/diagnostics`` about once a second; when it
is done the refined estimates (``/handypriors/object_pose``, ``/handypriors/track``,
``/tf``, one per image, as written to the output bag) are published if ``publish_results``,
a summary is logged, and :func:`main` returns: 0 on success, 1 on an error (logged in one
line, also reported on ``/diagnostics``).

    ros2 run handypriors_ros refiner_node --ros-args --params-file config/refine.yaml \\
        -p bag:=/data/session -p object_mesh:=/data/mug.ply -p out_bag:=/data/refined

Output topics are the defaults of INTERFACES.md; remap them like any topic.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.task import Future
from tf2_msgs.msg import TFMessage

from handypriors_ros import interfaces
from handypriors_ros.core.errors import HandyPriorsError
from handypriors_ros.jobs.refine import REFINE_SCHEMA, RefineJob, run_refine
from handypriors_ros.jobs.stop import StopRequest
from handypriors_ros.msg import TrackedObject
from handypriors_ros.ros.parameters import declare
from handypriors_ros.ros.qos import OUTPUT_QOS, TF_QOS
from handypriors_ros.ros.spin import run_node

_DIAGNOSTIC_PERIOD_S = 1.0
_STOP_WAIT_S = 30.0  # shutdown waits this long for the iteration under way and its checkpoint


class RefinerNode(Node):
    """Runs one refinement job and publishes its progress and results (module docstring).

    Args:
        node_name: the node's name.
        start: start the job at once (tests may start it later with :meth:`start`).
        **node_kwargs: passed to ``rclpy.node.Node`` (context, parameter_overrides, ...).
    Raises (constructor):
        InputError: a missing path or an invalid setting (the parameter is named).
        rclpy.exceptions.ParameterException: a value of the wrong type.
    """

    def __init__(self, node_name: str = 'refiner_node', *, start: bool = True,
                 **node_kwargs: Any) -> None:
        super().__init__(node_name, **node_kwargs)
        try:
            self.job = RefineJob.from_values(declare(self, REFINE_SCHEMA, read_only=True))
        except (HandyPriorsError, ParameterException):
            super().destroy_node()
            raise
        self.publish_results = self.job.publish_results
        self._outputs = {
            interfaces.OBJECT_POSE_TOPIC: self.create_publisher(
                PoseWithCovarianceStamped, interfaces.OBJECT_POSE_TOPIC, OUTPUT_QOS),
            interfaces.TRACK_TOPIC: self.create_publisher(
                TrackedObject, interfaces.TRACK_TOPIC, OUTPUT_QOS),
            interfaces.TF_TOPIC: self.create_publisher(TFMessage, interfaces.TF_TOPIC, TF_QOS),
        }
        self._diagnostics = self.create_publisher(DiagnosticArray, interfaces.DIAGNOSTICS_TOPIC,
                                                  OUTPUT_QOS)
        self.done = Future()
        self.stop = StopRequest()  # set on shutdown: the job checkpoints and stops
        self.outcome = None
        self._start_time = time.monotonic()
        self._last_diagnostic = 0.0
        self._thread = threading.Thread(target=self._run, name='refinement', daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        """Start the job in its worker thread (once)."""
        if not self._thread.is_alive() and not self.done.done():
            self._start_time = time.monotonic()
            self._thread.start()

    # -- worker ------------------------------------------------------------------------------

    def _run(self) -> None:
        log = self.get_logger()
        log.info(f'refining {self.job.bag} -> {self.job.out_bag}')
        try:
            outcome = run_refine(self.job, progress=self._on_progress,
                                 on_messages=self._publish if self.publish_results else None,
                                 warn=log.warning, stop=self.stop)
        except HandyPriorsError as exc:
            log.error(f'refinement failed: {exc}')
            self._report(DiagnosticStatus.ERROR, f'failed: {exc}', {})
            self.done.set_result(1)
            return
        self.outcome = outcome
        s = outcome.summary
        ref = s['refined_figures']
        log.info(f'refined {s["frames"]} images in {s["optimisation_s"]:.1f} s '
                 f'({s["s_per_frame"]:.2f} s/frame) -> {outcome.out_bag}; penetration '
                 f'{ref["penetration_mm"]:.2f} mm'
                 + (f', ADD-S {ref["add_s_mm"]:.2f} mm' if s['ground_truth'] else ''))
        self._report(DiagnosticStatus.OK, 'done', {'frames': s['frames'],
                                                   'iterations': s['iterations'],
                                                   's_per_frame': s['s_per_frame']})
        self.done.set_result(0)

    def _on_progress(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last_diagnostic < _DIAGNOSTIC_PERIOD_S:
            return
        self._last_diagnostic = now
        elapsed = now - self._start_time
        eta = elapsed / done * (total - done) if done else float('nan')
        self._report(DiagnosticStatus.OK, f'iteration {done}/{total}',
                     {'iteration': done, 'iterations': total, 'elapsed_s': round(elapsed, 1),
                      'eta_s': round(eta, 1)})

    def _report(self, level: bytes, message: str, values: dict[str, Any]) -> None:
        status = DiagnosticStatus(level=level, name=f'{self.get_name()}: refinement',
                                  message=message, hardware_id=str(self.job.bag),
                                  values=[KeyValue(key=k, value=str(v))
                                          for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)

    def _publish(self, messages: list) -> None:
        for topic, msg, _ in messages:
            self._outputs[topic].publish(msg)

    def destroy_node(self) -> None:
        if self._thread.is_alive():
            self.stop.request('node shutdown')
            self.get_logger().warning('shutting down while the refinement runs: it writes a '
                                      'checkpoint after the current iteration; restart with '
                                      'resume:=true')
            self._thread.join(timeout=_STOP_WAIT_S)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """``refiner_node`` console script: 0 when the job succeeded, 1 otherwise."""
    return run_node('refiner_node', RefinerNode, args=args, until_done=True,
                    unfinished_code=1, interrupted_code=130)


if __name__ == '__main__':
    sys.exit(main())
