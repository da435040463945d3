"""Settings of the offline refinement: one frozen dataclass, read from ``config/refine.yaml``.

Every setting is declared once, as a field with its default, unit and description (the field's
``metadata['doc']``), and is validated in ``__post_init__`` with a message naming it. The same
declarations give the refinement job's options (:mod:`handypriors_ros.jobs.refine`: the refiner
node's ROS parameters, flattened names such as ``weights.mask``, and config/refine.yaml) and
the keys :meth:`RefineConfig.from_mapping` reads (a ROS 2 parameters file, ``refiner_node:
ros__parameters: {...}``, or a plain mapping; nested mappings and dotted names both work).

Loss terms (paper III-D; every one is per frame, averaged over the frames that have it, so the
weights do not depend on the sequence length):

- ``mask`` (eq. 2): mean over the ROI pixels of ``(S - M)^2``, S the object's soft silhouette
  hidden by the hand, M the observed mask resized into the ROI; frames without a mask skip it.
- ``rgb`` (eq. 1): mean over the observed mask's pixels of the squared colour difference
  (colours in [0, 1]) between the shaded object render and the image.
- ``penetration`` (eq. 3b): ``sum_i max(0, -phi(v_i))^2`` over the hand surface points, in mm^2.
- ``sliding`` (eq. 3a): squared distance between where a contact point of frame t-1 is at t and
  where the object's motion carries it, mean over the contact points, mm^2.
- ``smoothness`` (eq. 4) / ``acceleration`` (eq. 5): mean over object surface points of the
  squared first / second difference of their camera-frame positions, mm^2.
- ``hand_root``: ``|rho|^2 [mm^2] + |phi|^2 [deg^2]`` of the optional hand-root correction.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handypriors_ros.core.errors import InputError

#: Keys a parameters file may hold that are ROS's own, skipped.
_SKIPPED = ('use_sim_time',)


def _doc(text: str) -> dict:
    return {'doc': text}


@dataclass(frozen=True)
class LossWeights:
    """Weights lambda of the loss terms (module docstring for each term's definition/units)."""

    mask: float = field(default=1.0, metadata=_doc('weight of the silhouette loss (eq. 2)'))
    rgb: float = field(default=0.0, metadata=_doc(
        'weight of the colour loss inside the observed mask (eq. 1); 0 skips the colour render'))
    penetration: float = field(default=0.002, metadata=_doc(
        'weight of the penetration loss (eq. 3b), per mm^2'))
    sliding: float = field(default=0.001, metadata=_doc(
        'weight of the contact sliding loss (eq. 3a), per mm^2'))
    smoothness: float = field(default=0.0, metadata=_doc(
        'weight of the smoothness loss (eq. 4), per mm^2'))
    acceleration: float = field(default=0.002, metadata=_doc(
        'weight of the acceleration loss (eq. 5), per mm^2'))
    hand_root: float = field(default=0.01, metadata=_doc(
        'weight of the hand-root correction regulariser, per mm^2 / deg^2'))

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_number(f'weights.{f.name}', getattr(self, f.name), minimum=0.0)


@dataclass(frozen=True)
class RefineConfig:
    """Offline refinement settings (module docstring). Units in the names."""

    weights: LossWeights = field(default_factory=LossWeights)
    iterations: int = field(default=60, metadata=_doc(
        'Adam iterations; each renders every frame once'))
    batch_frames: int = field(default=8, metadata=_doc(
        'frames rendered together before their gradients are accumulated (memory bound)'))
    lr_translation_m: float = field(default=0.001, metadata=_doc(
        'Adam step size of the translations at the start [m]'))
    lr_rotation: float = field(default=0.004, metadata=_doc(
        'Adam step size of the 6D rotation entries at the start (~rad)'))
    lr_hand_root: float = field(default=0.0005, metadata=_doc(
        'Adam step size of the hand-root correction twist at the start [m, rad]'))
    lr_final_fraction: float = field(default=0.1, metadata=_doc(
        'step sizes decay exponentially to this fraction at the last iteration'))
    physics_warmup_fraction: float = field(default=0.3, metadata=_doc(
        'the penetration and sliding weights grow linearly from 0 to their values over this '
        'fraction of the iterations, so the images first pull a poor initial pose out of '
        'the fingers instead of the penetration prior pushing it out on the wrong side'))
    adam_beta1: float = field(default=0.9, metadata=_doc('Adam first-moment decay'))
    adam_beta2: float = field(default=0.99, metadata=_doc('Adam second-moment decay'))
    optimise_hand_root: bool = field(default=False, metadata=_doc(
        'also optimise one small correction of the hand root pose shared by all frames'))
    roi_size_px: int = field(default=128, metadata=_doc(
        'longest side of the region of interest the object is rendered in [px]'))
    roi_margin: float = field(default=0.25, metadata=_doc(
        'ROI margin around the initial projection, as a fraction of its size'))
    render_faces: int = field(default=1500, metadata=_doc(
        'the object is rendered with at most this many faces (its proxy, reduced by vertex '
        'clustering when larger; clustering rounds the corners of boxes and biases the '
        'silhouette by millimetres, so keep it at the proxy size unless time is short)'))
    light_dir_cam: tuple[float, float, float] = field(default=(0.0, 0.0, 1.0), metadata=_doc(
        'direction the light travels in the camera optical frame (colour loss)'))
    ambient: float = field(default=0.4, metadata=_doc('ambient shading of the colour render'))
    diffuse: float = field(default=0.6, metadata=_doc('diffuse shading of the colour render'))
    contact_threshold_m: float = field(default=0.005, metadata=_doc(
        'hand points closer than this to the object are contacts (sliding loss) [m]'))
    init_contact_threshold_m: float = field(default=0.008, metadata=_doc(
        'contact threshold of the quasistatic initialisation [m]'))
    near_hand_m: float = field(default=0.03, metadata=_doc(
        'initialisation without a contact fit: an object this close to the hand moves with the '
        'hand root, farther it keeps its pose [m]'))
    hand_points: int = field(default=0, metadata=_doc(
        'hand surface samples used by the physics losses (0: all of the model)'))
    object_points: int = field(default=200, metadata=_doc(
        'object surface samples of the smoothness and acceleration losses'))
    sdf_max_distance_m: float = field(default=0.05, metadata=_doc(
        'hand points farther than this from the object are not resolved by the SDF [m]'))
    checkpoint_every: int = field(default=10, metadata=_doc(
        'write a checkpoint every this many iterations (0: only at the end)'))
    output_std_m: float = field(default=0.005, metadata=_doc(
        'nominal position std written into the output covariance [m]'))
    output_std_rad: float = field(default=0.05, metadata=_doc(
        'nominal rotation std written into the output covariance [rad]'))

    def __post_init__(self) -> None:
        if not isinstance(self.weights, LossWeights):
            raise InputError(f'weights: expected LossWeights, got {type(self.weights).__name__}')
        for name in ('iterations', 'batch_frames', 'roi_size_px', 'object_points',
                     'render_faces'):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ('hand_points', 'checkpoint_every'):
            _check_int(name, getattr(self, name), minimum=0)
        if self.render_faces < 4:
            raise InputError(f'render_faces: expected >= 4, got {self.render_faces}')
        if self.roi_size_px < 16:
            raise InputError(f'roi_size_px: expected >= 16 px, got {self.roi_size_px}')
        for name in ('lr_translation_m', 'lr_rotation', 'lr_hand_root', 'contact_threshold_m',
                     'init_contact_threshold_m', 'near_hand_m', 'sdf_max_distance_m',
                     'output_std_m', 'output_std_rad'):
            _check_number(name, getattr(self, name), minimum=0.0, strict=True)
        for name in ('lr_final_fraction', 'adam_beta1', 'adam_beta2', 'ambient', 'diffuse',
                     'physics_warmup_fraction'):
            _check_number(name, getattr(self, name), minimum=0.0)
        for name in ('lr_final_fraction', 'ambient', 'diffuse', 'physics_warmup_fraction'):
            if getattr(self, name) > 1.0:
                raise InputError(f'{name}: expected a number in [0, 1], got {getattr(self, name)}')
        for name in ('adam_beta1', 'adam_beta2'):
            if not getattr(self, name) < 1.0:
                raise InputError(f'{name}: expected a number in [0, 1), got {getattr(self, name)}')
        if self.lr_final_fraction == 0:
            raise InputError('lr_final_fraction: expected a number in (0, 1], got 0')
        _check_number('roi_margin', self.roi_margin, minimum=0.0)
        light = tuple(self.light_dir_cam) if isinstance(self.light_dir_cam, (list, tuple)) else ()
        if len(light) != 3 or not all(isinstance(x, (int, float)) and math.isfinite(x)
                                      for x in light) or not any(light):
            raise InputError(f'light_dir_cam: expected three finite numbers, not all zero, got '
                             f'{self.light_dir_cam!r}')
        object.__setattr__(self, 'light_dir_cam', tuple(float(x) for x in light))
        if not isinstance(self.optimise_hand_root, bool):
            raise InputError(f'optimise_hand_root: expected a bool, got '
                             f'{self.optimise_hand_root!r}')

    # -- flattened form: ROS parameters and YAML files ------------------------------------

    def to_flat_dict(self) -> dict[str, Any]:
        """``{'weights.mask': 1.0, ..., 'iterations': 60, ...}`` (tuples as lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, LossWeights):
                for w in dataclasses.fields(value):
                    out[f'weights.{w.name}'] = getattr(value, w.name)
            else:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def describe(cls) -> dict[str, str]:
        """Flattened name -> description (with units) of every setting."""
        out = {f'weights.{f.name}': f.metadata['doc'] for f in dataclasses.fields(LossWeights)}
        for f in dataclasses.fields(cls):
            if f.name != 'weights':
                out[f.name] = f.metadata['doc']
        return out

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, base: RefineConfig | None = None,
                     source: str = 'parameters') -> RefineConfig:
        """Settings from a (nested or dotted) mapping, on top of ``base`` (default: defaults).

        A ROS 2 parameters file's structure (``node: ros__parameters: {...}``) is unwrapped;
        ROS's own parameters (``use_sim_time``) are skipped. A job's parameters file (paths,
        inputs: config/refine.yaml) is read by the job's schema
        (:func:`handypriors_ros.jobs.refine.load_refine_config`).

        Raises:
            InputError: an unknown key (named, with the known ones) or a bad value.
        """
        flat = _flatten(_unwrap_ros_parameters(values, source), source)
        base = base or cls()
        current = base.to_flat_dict()
        skipped = set(_SKIPPED)
        unknown = sorted(k for k in flat if k not in current and k not in skipped)
        if unknown:
            raise InputError(f'{source}: unknown refinement settings {unknown}; known: '
                             f'{sorted(current)}')
        weights = {}
        top: dict[str, Any] = {}
        for key, value in flat.items():
            if key in skipped:
                continue
            expected = current[key]
            value = _coerce(f'{source}: {key}', value, expected)
            if key.startswith('weights.'):
                weights[key.split('.', 1)[1]] = value
            else:
                top[key] = value
        if isinstance(top.get('light_dir_cam'), list):
            top['light_dir_cam'] = tuple(top['light_dir_cam'])
        return dataclasses.replace(base, weights=dataclasses.replace(base.weights, **weights),
                                   **top)

    @classmethod
    def from_yaml(cls, path: str | Path, *, base: RefineConfig | None = None) -> RefineConfig:
        """Settings from a YAML file (see :meth:`from_mapping`).

        Raises:
            InputError: the file is missing or not YAML, or holds a bad setting (named).
        """
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise InputError(f'params: cannot read {path}: {exc}') from exc
        except yaml.YAMLError as exc:
            raise InputError(f'params: {path} is not valid YAML: {exc}') from exc
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise InputError(f'params: expected a mapping in {path}, got {type(data).__name__}')
        return cls.from_mapping(data, base=base, source=str(path))


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f'{name}: expected an integer >= {minimum}, got {value!r}')


def _check_number(name: str, value: object, *, minimum: float, strict: bool = False) -> None:
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and (value > minimum if strict else value >= minimum))
    if not ok:
        relation = '>' if strict else '>='
        raise InputError(f'{name}: expected a finite number {relation} {minimum:g}, got {value!r}')


def _unwrap_ros_parameters(values: Mapping[str, Any], source: str) -> Mapping[str, Any]:
    """The ``ros__parameters`` mapping of a ROS 2 parameters file, or ``values`` itself."""
    if not isinstance(values, Mapping):
        raise InputError(f'{source}: expected a mapping, got {type(values).__name__}')
    nodes = [v for v in values.values()
             if isinstance(v, Mapping) and 'ros__parameters' in v]
    if not nodes:
        return values
    if len(nodes) != len(values):
        raise InputError(f'{source}: mixes ROS node sections with other keys: {sorted(values)}')
    merged: dict[str, Any] = {}
    for node in nodes:
        params = node['ros__parameters'] or {}
        if not isinstance(params, Mapping):
            raise InputError(f'{source}: ros__parameters must be a mapping')
        merged.update(params)
    return merged


def _flatten(values: Mapping[str, Any], source: str, prefix: str = '') -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise InputError(f'{source}: expected string keys, got {key!r}')
        name = f'{prefix}{key}'
        if isinstance(value, Mapping):
            out.update(_flatten(value, source, f'{name}.'))
        else:
            out[name] = value
    return out


def _coerce(name: str, value: Any, expected: Any) -> Any:
    """``value`` as the type of the default ``expected`` (ints accepted for floats)."""
    if isinstance(expected, bool):
        if not isinstance(value, bool):
            raise InputError(f'{name}: expected true or false, got {value!r}')
        return value
    if isinstance(expected, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f'{name}: expected an integer, got {value!r}')
        return value
    if isinstance(expected, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f'{name}: expected a number, got {value!r}')
        return float(value)
    if isinstance(expected, list):
        if not isinstance(value, (list, tuple)) or len(value) != len(expected) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
            raise InputError(f'{name}: expected a list of {len(expected)} numbers, got {value!r}')
        return [float(x) for x in value]
    return value
