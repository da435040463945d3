"""NVIDIA Warp, initialised once per process (the SDF queries and the z-buffer's depth test
are Warp kernels; on the CPU Warp compiles them to native code, on a GPU to CUDA)."""

from __future__ import annotations

import threading

import torch
import warp as wp

_init_lock = threading.Lock()
_warp_ready = False


def ensure_warp() -> None:
    """Initialise Warp once per process, without its start-up banner on stdout."""
    global _warp_ready
    if _warp_ready:
        return
    with _init_lock:
        if not _warp_ready:
            level = wp.config.log_level
            wp.config.log_level = max(level, wp.LOG_WARNING)
            try:
                wp.init()
            finally:
                wp.config.log_level = level
            _warp_ready = True


def warp_device(device: torch.device):
    """The Warp device of a torch device (Warp initialised first)."""
    ensure_warp()
    return wp.device_from_torch(device)


__all__ = ['ensure_warp', 'warp_device']
