"""ROS parameters made from a job's schema (:mod:`handypriors_ros.jobs.schema`): every option of
the node is declared with a descriptor built from its declaration (type, description with units
and choices, read-only, range: rclpy checks ranges and types itself), and read back as a
``{name: value}`` mapping for the job's options class to validate.

The tracker node's parameters are :data:`~handypriors_ros.jobs.track.TRACKER_NODE_SCHEMA`, the
refiner node's :data:`~handypriors_ros.jobs.refine.REFINE_SCHEMA`; their YAML defaults
(config/tracker.yaml, config/refine.yaml) come from the same schemas
(``python -m handypriors_ros.jobs tracker|refine``).

Array parameters without a default (``initial_pose``, ``joint_name_map``) are declared by type
only: rclpy cannot type an empty list, and an unset array parameter reads as empty.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType)

from handypriors_ros.core.frames import MODES
from handypriors_ros.jobs.options import DEVICES
from handypriors_ros.jobs.schema import Option, Schema
from handypriors_ros.jobs.track import RENDERERS, TRACKER_NODE_SCHEMA

#: The choices of the tracker's ``device``, ``renderer`` and ``mode`` (the launch files offer
#: the same).
__all__ = ['DEVICES', 'MODES', 'RENDERERS', 'all_parameter_specs', 'changed_values', 'declare',
           'descriptor', 'plain']

_ROS_TYPES = {'str': ParameterType.PARAMETER_STRING, 'float': ParameterType.PARAMETER_DOUBLE,
              'int': ParameterType.PARAMETER_INTEGER, 'bool': ParameterType.PARAMETER_BOOL,
              'str_list': ParameterType.PARAMETER_STRING_ARRAY,
              'float_list': ParameterType.PARAMETER_DOUBLE_ARRAY}


def descriptor(option: Option, *, read_only: bool | None = None) -> ParameterDescriptor:
    """The rclpy descriptor of an option: type, description (choices appended), read-only
    (``read_only`` overrides the option's), range."""
    kind = _ROS_TYPES[option.type]
    d = ParameterDescriptor(name=option.name, type=kind, description=option.help,
                            read_only=option.read_only if read_only is None else read_only)
    if option.range is not None and option.type == 'float':
        d.floating_point_range = [FloatingPointRange(
            from_value=float(option.range[0]), to_value=float(option.range[1]), step=0.0)]
    elif option.range is not None and option.type == 'int':
        d.integer_range = [IntegerRange(from_value=int(option.range[0]),
                                        to_value=int(option.range[1]), step=1)]
    return d


def declare(node: Any, schema: Schema, *, read_only: bool | None = None) -> dict[str, Any]:
    """Declare every node option of ``schema`` on ``node`` (an rclpy Node) and return the
    values (arrays as tuples; an unset array as ``()``).

    Raises:
        rclpy.exceptions.ParameterException: a value out of its range or of the wrong type
            (rclpy's message names the parameter).
    """
    from rclpy.parameter import Parameter

    values = {}
    for option in schema.node_options:
        default = option.default
        if option.type in ('str_list', 'float_list'):
            default = list(default) if default else (
                Parameter.Type.STRING_ARRAY if option.type == 'str_list'
                else Parameter.Type.DOUBLE_ARRAY)
        value = node.declare_parameter(option.name, default,
                                       descriptor(option, read_only=read_only)).value
        values[option.name] = plain(value)
    return values


def plain(value: Any) -> Any:
    """rclpy array values (list, array.array) as tuples; an unset array (None) as ()."""
    if value is None:
        return ()
    if isinstance(value, (list, tuple)) or type(value).__name__ == 'array':
        return tuple(value)
    return value


def all_parameter_specs() -> tuple[Option, ...]:
    """The tracker node's parameters (declarations with ``.name``, ``.default``, ...)."""
    return TRACKER_NODE_SCHEMA.node_options


def changed_values(params: Iterable[Any]) -> dict[str, Any]:
    """``{name: value}`` of rclpy Parameters set at run time."""
    return {p.name: plain(p.value) for p in params}
