"""One schema per job (jobs.schema): the command line, the parameters files and the YAML defaults
made from the same declarations; the stable command-line flags of INTERFACES.md."""
import argparse

import pytest
import yaml

from handypriors_ros.core.errors import InputError
from handypriors_ros.jobs.options import resolve_device
from handypriors_ros.jobs.refine import REFINE_SCHEMA, RefineJob
from handypriors_ros.jobs.schema import Option, Schema
from handypriors_ros.jobs.track import TRACK_SCHEMA, TrackJob

SCHEMA = Schema('demo', (
    Option('bag', 'str', '', 'input bag', cli='BAG', required=True, node=False),
    Option('scale', 'float', 1.0, 'scale [1]', range=(0.001, 10.0), cli='--scale'),
    Option('mode', 'str', 'live', 'mode', choices=('live', 'replay'), offline=False),
    Option('weights.mask', 'float', 1.0, 'weight', group='settings'),
    Option('names', 'str_list', (), 'names'),
    Option('pose', 'float_list', (), 'pose [m]', cli='--pose'),
    Option('overwrite', 'bool', False, 'replace', cli='--overwrite'),
))


def _parse(schema, argv):
    parser = argparse.ArgumentParser()
    schema.add_arguments(parser)
    return schema.values_from_args(parser.parse_args(argv))


def test_defaults_then_file_then_flags(tmp_path):
    assert _parse(SCHEMA, ['b']) == {'bag': 'b', 'scale': 1.0, 'mode': 'live',
                                     'weights.mask': 1.0, 'names': (), 'pose': (),
                                     'overwrite': False}
    params = tmp_path / 'p.yaml'
    params.write_text('some_node:\n  ros__parameters:\n    scale: 2\n    weights: {mask: 0.5}\n'
                      '    names: [a, b]\n    use_sim_time: true\n')
    values = _parse(SCHEMA, ['b', '--params', str(params)])
    assert (values['scale'], values['weights.mask'], values['names']) == (2.0, 0.5, ('a', 'b'))
    values = _parse(SCHEMA, ['b', '--params', str(params), '--scale', '3', '--overwrite',
                             '--pose', '1, 2 3'])
    assert (values['scale'], values['overwrite'], values['pose']) == (3.0, True, (1.0, 2.0, 3.0))
    assert SCHEMA.live_only_set({**values, 'mode': 'replay'}) == ["mode='replay'"]


@pytest.mark.parametrize('argv, text, match', [
    (['--scale', 'x'], None, "--scale: expected a number, got 'x'"),
    (['--scale', '20'], None, r'--scale: expected a value in \[0.001, 10\], got 20.0'),
    ([], 'scales: 2\n', r"unknown demo parameters \['scales'\]; known: \['bag', 'mode', "
                        r"'names', 'overwrite', 'pose', 'scale', 'weights.mask'\]"),
    ([], 'mode: fast\n', r"mode: expected one of \['live', 'replay'\], got 'fast'"),
    ([], 'names: a\n', 'names: expected a list'),
    ([], 'scale: [1\n', 'not valid YAML'),
    ([], 'a: {ros__parameters: {}}\nb: 1\n', 'mixes ROS node sections with other keys'),
])
def test_errors_name_the_flag_or_key(tmp_path, argv, text, match):
    if text is not None:
        params = tmp_path / 'p.yaml'
        params.write_text(text)
        argv = argv + ['--params', str(params)]
    with pytest.raises(InputError, match=match):
        _parse(SCHEMA, ['b', *argv])


def test_required_values_and_declarations():
    with pytest.raises(InputError, match=r"bag: expected a path, got '' \(required"):
        SCHEMA.validate({})
    with pytest.raises(InputError, match='the default of x: expected one of'):
        Option('x', 'str', 'c', 'x', choices=('a', 'b'))
    with pytest.raises(ValueError, match='declared twice'):
        Schema('twice', (Option('x', 'int', 1, 'x'), Option('x', 'int', 2, 'x')))
    with pytest.raises(InputError, match="x: not a parameter of demo"):
        SCHEMA.check_change('x')
    with pytest.raises(InputError, match='scale: read-only'):
        SCHEMA.check_change('scale')


def test_defaults_yaml_reads_back_as_the_defaults():
    text = SCHEMA.defaults_yaml(['header'])
    values = yaml.safe_load(text)['/**']['ros__parameters']
    assert 'bag' not in values  # not a node parameter
    assert SCHEMA.validate_partial(values) == {k: v for k, v in SCHEMA.defaults().items()
                                               if k != 'bag'}
    assert '# --- settings ---' in text and '(one of: live, replay)' in text


@pytest.mark.parametrize('schema, flags', [
    (TRACK_SCHEMA, {'--object', '--out', '--params', '--initial-pose', '--object-scale',
                    '--device', '--overwrite', '--quiet'}),
    (REFINE_SCHEMA, {'--object', '--out', '--init', '--params', '--initial-pose',
                     '--object-scale', '--device', '--report', '--checkpoint', '--resume',
                     '--ground-truth', '--hand-urdf', '--object-frame', '--iterations',
                     '--overwrite', '--quiet'}),
])
def test_the_stable_command_line_flags_exist(schema, flags):
    parser = argparse.ArgumentParser()
    schema.add_arguments(parser)
    assert flags <= set(parser._option_string_actions)
    assert [a.metavar for a in parser._actions if not a.option_strings] == ['BAG']


def test_track_and_refine_jobs_from_the_command_line(tmp_path):
    track = TrackJob.from_values(_parse(TRACK_SCHEMA, [
        'in', '--object', 'm.ply', '--out', 'o', '--object-scale', '0.001', '--device', 'cpu',
        '--initial-pose', '0 0 0.5 0 0 0 1']))
    assert track.options.object_scale == 0.001 and track.options.device == 'cpu'
    assert track.options.mode == 'replay' and not track.options.publish_markers
    assert track.options.initial_pose == (0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 1.0)
    refine = RefineJob.from_values(_parse(REFINE_SCHEMA, [
        'in', '--object', 'm.ply', '--out', 'o', '--iterations', '7', '--device', 'cpu']))
    assert refine.config.iterations == 7 and refine.device == 'cpu'
    with pytest.raises(InputError, match="device: expected one of"):
        _parse(REFINE_SCHEMA, ['in', '--object', 'm.ply', '--out', 'o', '--device', 'tpu'])


def test_device_resolution():
    import torch
    assert resolve_device('cpu') == 'cpu'
    assert resolve_device('auto') == ('cuda' if torch.cuda.is_available() else 'cpu')
    if torch.cuda.is_available():
        assert resolve_device('cuda') == 'cuda'
    else:
        with pytest.raises(InputError, match="device: 'cuda' requested but"):
            resolve_device('cuda')
