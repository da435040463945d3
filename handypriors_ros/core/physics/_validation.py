"""Argument checks shared by the physics priors: shapes, dtypes and finiteness of tensors.

Each check raises :class:`~handypriors_ros.core.errors.InputError` whose message names the
argument, what was expected and what came.
"""

from __future__ import annotations

import torch

from handypriors_ros.core.errors import InputError


def check_float_tensor(name: str, x: object, shape: tuple[int | str, ...]) -> torch.Tensor:
    """Check a floating tensor against a shape pattern and return it.

    Args:
        name: argument name for the message.
        x: the value to check.
        shape: one entry per dimension: an int must match exactly, a str is a free size (its
            letter is only used in the message).
    """
    pattern = '(' + ', '.join(str(s) for s in shape) + ')'
    if not isinstance(x, torch.Tensor):
        raise InputError(f'{name}: expected a torch.Tensor of shape {pattern}, '
                         f'got {type(x).__name__}')
    if not x.is_floating_point():
        raise InputError(f'{name}: expected a floating dtype (float32/float64), got {x.dtype}')
    if x.dim() != len(shape) or any(isinstance(s, int) and x.shape[i] != s
                                    for i, s in enumerate(shape)):
        raise InputError(f'{name}: expected shape {pattern}, got {tuple(x.shape)}')
    return x


def check_same_size(names: tuple[str, ...], tensors: tuple[torch.Tensor, ...],
                    dims: tuple[int, ...]) -> None:
    """Check that ``tensors[k].shape[:len(dims)]`` agree on the leading dims listed in ``dims``."""
    ref = tensors[0]
    for name, t in zip(names[1:], tensors[1:]):
        for d in dims:
            if t.shape[d] != ref.shape[d]:
                raise InputError(f'{name}: expected size {ref.shape[d]} in dim {d} to match '
                                 f'{names[0]} {tuple(ref.shape)}, got {tuple(t.shape)}')


def check_same_device(names: tuple[str, ...], tensors: tuple[torch.Tensor, ...]) -> None:
    """Check that all tensors live on the device of the first."""
    ref = tensors[0]
    for name, t in zip(names[1:], tensors[1:]):
        if t.device != ref.device:
            raise InputError(f'{name}: expected device {ref.device} (that of {names[0]}), '
                             f'got {t.device}')


def check_finite(name: str, x: torch.Tensor) -> None:
    """Reject NaN/Inf: they must never reach the optimiser or the filter."""
    if not bool(torch.isfinite(x).all()):
        raise InputError(f'{name}: expected finite values, got NaN or Inf')
