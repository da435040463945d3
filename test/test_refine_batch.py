"""``handypriors refine-batch``: the bags of a batch refined on a local Ray (2 workers) give the
results of sequential ``handypriors refine``; a broken bag is reported and the others finish;
a batch interrupted with Ctrl-C resumes (finished bags skipped, the others from their
checkpoints) to the same results; the manifest, the objects map, the names and the parameters
file; Ray is not imported by the command line's help or the tracker node."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from ros_helpers.synthetic import tiny_config, tiny_sequence

from handypriors_ros.core.errors import InputError
from handypriors_ros.jobs.batch import (BATCH_SCHEMA, PER_BAG, BagSpec, BatchJob, bag_names,
                                        match_object, plan_bags, probe_address,
                                        read_batch_params, read_manifest, read_objects_map,
                                        run_batch)
from handypriors_ros.jobs.refine import REFINE_SCHEMA

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {'iterations': 12, 'hand_points': 300, 'object_points': 100, 'checkpoint_every': 2}


def _values(**given):
    return BATCH_SCHEMA.validate({'out_dir': 'out', **given})


# -- without Ray ---------------------------------------------------------------------------------
def test_ray_is_not_imported_by_the_help_or_the_tracker():
    code = ('import sys, contextlib, io\n'
            'from handypriors_ros.cli.main import main\n'
            'for argv in (["--help"], ["refine-batch", "--help"]):\n'
            '    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n'
            '        main(argv)\n'
            'import handypriors_ros.ros.tracker_node\n'
            'import handypriors_ros.jobs.batch\n'
            'print(sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.")))\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         env=_env(), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == '[]'


def test_the_batch_schema_is_the_refine_schema_less_the_per_bag_options():
    refine_only = set(REFINE_SCHEMA.by_name) - set(BATCH_SCHEMA.by_name)
    assert refine_only == set(PER_BAG)
    for name in ('iterations', 'weights.mask', 'device', 'hand_urdf', 'object_scale'):
        assert BATCH_SCHEMA[name] == REFINE_SCHEMA[name]
    assert REFINE_SCHEMA['object_mesh'].required and not BATCH_SCHEMA['object_mesh'].required
    with pytest.raises(ValueError, match=r"no options \['nope'\]"):
        REFINE_SCHEMA.derive('x', drop=('nope',))


def test_a_refine_parameters_file_is_a_batch_parameters_file(tmp_path):
    values = read_batch_params(ROOT / 'config' / 'refine.yaml')  # every refine option in it
    assert values['iterations'] == REFINE_SCHEMA['iterations'].default
    assert not set(values) & set(PER_BAG)
    own = tmp_path / 'own.yaml'
    own.write_text('iterations: 7\ncpus_per_task: 2\n')
    assert read_batch_params(own) == {'iterations': 7, 'cpus_per_task': 2.0}
    per_bag = tmp_path / 'bag.yaml'
    per_bag.write_text('bag: /data/x\n')
    with pytest.raises(InputError, match='bag is set per bag by refine-batch'):
        read_batch_params(per_bag)
    unknown = tmp_path / 'unknown.yaml'
    unknown.write_text('iteratons: 3\n')
    with pytest.raises(InputError, match=r"unknown refine-batch parameters \['iteratons'\]"):
        read_batch_params(unknown)


def test_names_tell_bags_apart():
    assert bag_names([Path('/d/seq1/bag'), Path('/d/seq2/bag'), Path('/e/run.mcap')]) == [
        'seq1_bag', 'seq2_bag', 'run']
    assert bag_names([Path('/a/x/bag'), Path('/b/x/bag')]) == ['a_x_bag', 'b_x_bag']
    with pytest.raises(InputError, match='bag /d/bag is listed twice'):
        bag_names([Path('/d/bag'), Path('/d/bag')])
    with pytest.raises(InputError, match="two bags would both be named 'd_a'"):
        bag_names([Path('/d/a.mcap'), Path('/d/a.db3')])


def test_manifest_and_objects_map(tmp_path):
    (tmp_path / 'm').mkdir()
    mesh, other = tmp_path / 'm' / 'bottle.ply', tmp_path / 'm' / 'drill.ply'
    mesh.write_text('x')
    other.write_text('x')
    csv_file = tmp_path / 'bags.csv'
    csv_file.write_text('bag,object,init,name\n# a comment\nruns/a,m/drill.ply,,\n'
                        'runs/b,,tracks/b,bee\n/abs/c,,,\n')
    specs = read_manifest(csv_file)
    assert specs == [BagSpec('', tmp_path / 'runs/a', other, None),
                     BagSpec('bee', tmp_path / 'runs/b', None, tmp_path / 'tracks/b'),
                     BagSpec('', Path('/abs/c'), None, None)]
    yaml_file = tmp_path / 'bags.yaml'
    yaml_file.write_text(yaml.safe_dump({'bags': ['runs/a', {'bag': 'runs/b', 'name': 'bee',
                                                             'init': 'tracks/b',
                                                             'object': 'm/drill.ply'}]}))
    assert read_manifest(yaml_file)[1] == BagSpec('bee', tmp_path / 'runs/b', other,
                                                  tmp_path / 'tracks/b')
    objects = tmp_path / 'objects.yaml'
    objects.write_text('"drill_*": m/drill.ply\n"*/runs/*": m/bottle.ply\n')
    pairs = read_objects_map(objects)
    assert pairs == [('drill_*', other), ('*/runs/*', mesh)]
    assert match_object(pairs, BagSpec('drill_3', Path('/x/y'))) == other
    assert match_object(pairs, BagSpec('a', tmp_path / 'runs' / 'a')) == mesh
    assert match_object(pairs, BagSpec('a', Path('/x/y'))) is None

    with pytest.raises(InputError, match=r'bag c \(/abs/c\): no object mesh; give --object'):
        plan_bags(_values(manifest=str(csv_file), objects_map=str(objects)))
    planned = plan_bags(_values(manifest=str(csv_file), objects_map=str(objects),
                                object_mesh=str(mesh)))
    assert [(s.name, s.object_mesh) for s in planned] == [('a', other), ('bee', mesh),
                                                          ('c', mesh)]

    for text, match in (('- {bag: a, mesh: b}\n', r"entry 1: unknown keys \['mesh'\]"),
                        ('- {object: b}\n', 'entry 1: no bag'), ('a: [\n', 'not valid YAML'),
                        ('[]\n', 'no bags in it')):
        bad = tmp_path / 'bad.yaml'
        bad.write_text(text)
        with pytest.raises(InputError, match=match):
            read_manifest(bad)
    objects.write_text('"*": m/none.ply\n')
    with pytest.raises(InputError, match=r'\*: mesh file not found: .*none.ply'):
        read_objects_map(objects)
    with pytest.raises(InputError, match='no bags: give BAG'):
        plan_bags(_values(object_mesh=str(mesh)))


def test_batch_options_are_checked_before_anything_runs(tmp_path):
    mesh = tmp_path / 'o.ply'
    mesh.write_text('x')
    base = {'bags': ('b1',), 'object_mesh': str(mesh), 'out_dir': str(tmp_path / 'out')}
    with pytest.raises(InputError, match='--resume and --overwrite: choose one'):
        BatchJob.from_values({**base, 'resume': True, 'overwrite': True})
    with pytest.raises(InputError, match='--num-cpus sizes a local Ray'):
        BatchJob.from_values({**base, 'address': 'auto', 'num_cpus': 2})
    with pytest.raises(InputError, match=r'cpus_per_task: expected a value in \[0.01'):
        BatchJob.from_values({**base, 'cpus_per_task': 0.0})
    with pytest.raises(InputError, match='--device cuda: give --gpus-per-task'):
        BatchJob.from_values({**base, 'device': 'cuda'})
    with pytest.raises(InputError, match='--gpus-per-task 1 with --device cpu'):
        BatchJob.from_values({**base, 'device': 'cpu', 'gpus_per_task': 1})
    with pytest.raises(InputError, match='--address head: expected auto, HEAD_IP:PORT'):
        BatchJob.from_values({**base, 'address': 'head'})
    import socket
    with socket.socket() as s:  # a port nothing listens on
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    with pytest.raises(InputError, match=f'ray://127.0.0.1:{port}: nothing answers at '
                                         f'127.0.0.1:{port} .*ray start --head'):
        probe_address(f'ray://127.0.0.1:{port}', timeout_s=2)
    job = BatchJob.from_values({**base, 'iterations': 3})
    assert job.task(job.bags[0]).gpus == 0
    values = job.bag_values(job.bags[0])
    assert values['out_bag'] == str(tmp_path / 'out' / 'b1') and values['iterations'] == 3
    # an output folder holding this batch's outputs is refused without --resume/--overwrite
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'b1.done.json').write_text('{}')
    with pytest.raises(InputError, match='holds outputs of this batch .*--resume continues'):
        run_batch(job)
    assert (tmp_path / 'out' / 'b1.done.json').read_text() == '{}'


def test_a_bag_runs_the_refine_job_on_the_cpu_unless_ray_gave_it_a_gpu(tmp_path, monkeypatch):
    from handypriors_ros.jobs import batch

    mesh = tmp_path / 'o.ply'
    mesh.write_text('x')
    seen = []

    def refine_job(job, *, warn, resume, fresh):  # stands in for run_refine: what a task asks
        assert fresh is not resume
        seen.append((job.device, resume, job.out_bag, job.config.iterations))
        raise InputError('stopped here')

    monkeypatch.setattr(batch, 'run_refine', refine_job)
    for gpus, device, resume in ((0.0, 'auto', False), (0.5, 'auto', True), (1.0, 'cuda', True)):
        job = BatchJob.from_values({'bags': ('b1',), 'object_mesh': str(mesh), 'iterations': 5,
                                    'out_dir': str(tmp_path / 'out'), 'device': device,
                                    'gpus_per_task': gpus, 'resume': resume})
        record = batch.refine_bag(job.task(job.bags[0]))
        assert record['status'] == 'failed' and record['reason'] == 'stopped here'
        assert seen.pop() == ('cpu' if gpus == 0 else device, resume, tmp_path / 'out' / 'b1', 5)
    assert not (tmp_path / 'out' / 'b1.done.json').exists()


# -- on a local Ray with 2 workers ---------------------------------------------------------------
def _need_ray():
    import importlib.util
    if importlib.util.find_spec('ray') is None:  # not imported here: the batch runs it
        pytest.skip('Ray is not installed (requirements.txt: ray[client])')


def _env():
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(ROOT), env.get('PYTHONPATH', '')])
    return env


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    """Three small generated sequences (seq0 is the shared tiny sequence) and a parameters
    file; their sequential ``handypriors refine`` results."""
    pytest.importorskip('rclpy', reason='rclpy is not installed (./run.sh test)')
    from handypriors_ros.synth.generate import generate

    root = tmp_path_factory.mktemp('batch')
    seqs = {'seq0': tiny_sequence(tmp_path_factory)}
    for i in (1, 2):
        generate(tiny_config(seed=3 + i), root / f'seq{i}', overwrite=True)
        seqs[f'seq{i}'] = root / f'seq{i}'
    params = root / 'params.yaml'
    params.write_text(yaml.safe_dump({'/**': {'ros__parameters': SETTINGS}}))
    from handypriors_ros.cli.main import main
    refs = {}
    for name, folder in seqs.items():
        out = root / 'sequential' / name
        assert main(['refine', str(folder / 'bag'), '--object', str(folder / 'object.ply'),
                     '--out', str(out), '--params', str(params), '--quiet']) == 0
        refs[name] = _poses(out)
    return {'root': root, 'seqs': seqs, 'params': params, 'refs': refs,
            'mesh': seqs['seq0'] / 'object.ply'}


def _poses(bag):
    from handypriors_ros import interfaces
    from handypriors_ros.bag import BagReader
    from handypriors_ros.ros.conversions import pose_to_matrix
    with BagReader(bag) as reader:
        return np.stack([pose_to_matrix(m.deserialize().pose.pose)
                         for m in reader.messages([interfaces.OBJECT_POSE_TOPIC])])


def _batch(args, **popen):
    return subprocess.Popen([sys.executable, '-m', 'handypriors_ros.cli.main', 'refine-batch',
                             *map(str, args), '--num-cpus', '2'], env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def _finish(proc, timeout=240):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_parallel_batch_equals_sequential_refine_and_a_broken_bag_is_reported(bags, tmp_path):
    _need_ray()
    broken = tmp_path / 'broken' / 'bag'
    shutil.copytree(bags['seqs']['seq1'] / 'bag', broken)
    mcap = next(broken.glob('*.mcap'))
    mcap.write_bytes(mcap.read_bytes()[:mcap.stat().st_size // 8])  # before the first image
    manifest = tmp_path / 'bags.csv'
    rows = [f'{folder / "bag"},,{name}' for name, folder in bags['seqs'].items()]
    manifest.write_text('bag,init,name\n' + '\n'.join(rows[:2] + [f'{broken},,broken']
                                                       + rows[2:]) + '\n')
    objects = tmp_path / 'objects.yaml'
    objects.write_text(yaml.safe_dump({'*': str(bags['mesh'])}))
    out = tmp_path / 'out'
    code, stdout, stderr = _finish(_batch(['--manifest', manifest, '--objects-map', objects,
                                           '--out', out, '--params', bags['params']]))
    assert code == 1, stderr[-3000:]
    assert 'started a local Ray: 2 CPUs' in stderr
    assert '4/4 bags (1 failed)' in stderr and 'ETA' in stderr
    assert '3 refined, 0 finished earlier, 1 failed' in stdout
    (line,) = [x for x in stdout.splitlines() if x.startswith('  broken: failed: ')]
    assert 'expected messages on /camera/camera/color/image_raw' in line

    for name, ref in bags['refs'].items():
        np.testing.assert_array_equal(_poses(out / name), ref)  # the same job, bit for bit
        done = json.loads((out / f'{name}.done.json').read_text())
        assert done['status'] == 'ok' and done['frames'] == len(ref)
        assert done['iterations'] == SETTINGS['iterations']
        assert set(done['final_losses']) and done['resumed_from_iteration'] is None
        assert not (out / f'{name}.checkpoint').exists()
    summary = json.loads((out / 'summary.json').read_text())
    assert [(b['name'], b['status']) for b in summary['bags']] == [
        ('seq0', 'ok'), ('seq1', 'ok'), ('broken', 'failed'), ('seq2', 'ok')]
    assert summary['totals']['ok'] == 3 and summary['totals']['failed'] == 1
    assert summary['ray']['cpus'] == 2 and summary['totals']['bags_per_minute'] > 0
    assert 'expected messages on' in summary['bags'][2]['reason']
    assert not (out / 'broken').exists() and not (out / 'broken.done.json').exists()
    md = (out / 'summary.md').read_text()
    assert '| broken | failed |' in md and '| seq2 | ok | 6 |' in md
    assert not list(out.glob('.*'))  # no temporary file left


def test_an_interrupted_batch_resumes_to_the_same_results(bags, tmp_path, capsys):
    ray_before = 'ray' in sys.modules
    _need_ray()
    out = tmp_path / 'out'
    paths = [bags['seqs'][n] / 'bag' for n in ('seq0', 'seq1', 'seq2')]
    refs = dict(zip(bag_names(paths), bags['refs'].values()))  # seq0 is tiny_sequence/bag
    args = [*paths, '--object', bags['mesh'], '--out', out, '--params', bags['params']]
    proc = _batch(args)
    deadline = time.monotonic() + 180
    while not list(out.glob('*.checkpoint/refine_checkpoint.pt')):  # a bag is half done
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    code, _, stderr = _finish(proc)
    assert code == 130, stderr[-3000:]
    assert 'the others continue with --resume' in stderr
    statuses = {b['name']: b['status']
                for b in json.loads((out / 'summary.json').read_text())['bags']}
    assert 'interrupted' in statuses.values()
    finished = {n for n, s in statuses.items() if s == 'ok'}
    assert finished == {p.name[:-len('.done.json')] for p in out.glob('*.done.json')}
    half_done = {p.parent.name[:-len('.checkpoint')]
                 for p in out.glob('*.checkpoint/refine_checkpoint.pt')} - finished
    records = {n: (out / f'{n}.done.json').read_bytes() for n in finished}

    from handypriors_ros.cli.main import main
    assert main(['refine-batch', *map(str, args)]) == 1  # without --resume: refused, untouched
    stderr = capsys.readouterr().err
    assert 'holds outputs of this batch' in stderr and '--resume continues' in stderr
    assert 'ray' not in sys.modules or ray_before  # refused before Ray is imported

    code, stdout, stderr = _finish(_batch([*args, '--resume']))
    assert code == 0, stderr[-3000:]
    assert f'{3 - len(finished)} refined, {len(finished)} finished earlier, 0 failed' in stdout
    summary = {b['name']: b for b in json.loads((out / 'summary.json').read_text())['bags']}
    assert set(summary) == set(refs)
    for name, ref in refs.items():
        np.testing.assert_array_equal(_poses(out / name), ref)
        if name in finished:
            assert summary[name]['status'] == 'skipped'
            assert (out / f'{name}.done.json').read_bytes() == records[name]  # not redone
        else:
            assert summary[name]['status'] == 'ok'
        if name in half_done:  # continued from its checkpoint
            assert summary[name]['resumed_from_iteration'] > 0
        assert not (out / f'{name}.checkpoint').exists()
