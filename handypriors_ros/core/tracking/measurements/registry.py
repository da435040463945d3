"""The measurement registry: name -> :class:`Measurement` subclass.

``TrackerConfig.measurements`` names the measurements a tracker uses, in the order its step
applies them; :func:`build_measurements` makes them. A new observation type is a module with
its subclass and one line in ``_BUILTIN`` (or, outside this package, one
:func:`register_measurement` call before the config is made).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.tracking.measurements.appearance import Appearance
from handypriors_ros.core.tracking.measurements.base import Measurement
from handypriors_ros.core.tracking.measurements.center import ObjectCenter
from handypriors_ros.core.tracking.measurements.contour import Contour
from handypriors_ros.core.tracking.measurements.fingertip import FingertipContact
from handypriors_ros.core.tracking.measurements.penetration import HandPenetration

if TYPE_CHECKING:
    from handypriors_ros.core.tracking.config import TrackerConfig

_BUILTIN: tuple[type[Measurement], ...] = (
    ObjectCenter,
    Contour,
    FingertipContact,
    Appearance,
    HandPenetration,
)

_REGISTRY: dict[str, type[Measurement]] = {cls.name: cls for cls in _BUILTIN}

#: The built-in measurement names, in their default order.
BUILTIN_MEASUREMENTS: tuple[str, ...] = tuple(cls.name for cls in _BUILTIN)


def register_measurement(cls: type[Measurement], *, replace: bool = False
                         ) -> type[Measurement]:
    """Register a :class:`Measurement` subclass under its ``name`` (usable as a decorator).

    Raises:
        InputError: not a Measurement subclass, no ``name``, or the name is taken (unless
            ``replace``).
    """
    if not (isinstance(cls, type) and issubclass(cls, Measurement)):
        raise InputError(f'cls: expected a Measurement subclass, got {cls!r}')
    name = getattr(cls, 'name', None)
    if not isinstance(name, str) or not name:
        raise InputError(f'cls: expected a non-empty str class attribute name, got {name!r}')
    if name in _REGISTRY and _REGISTRY[name] is not cls and not replace:
        raise InputError(f'cls: measurement name {name!r} is already registered by '
                         f'{_REGISTRY[name].__qualname__}')
    _REGISTRY[name] = cls
    return cls


def unregister_measurement(name: str) -> None:
    """Remove a registered measurement (not a built-in one)."""
    if name in BUILTIN_MEASUREMENTS:
        raise InputError(f'name: {name!r} is a built-in measurement; it cannot be removed')
    _REGISTRY.pop(name, None)


def measurement_names() -> tuple[str, ...]:
    """Every registered name (built-ins first, then in registration order)."""
    return tuple(_REGISTRY)


def build_measurements(names: Sequence[str], config: TrackerConfig) -> list[Measurement]:
    """One new measurement object per name, in the given order.

    Raises:
        InputError: an unknown name.
    """
    unknown = [n for n in names if n not in _REGISTRY]
    if unknown:
        raise InputError(f'measurements: unknown {sorted(unknown)}; choose from '
                         f'{measurement_names()}')
    return [_REGISTRY[n](config) for n in names]
