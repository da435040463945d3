"""Allegro Hand joint names, and the mapping of a JointState-like input to a model's joint vector.

Two naming schemes are in use:
- ROS 2 (the makers' current description, this package's default): ``<p>jointFK`` with finger
  F = 0 thumb, 1 index, 2 middle, 3 ring and K = 0..3 from the palm out, e.g. ``ah_joint00``.
- ROS 1 (the older ``allegro_hand_ros`` description): ``joint_0.0`` .. ``joint_15.0`` with
  index 0-3, middle 4-7, ring 8-11, thumb 12-15.

A *name map* sends incoming names to the model's joint names; names it does not list pass through
unchanged, so a map of old names still accepts the model's own names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from handypriors_ros.core.errors import InputError

#: Finger order of the ROS 2 numbering (F in ``jointFK``).
FINGERS: tuple[str, ...] = ('thumb', 'index', 'middle', 'ring')

# ROS 1 numbering: finger -> first joint number.
_ROS1_FIRST_JOINT = {'index': 0, 'middle': 4, 'ring': 8, 'thumb': 12}


def allegro_joint_names(prefix: str = 'ah_') -> tuple[str, ...]:
    """The 16 ROS 2 joint names in model order: thumb 00..03, index 10..13, middle, ring.

    Args:
        prefix: name prefix, ``'ah_'`` by default.
    Returns:
        16 names, e.g. ``('ah_joint00', ..., 'ah_joint33')``.
    """
    return tuple(f'{prefix}joint{f}{k}' for f in range(len(FINGERS)) for k in range(4))


def allegro_ros1_joint_names() -> tuple[str, ...]:
    """The 16 ROS 1 joint names in their own order: ``joint_0.0`` .. ``joint_15.0``."""
    return tuple(f'joint_{i}.0' for i in range(16))


def ros1_to_ros2_name_map(prefix: str = 'ah_') -> dict[str, str]:
    """Map of the ROS 1 names to the ROS 2 ones, e.g. ``joint_0.0 -> ah_joint10`` (index base),
    ``joint_12.0 -> ah_joint00`` (thumb base).

    Args:
        prefix: prefix of the ROS 2 names.
    Returns:
        dict of 16 entries.
    """
    return {f'joint_{_ROS1_FIRST_JOINT[finger] + k}.0': f'{prefix}joint{f}{k}'
            for f, finger in enumerate(FINGERS) for k in range(4)}


def joint_vector_from_state(names: Sequence[str], positions: Sequence[float] | np.ndarray,
                            model_joint_names: Sequence[str], *,
                            name_map: Mapping[str, str] | None = None) -> np.ndarray:
    """Reorder a JointState-like input into a model's joint vector.

    Incoming names are first renamed through ``name_map`` (names not in it are kept). Names the
    model does not have (other robots' joints) are ignored.

    Args:
        names: (N,) incoming joint names (``JointState.name``).
        positions: (N,) incoming positions [rad or m] (``JointState.position``).
        model_joint_names: (J,) the model's joint names, in model order.
        name_map: incoming name -> model name, e.g. :func:`ros1_to_ros2_name_map`.
    Returns:
        q: (J,) float64 positions in model order.
    Raises:
        InputError: lengths differ; positions are not numbers; two incoming names map to the
            same model joint; model joints are missing (named in the message); a needed
            position is NaN or infinite (named in the message).
    """
    names = list(names)
    if not all(isinstance(n, str) for n in names):
        raise InputError(f'names: expected a sequence of str, got {names!r}')
    try:
        values = np.asarray(positions, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f'positions: expected an array of numbers, got {positions!r}') from exc
    if values.ndim != 1 or values.shape[0] != len(names):
        raise InputError(f'positions: expected shape ({len(names)},) to match names, '
                         f'got {values.shape}')
    rename = name_map or {}
    index_of: dict[str, int] = {}
    for i, name in enumerate(names):
        model_name = rename.get(name, name)
        if model_name in index_of:
            raise InputError(f'names: joint {model_name!r} given twice (as '
                             f'{names[index_of[model_name]]!r} and {name!r})')
        index_of[model_name] = i
    missing = [n for n in model_joint_names if n not in index_of]
    if missing:
        inverse = {v: k for k, v in rename.items()}
        shown = [f'{n} (or {inverse[n]})' if n in inverse else n for n in missing]
        raise InputError(f'names: missing joints {", ".join(shown)}; got {names}')
    q = values[[index_of[n] for n in model_joint_names]]
    bad = ~np.isfinite(q)
    if bad.any():
        listed = ', '.join(f'{n}={v}' for n, v, b in zip(model_joint_names, q, bad) if b)
        raise InputError(f'positions: expected finite values, got NaN/Inf for {listed}')
    return q
