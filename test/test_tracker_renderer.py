"""The tracker renders through the project's Renderer: its backend is the requested one, and
its region-of-interest render is the Renderer's z-buffer (CUDA checks where CUDA exists)."""
import numpy as np
import pytest
import torch
import trimesh

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.models.kinematics import HandKinematics
from handypriors_ros.core.models.object_model import ObjectModel
from handypriors_ros.core.render import nvdiffrast_available
from handypriors_ros.core.render.roi import make_roi
from handypriors_ros.core.tracking.tracker import ObjectTracker
from handypriors_ros.resources import default_hand_urdf
from handypriors_ros.synth.generate import GenerateConfig


@pytest.fixture(scope='module')
def parts():
    box = trimesh.creation.box((0.06, 0.04, 0.1))
    return ObjectModel.from_trimesh(box), HandKinematics.from_urdf(default_hand_urdf())


def _pose():
    T = np.eye(4)
    T[:3, 3] = [0.01, -0.02, 0.45]
    return T


def test_the_renderer_option_is_the_backend(parts):
    obj, kin = parts
    assert ObjectTracker(obj, kin, renderer='soft').scene.renderer.backend == 'soft'
    auto = ObjectTracker(obj, kin, renderer='auto').scene.renderer
    assert auto.backend == ('nvdiffrast' if auto.device.type == 'cuda' and nvdiffrast_available()
                            else 'soft')
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="^backend: 'nvdiffrast' needs a CUDA device"):
            ObjectTracker(obj, kin, renderer='nvdiffrast')


def test_the_roi_render_is_the_renderers_z_buffer(parts):
    obj, kin = parts
    scene = ObjectTracker(obj, kin, renderer='soft').scene
    cam = GenerateConfig().camera
    T = _pose()
    roi = make_roi(cam, T, scene.proxy_vertices_np, 128)
    render = scene.render(roi, T)
    raster = scene.renderer.rasterize(roi.camera, torch.as_tensor(T, dtype=torch.float32)[None])
    np.testing.assert_array_equal(render.object_visible, raster.object_visible[0].numpy())
    assert render.object_visible.sum() > 100 and not render.hand.any()


requires_nvdiffrast = pytest.mark.skipif(
    not nvdiffrast_available(), reason='needs CUDA and nvdiffrast (not on this machine)')


@requires_nvdiffrast
def test_the_nvdiffrast_roi_render_matches_the_torch_one(parts):
    obj, kin = parts
    cam = GenerateConfig().camera
    T = _pose()
    torch_scene = ObjectTracker(obj, kin, device='cuda', renderer='soft').scene
    nvd_scene = ObjectTracker(obj, kin, device='cuda', renderer='nvdiffrast').scene
    roi = make_roi(cam, T, torch_scene.proxy_vertices_np, 128)
    a, b = torch_scene.render(roi, T), nvd_scene.render(roi, T)
    differ = (a.object_visible != b.object_visible).sum()
    assert differ <= 0.02 * a.object_visible.sum()
