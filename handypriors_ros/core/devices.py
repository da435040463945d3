"""Device choice for the core's tensors: ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'auto'``."""
from __future__ import annotations

import torch

from handypriors_ros.core.errors import InputError


def resolve_device(device: str | torch.device, *, allow_auto: bool = True) -> torch.device:
    """A validated torch device.

    ``'auto'`` is CUDA (torch's current device) when torch sees one, else the CPU. A CUDA
    device without an index gets torch's current one, so equal devices compare equal.

    Raises:
        InputError: not a device name, a device type other than CPU and CUDA, or CUDA
            requested where torch sees none.
    """
    if allow_auto and isinstance(device, str) and device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        choices = "'auto', 'cpu', 'cuda' or 'cuda:N'" if allow_auto else \
            "'cpu', 'cuda' or 'cuda:N'"
        raise InputError(f'device: expected {choices}, got {device!r}') from exc
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise InputError(f'device: {device!r} requested but torch sees no CUDA device')
        if dev.index is None:
            dev = torch.device('cuda', torch.cuda.current_device())
    elif dev.type != 'cpu':
        raise InputError(f"device: expected 'cpu' or 'cuda[:N]', got {device!r}")
    return dev
