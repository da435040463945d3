"""Textured and coloured meshes: the loader keeps UV + texture / PLY colours, and the
renderer's colour samples the texture (bilinear) at the rasterized UV."""
import warnings

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.geometry import make_transform
from handypriors_ros.core.models.object_model import ObjectModel
from handypriors_ros.core.render import PinholeCamera, Renderer, RenderMesh, RenderSettings
from handypriors_ros.core.render.texture import sample_texture

CAM = PinholeCamera(200.0, 200.0, 31.5, 31.5, 64, 64)
QUADRANTS = {  # texture quadrant -> colour (uint8); row 0 of the image is the top (v = 1)
    'top_left': (255, 0, 0), 'top_right': (0, 255, 0),
    'bottom_left': (0, 0, 255), 'bottom_right': (255, 255, 0),
}


def quadrant_texture() -> np.ndarray:
    """8x8 image, each 4x4 quadrant one colour (so bilinear lookups inside a quadrant are
    exact)."""
    img = np.zeros((8, 8, 3), np.uint8)
    img[:4, :4] = QUADRANTS['top_left']
    img[:4, 4:] = QUADRANTS['top_right']
    img[4:, :4] = QUADRANTS['bottom_left']
    img[4:, 4:] = QUADRANTS['bottom_right']
    return img


def write_textured_quad(folder) -> str:
    """A 0.1 m square in the object's z = 0 plane, facing -z (towards a camera on -z), with UV
    (0, 0) at its (-x, +y) corner... written as OBJ + MTL + PNG by trimesh."""
    h = 0.05
    # image x (u) grows with object x; image top (v = 1) at object y = -h (camera y is down).
    vertices = np.array([[-h, -h, 0.0], [h, -h, 0.0], [h, h, 0.0], [-h, h, 0.0]])
    uv = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    faces = np.array([[0, 2, 1], [0, 3, 2]])  # normal -z: faces the camera at -z
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    mesh.visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(quadrant_texture()))
    path = str(folder / 'quad.obj')
    mesh.export(path)
    return path


def test_textured_obj_renders_its_texture_colours(tmp_path):
    path = write_textured_quad(tmp_path)
    assert (tmp_path / 'material_0.png').exists() or list(tmp_path.glob('*.png'))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # an open quad: "not watertight"
        model = ObjectModel.from_file(path)
    mesh = RenderMesh.from_object_model(model)
    assert mesh.textured and mesh.texture.shape == (8, 8, 3)
    # object frame = camera frame shifted 0.5 m forward: the quad spans 20 px each side
    T = make_transform(torch.eye(3), torch.tensor([0.0, 0.0, 0.5]))[None].float()
    r = Renderer(mesh, backend='soft', settings=RenderSettings(antialias=False))
    out = r.render(CAM, T)
    scene = r.render_scene(CAM, T)
    # quad covers u, v in [31.5 - 20, 31.5 + 20]; quadrant centres at +-10 px
    expect = {(21, 21): 'top_left', (41, 21): 'top_right', (21, 41): 'bottom_left',
              (41, 41): 'bottom_right'}
    for (u, v), name in expect.items():
        colour = np.array(QUADRANTS[name]) / 255.0
        np.testing.assert_allclose(out.object_rgb[0, v, u].numpy(), colour, atol=1e-5)
        np.testing.assert_allclose(scene.rgb[0, v, u].numpy(), colour, atol=1e-5)
    # outside the quad: background
    np.testing.assert_allclose(out.object_rgb[0, 2, 2].numpy(), [0.0, 0.0, 0.0])
    # the texture differs from the per-vertex bake: a vertex-coloured render of the same mesh
    # blends the four corner colours instead
    plain = Renderer(RenderMesh.from_arrays(mesh.vertices, mesh.faces, mesh.vertex_colors),
                     backend='soft').render(CAM, T)
    assert not np.allclose(plain.object_rgb[0, 21, 21].numpy(),
                           np.array(QUADRANTS['top_left']) / 255.0, atol=0.05)


def test_sample_texture_is_bilinear_between_texel_centres():
    tex = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.5, 0.0]]])  # 1 x 2 texels
    # texel centres at u = 0.25 and 0.75; halfway between: the mean; outside: clamped
    uv = torch.tensor([[0.25, 0.5], [0.75, 0.5], [0.5, 0.5], [0.0, 0.5], [1.5, 0.2]])
    got = sample_texture(tex, uv)
    want = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.5, 0.25, 0.0], [0.0, 0.0, 0.0],
                         [1.0, 0.5, 0.0]])
    torch.testing.assert_close(got, want)
    # gradient w.r.t. u between the centres: (1.0 - 0.0) * W = 2 per unit u for red
    uv = torch.tensor([[0.4, 0.5]], requires_grad=True)
    sample_texture(tex, uv)[0, 0].backward()
    assert uv.grad[0, 0].item() == pytest.approx(2.0)


def test_coloured_ply_keeps_its_colours_in_the_render(tmp_path):
    box = trimesh.creation.box((0.1, 0.1, 0.1))
    box.visual.vertex_colors = np.tile([30, 200, 90, 255], (len(box.vertices), 1))
    path = tmp_path / 'box.ply'
    box.export(path)
    model = ObjectModel.from_file(path)
    mesh = RenderMesh.from_object_model(model)
    assert not mesh.textured
    T = make_transform(torch.eye(3), torch.tensor([0.0, 0.0, 0.5]))[None].float()
    out = Renderer(mesh, backend='soft').render(CAM, T)
    # the stored colour times one Lambertian factor (the box's smooth corner normals make it
    # < 1): the channel ratios are the stored ones
    rgb = out.object_rgb[0, 31, 31].numpy().astype(np.float64)
    stored = np.array([30, 200, 90]) / 255
    factor = rgb[1] / stored[1]
    assert 0.4 <= factor <= 1.0
    np.testing.assert_allclose(rgb, factor * stored, atol=1e-5)


def test_texture_arguments_are_checked():
    v = np.eye(3)
    f = np.array([[0, 1, 2]])
    with pytest.raises(InputError, match='^uv, texture: expected both'):
        RenderMesh.from_arrays(v, f, uv=np.zeros((3, 2)))
    with pytest.raises(InputError, match=r'^uv: expected shape \(3, 2\)'):
        RenderMesh.from_arrays(v, f, uv=np.zeros((4, 2)), texture=np.zeros((2, 2, 3)))
    with pytest.raises(InputError, match='^texture: expected an image'):
        RenderMesh.from_arrays(v, f, uv=np.zeros((3, 2)), texture=np.zeros((2, 2)))
