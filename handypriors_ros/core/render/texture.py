"""Texture lookup: bilinear sampling of an RGB image at UV coordinates.

Convention (OBJ / trimesh): ``u`` runs left to right and ``v`` bottom to top over the image,
row 0 of the image array being its top (``v = 1``). Texel (r, c) has its centre at
``u = (c + 0.5) / W``, ``v = 1 - (r + 0.5) / H``. Coordinates outside [0, 1] are clamped to the
edge texels (no wrapping).
"""

from __future__ import annotations

import torch

from handypriors_ros.core.errors import InputError


def check_texture(texture: torch.Tensor) -> None:
    """Raise InputError unless ``texture`` is an (H, W, 3) floating tensor."""
    if not isinstance(texture, torch.Tensor) or texture.dim() != 3 or texture.shape[2] != 3 \
            or not texture.is_floating_point() or texture.shape[0] < 1 or texture.shape[1] < 1:
        raise InputError(f'texture: expected a float tensor (H, W, 3), got '
                         f'{getattr(texture, "dtype", type(texture).__name__)} '
                         f'{tuple(getattr(texture, "shape", ()))}')


def sample_texture(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear texture colours at UV coordinates, differentiable w.r.t. ``uv`` and the texture.

    Args:
        texture: (H, W, 3) RGB in [0, 1], row 0 the top of the image (``v = 1``).
        uv: (..., 2) texture coordinates.
    Returns:
        (..., 3) colours, in the dtype of ``uv``.
    """
    check_texture(texture)
    if uv.shape[-1] != 2:
        raise InputError(f'uv: expected shape (..., 2), got {tuple(uv.shape)}')
    H, W, _ = texture.shape
    tex = texture.to(uv.dtype).reshape(H * W, 3)
    flat = uv.reshape(-1, 2)
    x = (flat[:, 0] * W - 0.5).clamp(0.0, W - 1.0)
    y = ((1.0 - flat[:, 1]) * H - 0.5).clamp(0.0, H - 1.0)
    x0 = torch.floor(x).clamp(max=max(W - 2, 0))
    y0 = torch.floor(y).clamp(max=max(H - 2, 0))
    fx = (x - x0)[:, None]
    fy = (y - y0)[:, None]
    xi0 = x0.long()
    yi0 = y0.long()
    xi1 = (xi0 + 1).clamp(max=W - 1)
    yi1 = (yi0 + 1).clamp(max=H - 1)
    c00 = tex.index_select(0, yi0 * W + xi0)
    c01 = tex.index_select(0, yi0 * W + xi1)
    c10 = tex.index_select(0, yi1 * W + xi0)
    c11 = tex.index_select(0, yi1 * W + xi1)
    top = c00 + (c01 - c00) * fx
    bottom = c10 + (c11 - c10) * fx
    return (top + (bottom - top) * fy).reshape(*uv.shape[:-1], 3)
