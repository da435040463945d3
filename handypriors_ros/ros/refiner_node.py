"""refiner_node: the offline refinement (``handypriors refine``) as a ROS 2 node.

Thin: the constructor reads every parameter (declared once each, read-only, with its
description and default from ``core.refine.config``: the job's paths and the refinement
settings; config/refine.yaml lists them) into a :class:`~handypriors_ros.cli.refine.RefineJob`
and starts the job (:func:`~handypriors_ros.cli.refine.run_job`, the command line's) in a worker
thread. While it runs, progress (iteration, ETA) goes to ``/diagnostics`` about once a second;
when it is done the refined estimates (``/handypriors/object_pose``, ``/handypriors/track``,
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
from pathlib import Path
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.task import Future
from tf2_msgs.msg import TFMessage

from handypriors_ros.ros.spin import run_node
from handypriors_ros import interfaces
from handypriors_ros.cli.refine import RefineJob, run_job
from handypriors_ros.core.errors import HandyPriorsError, InputError
from handypriors_ros.core.refine.config import JOB_PARAMETERS, RefineConfig
from handypriors_ros.msg import TrackedObject
from handypriors_ros.ros.qos import OUTPUT_QOS, TF_QOS

_DIAGNOSTIC_PERIOD_S = 1.0
_REQUIRED = ('bag', 'object_mesh', 'out_bag')


def declare_parameters(node: Node) -> dict[str, Any]:
    """Declare every refiner parameter (read-only, described) and return their values."""
    specs: dict[str, tuple[Any, str]] = dict(JOB_PARAMETERS)
    docs = RefineConfig.describe()
    for name, default in RefineConfig().to_flat_dict().items():
        specs[name] = (default, docs[name])
    values = {}
    for name, (default, doc) in specs.items():
        descriptor = ParameterDescriptor(description=doc, read_only=True)
        values[name] = node.declare_parameter(name, default, descriptor).value
    return values


def job_from_parameters(values: dict[str, Any]) -> RefineJob:
    """The :class:`RefineJob` of the node's parameter values.

    Raises:
        InputError: a required path is empty, or a setting is invalid (named).
    """
    missing = [name for name in _REQUIRED if not values[name]]
    if missing:
        raise InputError(f'parameters {", ".join(missing)}: expected a path, got \'\' '
                         f'(set them, e.g. -p {missing[0]}:=/path)')
    config = RefineConfig.from_mapping(
        {k: v for k, v in values.items() if k not in JOB_PARAMETERS}, source='parameters')

    def path(name: str) -> Path | None:
        return Path(values[name]) if values[name] else None

    return RefineJob(bag=Path(values['bag']), object_mesh=Path(values['object_mesh']),
                     out_bag=Path(values['out_bag']), config=config,
                     init_bag=path('init_bag'), report_dir=path('report_dir'),
                     checkpoint_dir=path('checkpoint_dir'), resume=bool(values['resume']),
                     ground_truth=path('ground_truth'),
                     object_scale=float(values['object_scale']),
                     hand_urdf=path('hand_urdf'), object_frame=str(values['object_frame']),
                     overwrite=bool(values['overwrite']))


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
            values = declare_parameters(self)
            self.job = job_from_parameters(values)
        except (HandyPriorsError, ParameterException):
            super().destroy_node()
            raise
        self.publish_results = bool(values['publish_results'])
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
            outcome = run_job(self.job, progress=self._on_progress,
                              on_messages=self._publish if self.publish_results else None)
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
            self.get_logger().warning('shutting down while the refinement runs; its last '
                                      'checkpoint is kept: restart with resume:=true')
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """``refiner_node`` console script: 0 when the job succeeded, 1 otherwise."""
    return run_node('refiner_node', RefinerNode, args=args, until_done=True,
                    unfinished_code=1, interrupted_code=130)


if __name__ == '__main__':
    sys.exit(main())
