"""What differs between the ROS 2 distributions the package runs on: Humble, Jazzy, Kilted.

Each shim uses the distribution's own API where it exists and falls back otherwise; the choice
is made by API presence (``hasattr``), never by a version table, so a back-ported API is used
as soon as it is there. Differences (read from each distribution's sources, pinned by
test/test_compat.py):

- ``Node.add_post_set_parameters_callback``: rclpy 4.x (Humble) has only
  ``add_on_set_parameters_callback`` (called *before* the values are set, may reject them).
  :func:`add_post_set_parameters_callback` emulates the post-set call there.
- ``rclpy.parameter.Parameter.Type``: an ``IntEnum`` in Kilted, a plain ``Enum`` in Jazzy
  (measured with the ros-jazzy wheels) and before, so ``descriptor.type == Parameter.Type.X``
  (an int against an Enum) is False there. :func:`parameter_type_id` gives the integer of
  either.
- Discovery: ``ROS_AUTOMATIC_DISCOVERY_RANGE`` (Jazzy and later) is ignored by Humble, which
  has ``ROS_LOCALHOST_ONLY``. :func:`isolated_discovery_env` gives the variables for a
  distribution.
- ``launch.substitutions.FileContent`` (launch 3.x, Jazzy and later) does not exist in
  Humble's launch 1.0. :func:`file_content` gives it, or an equivalent substitution.

rclpy and launch are imported only inside the functions that need them, so importing this
module needs neither.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Distributions with ``ROS_AUTOMATIC_DISCOVERY_RANGE``; older ones use ``ROS_LOCALHOST_ONLY``.
_LOCALHOST_ONLY_DISTROS = ('humble', 'iron')


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------
def has_post_set_parameters_callback(node: Any) -> bool:
    """Whether the node's rclpy has ``add_post_set_parameters_callback`` (not Humble)."""
    return callable(getattr(node, 'add_post_set_parameters_callback', None))


def add_post_set_parameters_callback(
        node: Any, callback: Callable[[list], None]) -> Callable[[list], Any]:
    """Call ``callback(parameters)`` after parameters of ``node`` have been set.

    Jazzy and Kilted: ``node.add_post_set_parameters_callback``. Humble: an
    ``on_set_parameters`` callback that accepts the change and, once the executor runs again
    (a one-shot timer: the values are set by then), calls ``callback`` with the parameters whose
    values were set, the others (a change another callback rejected) being left out.

    Returns:
        What was registered (to remove it with the matching ``remove_*`` call).
    """
    if has_post_set_parameters_callback(node):
        node.add_post_set_parameters_callback(callback)
        return callback
    return _add_post_set_fallback(node, callback)


def _add_post_set_fallback(node: Any, callback: Callable[[list], None]) -> Callable[[list], Any]:
    """The Humble emulation of :func:`add_post_set_parameters_callback` (see there)."""
    from rcl_interfaces.msg import SetParametersResult

    def on_set(parameters: list) -> SetParametersResult:
        requested = list(parameters)

        def after() -> None:
            node.destroy_timer(timer)
            applied = [p for p in requested if node.has_parameter(p.name)
                       and _same_value(node.get_parameter(p.name).value, p.value)]
            if applied:
                callback(applied)

        timer = node.create_timer(0.0, after)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
    return on_set


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)) or hasattr(a, 'tolist'):
        return list(a if a is not None else []) == list(b if b is not None else [])
    return a == b


def parameter_type_id(kind: Any) -> int:
    """The ``rcl_interfaces/ParameterType`` integer of a ``Parameter.Type`` member (an IntEnum
    in Kilted, a plain Enum in Jazzy) or of an integer."""
    return int(getattr(kind, 'value', kind))


def same_parameter_type(a: Any, b: Any) -> bool:
    """``a == b`` for parameter types given as ``Parameter.Type`` members or integers (e.g.
    ``ParameterDescriptor.type``), on every distribution."""
    return parameter_type_id(a) == parameter_type_id(b)


# --------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------
def ros_distro(environ: dict | None = None) -> str:
    """The distribution's name from ``ROS_DISTRO`` (set by a ROS installation's setup files);
    '' when unset (the wheel venvs)."""
    return (os.environ if environ is None else environ).get('ROS_DISTRO', '').strip().lower()


def isolated_discovery_env(distro: str | None = None) -> dict[str, str]:
    """Environment variables that keep DDS discovery on this machine, for ``distro`` (default:
    :func:`ros_distro`; unset = a distribution with ``ROS_AUTOMATIC_DISCOVERY_RANGE``).

    Jazzy and later: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (their ``ROS_LOCALHOST_ONLY``
    is deprecated). Humble (and Iron): ``ROS_LOCALHOST_ONLY=1``, the only variable they read.
    """
    distro = ros_distro() if distro is None else distro.strip().lower()
    if distro in _LOCALHOST_ONLY_DISTROS:
        return {'ROS_LOCALHOST_ONLY': '1'}
    return {'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST'}


# --------------------------------------------------------------------------------------------
# launch
# --------------------------------------------------------------------------------------------
def file_content(path: Any):
    """A launch substitution for the text of the file at ``path`` (a substitution, a string or
    a list of them): ``launch.substitutions.FileContent`` where launch has it (Jazzy, Kilted),
    else an equivalent one (Humble)."""
    import launch.substitutions

    native = getattr(launch.substitutions, 'FileContent', None)
    if native is not None:
        return native(path)
    return _file_content_class()(path)


_FALLBACK_CLASS = None


def _file_content_class():
    """The fallback substitution class, made once (it subclasses launch's Substitution)."""
    global _FALLBACK_CLASS
    if _FALLBACK_CLASS is not None:
        return _FALLBACK_CLASS
    from launch.substitution import Substitution
    from launch.utilities import normalize_to_list_of_substitutions, perform_substitutions

    class FileContentFallback(Substitution):
        """The text of a file, as launch 3.x's FileContent (for Humble's launch)."""

        def __init__(self, path: Any) -> None:
            super().__init__()
            self.path = normalize_to_list_of_substitutions(path)

        def describe(self) -> str:
            return f'FileContent({" + ".join(s.describe() for s in self.path)})'

        def perform(self, context) -> str:
            file = Path(perform_substitutions(context, self.path))
            try:
                return file.read_text()
            except OSError as exc:
                raise RuntimeError(f'cannot read {file}: {exc.strerror or exc}') from exc

    _FALLBACK_CLASS = FileContentFallback
    return _FALLBACK_CLASS

