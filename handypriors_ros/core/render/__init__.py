"""The project's one renderer and the rendering priors: camera model, rasterizers, renderer,
image losses, regions of interest and outlines.

Conventions: camera optical frame (x right, y down, z forward), pixel (i, j) centred at
``(u, v) = (i, j)`` as in OpenCV, batch first, float32 by default. See ``camera`` for the one
optical-to-clip-space conversion. nvdiffrast is imported only when its backend is used.
"""

from handypriors_ros.core.render.antialias import antialias_silhouette
from handypriors_ros.core.render.camera import (
    CameraBatch,
    PinholeCamera,
    Undistorter,
    clip_to_optical,
    ndc_to_pixels,
    optical_to_clip,
)
from handypriors_ros.core.render.contour import (
    ContourSamples,
    bilinear_gradient,
    bilinear_sample,
    contour_points,
    contour_points_jacobian,
    select_contour_samples,
    signed_distance_transform,
)
from handypriors_ros.core.render.hard_rasterizer import HardRaster, interpolate, rasterize_hard
from handypriors_ros.core.render.losses import (
    ContourResidual,
    contour_residual,
    mask_loss,
    rgb_loss,
)
from handypriors_ros.core.render.mesh import (
    RenderMesh,
    face_normals,
    front_facing,
    vertex_normals,
)
from handypriors_ros.core.render.overlay import draw_outline, outline_mask
from handypriors_ros.core.render.renderer import (
    RenderOutput,
    Renderer,
    RenderSettings,
    SceneRaster,
    SceneRender,
    nvdiffrast_available,
)
from handypriors_ros.core.render.roi import RoiView, make_roi
from handypriors_ros.core.render.texture import sample_texture

__all__ = [
    'RoiView',
    'draw_outline',
    'make_roi',
    'outline_mask',
    'CameraBatch',
    'SceneRaster',
    'antialias_silhouette',
    'ContourResidual',
    'ContourSamples',
    'HardRaster',
    'PinholeCamera',
    'RenderMesh',
    'RenderOutput',
    'RenderSettings',
    'Renderer',
    'SceneRender',
    'Undistorter',
    'bilinear_gradient',
    'bilinear_sample',
    'clip_to_optical',
    'contour_points',
    'contour_points_jacobian',
    'contour_residual',
    'face_normals',
    'front_facing',
    'interpolate',
    'mask_loss',
    'ndc_to_pixels',
    'nvdiffrast_available',
    'optical_to_clip',
    'rasterize_hard',
    'rgb_loss',
    'sample_texture',
    'select_contour_samples',
    'signed_distance_transform',
    'vertex_normals',
]
