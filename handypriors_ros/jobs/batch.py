"""The batch refinement job: ``handypriors refine-batch``, many bags refined on Ray.

Each bag is one Ray task running the refinement job of ``handypriors refine``
(:func:`handypriors_ros.jobs.refine.run_refine`, called in one place: :func:`_refine`) with
the batch's options (:data:`BATCH_SCHEMA`: the refine job's schema less its per-bag options,
plus the batch's own). Without ``address`` a local Ray is started on this machine and shut
down afterwards; with it the batch joins the user's cluster (``auto``, ``HOST:PORT`` or
``ray://HOST:10001``). Ray is imported only when a batch runs.

The output folder ``out_dir`` holds, per bag ``NAME`` (:func:`bag_names`):

- ``NAME/``: the refined bag (MCAP, written atomically by the refine job);
- ``NAME.checkpoint/``: the refine job's checkpoint while the bag runs (removed after success);
- ``NAME.report/``: the bag's report folder, with ``reports``;
- ``NAME.done.json``: the done record (frames, seconds, final losses, figures), written
  atomically after the bag is; a bag with one is finished;

and ``summary.json`` / ``summary.md`` (every bag's status, rewritten atomically after each bag).
With ``resume`` finished bags are skipped and the others continue from their checkpoints; a
bag that fails is recorded with its one-line reason and the others go on.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import fnmatch
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handypriors_ros.core.errors import HandyPriorsError, InputError
from handypriors_ros.jobs.refine import REFINE_SCHEMA, RefineJob, run_refine
from handypriors_ros.jobs.schema import Option

BATCH = 'the batch (handypriors refine-batch)'
#: The refine job's options each bag sets for itself (from the bag list, the manifest and
#: ``out_dir``), or that have no meaning for a batch.
PER_BAG = ('bag', 'out_bag', 'init_bag', 'report_dir', 'checkpoint_dir', 'ground_truth',
           'initial_pose', 'publish_results')
DONE_SUFFIX = '.done.json'
SUMMARY_JSON, SUMMARY_MD = 'summary.json', 'summary.md'
MANIFEST_KEYS = ('bag', 'object', 'init', 'name')

_BATCH_OPTIONS = (
    Option('bags', 'str_list', (), 'input bags (rosbag2 folders or files); the command line '
           'takes them as BAG... arguments', node=False, group=BATCH),
    Option('manifest', 'str', '', "YAML or CSV list of bags: columns/keys bag, optional "
           "object (mesh), init (track output bag) and name; relative paths are relative to "
           "the manifest's folder", cli='--manifest', metavar='FILE', group=BATCH),
    Option('objects_map', 'str', '', 'YAML mapping of bag name or path glob -> mesh file '
           '(first match wins; relative meshes are relative to the YAML)',
           cli='--objects-map', metavar='YAML', group=BATCH),
    Option('out_dir', 'str', '', 'output folder: per bag NAME/ (refined bag), NAME.done.json, '
           'NAME.checkpoint/ while it runs; summary.md and summary.json; required', cli='--out',
           metavar='DIR', required=True, group=BATCH),
    Option('address', 'str', '', "Ray cluster to join: 'auto' (the cluster 'ray start' runs "
           "on this machine), HEAD_IP:6379, or ray://HEAD_IP:10001 (Ray Client); '' = start a "
           'local Ray on this machine for the batch', cli='--address', metavar='ADDRESS',
           group=BATCH),
    Option('num_cpus', 'int', 0, "CPUs of the local Ray (0 = this machine's); not with "
           '--address (the cluster has its own)', range=(0, 4096), cli='--num-cpus', metavar='N',
           group=BATCH),
    Option('cpus_per_task', 'float', 1.0, 'CPUs Ray reserves for each bag; its torch threads '
           '(at least 1)', range=(0.01, 1024.0), cli='--cpus-per-task', metavar='N',
           group=BATCH),
    Option('gpus_per_task', 'float', 0.0, 'GPUs Ray reserves for each bag; a bag refines on '
           'a GPU only when Ray gives it one (0: --device auto means cpu; --device cuda needs '
           'it)', range=(0.0, 64.0), cli='--gpus-per-task',
           metavar='N', group=BATCH),
    Option('reports', 'bool', False, "write each bag's report folder (NAME.report/)",
           cli='--reports', group=BATCH),
)

#: ``handypriors refine-batch``: the batch's options, then the refine job's shared by every bag.
BATCH_SCHEMA = REFINE_SCHEMA.derive(
    'refine-batch', drop=PER_BAG, first=_BATCH_OPTIONS,
    change={
        'object_mesh': dict(required=False, description=(
            "mesh (OBJ/PLY/STL/GLB) of every bag that a manifest's object column or "
            '--objects-map does not set')),
        'resume': dict(description='continue a batch: bags with a done record are skipped, the '
                                   'others resume from their checkpoints'),
        'overwrite': dict(description='redo every bag, replacing the refined bags this package '
                                      'wrote in --out'),
    })


#: What ``--params`` files may hold: a batch's options and every refine option (a refine
#: parameters file such as config/refine.yaml is a batch's too; its per-bag options must be
#: left at their defaults).
_PARAMS_FILE_SCHEMA = REFINE_SCHEMA.derive('refine-batch', first=_BATCH_OPTIONS)


def read_batch_params(path: str | Path) -> dict[str, Any]:
    """The values of a ``--params`` file for a batch (a refine parameters file, with or without
    the batch's own options).

    Raises:
        InputError: a bad file, an unknown key, a per-bag option set (one line).
    """
    values = _PARAMS_FILE_SCHEMA.read_params_file(path)
    per_bag = [k for k in PER_BAG if k in values and values[k] != REFINE_SCHEMA[k].default]
    if per_bag:
        raise InputError(f'--params {path}: {per_bag[0]} is set per bag by refine-batch '
                         '(BAG..., --manifest, --out); leave it out of the file')
    return {k: v for k, v in values.items() if k not in PER_BAG}


# -- the bags ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BagSpec:
    """One bag of a batch.

    Attributes:
        name: its name in the output folder (unique in the batch).
        bag: the input bag. object_mesh: its mesh, or None (not resolved yet).
        init_bag: its ``handypriors track`` output with initial poses, or None.
    """
    name: str
    bag: Path
    object_mesh: Path | None = None
    init_bag: Path | None = None


def read_manifest(path: str | Path) -> list[BagSpec]:
    """The bags of a manifest: CSV with a header (``bag`` and optional ``object``, ``init``,
    ``name`` columns) or YAML (a list of bag paths or of mappings with those keys, or a
    mapping with ``bags:`` holding such a list). Names are left empty when not given.

    Raises:
        InputError: a missing or unreadable file, an unknown column or key, an entry without
            a bag (one line, naming the file and the entry).
    """
    path = Path(path)
    flag = f'--manifest {path}'
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f'--manifest: cannot read {path}: {exc.strerror or exc}') from exc
    if path.suffix.lower() == '.csv':
        rows = list(csv.DictReader(line for line in text.splitlines()
                                   if line.strip() and not line.lstrip().startswith('#')))
        entries: list[Any] = [{(k or '').strip().lower(): (v or '').strip()
                               for k, v in row.items()} for row in rows]
    else:
        import yaml
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f'{flag}: not valid YAML: {" ".join(str(exc).split())}') from exc
        if isinstance(data, Mapping) and set(data) == {'bags'}:
            data = data['bags']
        if not isinstance(data, list):
            raise InputError(f'{flag}: expected a list of bags (or bags: [...]), got '
                             f'{type(data).__name__}')
        entries = data
    base = path.parent
    specs = []
    for i, entry in enumerate(entries, 1):
        where = f'{flag}: entry {i}'
        if isinstance(entry, str):
            entry = {'bag': entry}
        if not isinstance(entry, Mapping):
            raise InputError(f'{where}: expected a bag path or a mapping, got {entry!r}')
        unknown = sorted(set(entry) - set(MANIFEST_KEYS))
        if unknown:
            raise InputError(f'{where}: unknown keys {unknown}; known: {list(MANIFEST_KEYS)}')
        values = {k: entry.get(k) for k in MANIFEST_KEYS}
        for k, v in values.items():
            if v is not None and not isinstance(v, str):
                raise InputError(f'{where}: {k}: expected a string, got {v!r}')
        if not values['bag']:
            raise InputError(f'{where}: no bag')

        def rel(value: str | None) -> Path | None:
            return base / Path(value).expanduser() if value else None

        specs.append(BagSpec(name=values['name'] or '', bag=rel(values['bag']),
                             object_mesh=rel(values['object']), init_bag=rel(values['init'])))
    if not specs:
        raise InputError(f'{flag}: no bags in it')
    return specs


def read_objects_map(path: str | Path) -> list[tuple[str, Path]]:
    """``[(pattern, mesh)]`` of an objects map (YAML mapping: bag name or path glob -> mesh
    file), in the file's order; relative meshes are relative to the file's folder.

    Raises:
        InputError: a missing or bad file, a mesh that does not exist (one line).
    """
    import yaml

    path = Path(path)
    flag = f'--objects-map {path}'
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(f'--objects-map: cannot read {path}: {exc.strerror or exc}') from exc
    except yaml.YAMLError as exc:
        raise InputError(f'{flag}: not valid YAML: {" ".join(str(exc).split())}') from exc
    if not isinstance(data, Mapping) or not data:
        raise InputError(f'{flag}: expected a mapping of bag name or glob -> mesh file')
    out = []
    for pattern, mesh in data.items():
        if not isinstance(pattern, str) or not isinstance(mesh, str) or not mesh:
            raise InputError(f'{flag}: expected pattern: mesh path strings, got '
                             f'{pattern!r}: {mesh!r}')
        mesh_path = path.parent / Path(mesh).expanduser()
        if not mesh_path.is_file():
            raise InputError(f'{flag}: {pattern}: mesh file not found: {mesh_path}')
        out.append((pattern, mesh_path))
    return out


def match_object(objects: Sequence[tuple[str, Path]], spec: BagSpec) -> Path | None:
    """The mesh of the first pattern matching the bag's name, its path as given or resolved."""
    candidates = (spec.name, str(spec.bag), str(spec.bag.resolve()), spec.bag.name)
    for pattern, mesh in objects:
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            return mesh
    return None


_UNSAFE = re.compile(r'[^A-Za-z0-9._-]+')
_BAG_SUFFIXES = ('.mcap', '.db3')


def bag_names(paths: Sequence[Path]) -> list[str]:
    """A unique output name per bag: its last path component (without ``.mcap``/``.db3``),
    with as many parent folders as it takes to tell bags apart, joined with ``_``
    (``seq1/bag`` and ``seq2/bag`` -> ``seq1_bag``, ``seq2_bag``).

    Raises:
        InputError: the same bag listed twice, or two bags that no folder tells apart.
    """
    seen: set[str] = set()
    for p in paths:
        full = os.path.abspath(p)
        if full in seen:
            raise InputError(f'bag {p} is listed twice')
        seen.add(full)
    parts = []
    for p in paths:
        ps = list(Path(os.path.abspath(p)).parts[1:]) or ['bag']
        last = ps[-1]
        for suffix in _BAG_SUFFIXES:
            if last.lower().endswith(suffix) and len(last) > len(suffix):
                last = last[:-len(suffix)]
        ps[-1] = last
        parts.append([_UNSAFE.sub('-', x) for x in ps])
    depth = [1] * len(paths)
    while True:
        names = ['_'.join(ps[-d:]) for ps, d in zip(parts, depth)]
        clash = {n for n in names if names.count(n) > 1}
        if not clash:
            return names
        grew = False
        for i, n in enumerate(names):
            if n in clash and depth[i] < len(parts[i]):
                depth[i] += 1
                grew = True
        if not grew:  # e.g. a.mcap and a.db3 in one folder
            raise InputError(f'two bags would both be named {sorted(clash)[0]!r}; give the '
                             'manifest a name column')


def plan_bags(values: Mapping[str, Any]) -> list[BagSpec]:
    """The batch's bags (BAG arguments, then the manifest's), each with its unique name and
    its mesh (the manifest's object, else the objects map's, else ``object_mesh``).

    Raises:
        InputError: no bags, a name given twice, a bag without a mesh (one line).
    """
    specs = [BagSpec(name='', bag=Path(b).expanduser()) for b in values['bags']]
    if values['manifest']:
        specs += read_manifest(values['manifest'])
    if not specs:
        raise InputError('no bags: give BAG... arguments or --manifest FILE')
    auto = bag_names([s.bag for s in specs])
    specs = [s if s.name else dataclasses.replace(s, name=n) for s, n in zip(specs, auto)]
    bad = [s.name for s in specs if _UNSAFE.search(s.name) or s.name.startswith('.')]
    if bad:
        raise InputError(f'bag name {bad[0]!r}: use letters, digits, ".", "_" and "-"')
    seen: set[str] = set()
    for s in specs:
        if s.name in seen or s.name in ('summary',):
            raise InputError(f'bag name {s.name!r} is used twice (or reserved); give the '
                             'manifest a name column')
        seen.add(s.name)
    objects = read_objects_map(values['objects_map']) if values['objects_map'] else []
    default = Path(values['object_mesh']) if values['object_mesh'] else None
    out = []
    for s in specs:
        mesh = s.object_mesh or match_object(objects, s) or default
        if mesh is None:
            raise InputError(f'bag {s.name} ({s.bag}): no object mesh; give --object MESH, '
                             '--objects-map YAML or an object column in the manifest')
        out.append(dataclasses.replace(s, object_mesh=mesh))
    return out


# -- one bag (a Ray task) ------------------------------------------------------------------------
@dataclass(frozen=True)
class BagTask:
    """What one Ray task gets: the bag, the refine job's values, how to run it."""
    spec: BagSpec
    values: dict
    out_dir: Path
    resume: bool
    torch_threads: int
    gpus: float = 0.0


def _refine(job: RefineJob, *, resume: bool, warn: Callable[[str], None]):
    """THE call of the refine job (one place). A resumed batch continues each unfinished bag
    from its checkpoint (none found: from the beginning); a batch that is not resuming
    (a new ``--out`` or ``--overwrite``) starts its bags over (``fresh``)."""
    return run_refine(job, warn=warn, resume=resume, fresh=not resume)


def _one_line(exc: BaseException) -> str:
    text = ' '.join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, HandyPriorsError):
        text = f'{type(exc).__name__}: {text}'
    return text if len(text) <= 300 else text[:297] + '...'


def done_path(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / f'{name}{DONE_SUFFIX}'


def write_json_atomically(path: Path, data: Any) -> None:
    """``data`` as JSON at ``path``: written to a hidden temporary file, then renamed."""
    _write_atomically(path, json.dumps(data, indent=2, sort_keys=False) + '\n')


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.partial', dir=path.parent)
    try:
        with os.fdopen(fd, 'w') as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def refine_bag(task: BagTask) -> dict:
    """Refine one bag (the body of a Ray task; also callable in-process): the refine job, then
    the done record ``NAME.done.json`` (written atomically after the refined bag).

    Returns:
        The bag's record: ``status`` ``ok`` with frames, seconds and final losses, or
        ``failed`` with its one-line ``reason``.
    """
    import torch

    torch.set_num_threads(task.torch_threads)
    values = dict(task.values)
    if task.gpus == 0 and values.get('device') == 'auto':
        values['device'] = 'cpu'  # Ray gave this bag no GPU (it leaves the GPUs visible)
    spec = task.spec
    record: dict[str, Any] = {'name': spec.name, 'bag': str(spec.bag),
                              'object': str(spec.object_mesh),
                              'init': str(spec.init_bag) if spec.init_bag else None,
                              'out_bag': str(task.out_dir / spec.name), 'host': os.uname()[1]}
    warnings: list[str] = []
    start = time.perf_counter()
    try:
        job = RefineJob.from_values(values)
        outcome = _refine(job, resume=task.resume, warn=warnings.append)
    except Exception as exc:  # any bag's failure is recorded; the batch goes on
        record.update(status='failed', reason=_one_line(exc),
                      seconds=round(time.perf_counter() - start, 2), warnings=warnings[:5])
        return record
    s = outcome.summary
    record.update(
        status='ok', frames=s['frames'], seconds=round(time.perf_counter() - start, 2),
        setup_s=s['setup_s'], optimisation_s=s['optimisation_s'], iterations=s['iterations'],
        resumed_from_iteration=s['resumed_from_iteration'], device=s['device'],
        images_skipped=s['images_skipped'], final_losses=s['final_losses'],
        initial_figures=s['initial_figures'], refined_figures=s['refined_figures'],
        report=str(outcome.report_dir) if outcome.report_dir else None,
        finished_utc=_now(), warnings=warnings[:5])
    write_json_atomically(done_path(task.out_dir, spec.name), record)
    return record


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


# -- the batch -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchJob:
    """A batch (the command line's options).

    Attributes:
        bags: the bags with their names and meshes.
        refine_values: the refine job's values every bag shares (:data:`REFINE_SCHEMA`).
        out_dir: the output folder.
        address: the Ray cluster to join; '' = a local Ray.
        num_cpus: CPUs of a local Ray (0: this machine's).
        cpus_per_task, gpus_per_task: what Ray reserves per bag.
        resume: skip finished bags, resume the others from their checkpoints.
        overwrite: redo every bag.
        reports: write NAME.report/ per bag.
    """
    bags: tuple[BagSpec, ...]
    refine_values: dict
    out_dir: Path
    address: str = ''
    num_cpus: int = 0
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    resume: bool = False
    overwrite: bool = False
    reports: bool = False

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> BatchJob:
        """From :data:`BATCH_SCHEMA` values.

        Raises:
            InputError: bad values, no bags, a bag without a mesh, ``--resume`` with
                ``--overwrite``, ``--num-cpus`` with ``--address`` (one line).
        """
        v = BATCH_SCHEMA.validate(values)
        if v['resume'] and v['overwrite']:
            raise InputError('--resume and --overwrite: choose one (continue the batch, or '
                             'redo every bag)')
        if v['device'] == 'cuda' and not v['gpus_per_task']:
            raise InputError('--device cuda: give --gpus-per-task N (Ray gives each bag its '
                             'GPU)')
        if v['device'] == 'cpu' and v['gpus_per_task']:
            raise InputError(f"--gpus-per-task {v['gpus_per_task']:g} with --device cpu: the "
                             'bags would hold GPUs they do not use')
        if v['address']:
            address_target(v['address'])
        if v['address'] and v['num_cpus']:
            raise InputError('--num-cpus sizes a local Ray; with --address the cluster has '
                             'its own resources')
        refine_values = {k: v[k] for k in REFINE_SCHEMA.by_name if k in v}
        refine_values.pop('resume', None)
        if refine_values.get('hand_urdf'):
            refine_values['hand_urdf'] = os.path.abspath(refine_values['hand_urdf'])
        # absolute paths: the tasks may run in another folder (a cluster's workers)
        bags = [dataclasses.replace(s, bag=_absolute(s.bag), object_mesh=_absolute(s.object_mesh),
                                    init_bag=_absolute(s.init_bag)) for s in plan_bags(v)]
        job = cls(bags=tuple(bags), refine_values=refine_values,
                  out_dir=_absolute(Path(v['out_dir'])),
                  address=v['address'], num_cpus=v['num_cpus'],
                  cpus_per_task=v['cpus_per_task'], gpus_per_task=v['gpus_per_task'],
                  resume=v['resume'], overwrite=v['overwrite'], reports=v['reports'])
        for spec in job.bags:  # every bag's job values are valid before anything starts
            RefineJob.from_values(job.bag_values(spec))
        return job

    def bag_values(self, spec: BagSpec) -> dict:
        """The refine job's values of one bag."""
        return {**self.refine_values, 'bag': str(spec.bag), 'object_mesh': str(spec.object_mesh),
                'out_bag': str(self.out_dir / spec.name),
                'init_bag': str(spec.init_bag) if spec.init_bag else '',
                'report_dir': str(self.out_dir / f'{spec.name}.report') if self.reports else ''}

    def task(self, spec: BagSpec) -> BagTask:
        """The Ray task's argument of one bag. A resumed bag whose refined bag was written
        but not its done record (killed in between) is refined again over it."""
        values = self.bag_values(spec)
        if self.resume and (self.out_dir / spec.name).exists():
            values['overwrite'] = True  # only a bag this package wrote is ever replaced
        return BagTask(spec=spec, values=values, out_dir=self.out_dir, resume=self.resume,
                       torch_threads=max(1, int(self.cpus_per_task)), gpus=self.gpus_per_task)


def _absolute(path: Path | None) -> Path | None:
    return Path(os.path.abspath(path)) if path is not None else None


@dataclass
class BatchProgress:
    """Where a batch stands (given to the progress callback after each bag).

    Attributes:
        record: the bag just finished (its record). done: bags finished or failed in this run.
        total: bags to run in this run (skipped ones not counted). failed: failures so far.
        elapsed_s: since the first task was submitted. eta_s: estimated time left (nan at
            first).
    """
    record: dict
    done: int
    total: int
    failed: int
    elapsed_s: float
    eta_s: float

    @property
    def bags_per_minute(self) -> float:
        return 60.0 * self.done / self.elapsed_s if self.elapsed_s > 0 else float('nan')


@dataclass(frozen=True)
class BatchOutcome:
    """What :func:`run_batch` did: every bag's record (in the batch's order), the wall time of
    this run and where the summary is."""
    records: tuple[dict, ...]
    seconds: float
    summary_json: Path
    summary_md: Path
    ray: dict

    def count(self, status: str) -> int:
        return sum(r['status'] == status for r in self.records)


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a batch: the summary is written, everything is resumable."""

    def __init__(self, outcome: BatchOutcome) -> None:
        super().__init__('interrupted')
        self.outcome = outcome


def _existing_state(job: BatchJob) -> list[Path]:
    """Outputs of this batch's bags already in ``out_dir`` (done records, bags, checkpoints)."""
    found = []
    for s in job.bags:
        for p in (done_path(job.out_dir, s.name), job.out_dir / s.name,
                  job.out_dir / f'{s.name}.checkpoint'):
            if p.exists():
                found.append(p)
    return found


def _finished(job: BatchJob, spec: BagSpec) -> dict | None:
    """The done record of a finished bag (its refined bag present), else None.

    Raises:
        InputError: the record is of another bag or mesh (another batch in this folder).
    """
    path = done_path(job.out_dir, spec.name)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f'{path}: unreadable done record ({exc}); remove it to redo '
                         f'{spec.name}') from exc
    if record.get('status') != 'ok' or not (job.out_dir / spec.name).exists():
        return None
    for key, now in (('bag', str(spec.bag)), ('object', str(spec.object_mesh))):
        if record.get(key) != now:
            raise InputError(f'{path}: done with {key} {record.get(key)}, this batch has '
                             f'{now}; use another --out, or --overwrite to redo it')
    return record


def run_batch(job: BatchJob, *, progress: Callable[[BatchProgress], None] | None = None,
              note: Callable[[str], None] | None = None) -> BatchOutcome:
    """Run a batch: skip finished bags (``resume``), refine the others as Ray tasks, write the
    summary after each bag.

    Args:
        job: what to do.
        progress: called after each bag with :class:`BatchProgress`.
        note: one-line notes (the Ray started or joined).
    Returns:
        Every bag's record; failed bags have ``status`` ``failed`` and a ``reason``.
    Raises:
        InputError: ``out_dir`` holds this batch's outputs without ``resume`` or
            ``overwrite``; the cluster cannot give a task its resources; Ray cannot start.
        BatchInterrupted: Ctrl-C (the summary written, unfinished bags marked
            ``interrupted``; ``resume`` continues them).
    """
    out_dir = job.out_dir
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f'--out {out_dir}: is a file, expected a folder')
    if not (job.resume or job.overwrite):
        existing = _existing_state(job)
        if existing:
            raise InputError(f'--out {out_dir}: holds outputs of this batch (first: '
                             f'{existing[0].name}, {len(existing)} in all); --resume continues '
                             'the batch, --overwrite redoes every bag')
    out_dir.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict] = {}
    todo = []
    for spec in job.bags:
        record = _finished(job, spec) if job.resume else None
        if record is not None:
            records[spec.name] = {**record, 'status': 'skipped'}
        else:
            if job.overwrite:
                done_path(out_dir, spec.name).unlink(missing_ok=True)  # our own record
            todo.append(spec)
            records[spec.name] = _pending(job, spec)
    start = time.perf_counter()
    ray_info: dict = {}

    def outcome() -> BatchOutcome:
        ordered = tuple(records[s.name] for s in job.bags)
        summary = BatchOutcome(records=ordered, seconds=time.perf_counter() - start,
                               summary_json=out_dir / SUMMARY_JSON,
                               summary_md=out_dir / SUMMARY_MD, ray=ray_info)
        write_summary(summary, job)
        return summary

    if not todo:
        return outcome()
    interrupted = False
    with _ray_session(job, note) as ray:
        ray_info.update(_ray_info(ray, job))
        remote = ray.remote(num_cpus=job.cpus_per_task, num_gpus=job.gpus_per_task,
                            max_retries=1)(refine_bag)
        refs = {remote.remote(job.task(spec)): spec for spec in todo}
        for spec in todo:
            records[spec.name]['status'] = 'queued'
        start = time.perf_counter()
        failed = done = 0
        pending = list(refs)
        try:
            while pending:
                # a short timeout: a blocking ray.wait loses a Ctrl-C that comes while it waits
                # (measured with Ray 2.60: the batch ran on to the end and exited 0)
                ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)
                if not ready:
                    continue
                spec = refs[ready[0]]
                try:
                    record = ray.get(ready[0])
                except Exception as exc:  # the task's worker died (a crash, killed, out of memory)
                    record = {**_pending(job, spec), 'status': 'failed',
                              'reason': f'the Ray task failed: {_ray_reason(exc)}'}
                records[spec.name] = record
                done += 1
                failed += record['status'] == 'failed'
                elapsed = time.perf_counter() - start
                eta = elapsed / done * (len(todo) - done)
                outcome()
                if progress is not None:
                    progress(BatchProgress(record=record, done=done, total=len(todo),
                                           failed=failed, elapsed_s=elapsed, eta_s=eta))
        except KeyboardInterrupt:
            # No ray.cancel(force=True) here: with Ray 2.60 a cancel racing a task's reply hit
            # a fatal check in the driver ("Tried to complete task that was not pending") and
            # the process exited 1 instead of 130 (seen in CI). Leaving the session shuts Ray
            # down, which stops a local cluster's workers and ends this job's tasks on a
            # joined one; a half-done bag keeps its last checkpoint for --resume.
            interrupted = True
    if interrupted:
        # read only now that Ray is down: a worker that finished its bag between the Ctrl-C and
        # the shutdown wrote its done record (atomically) after any earlier look
        for spec in todo:
            if records[spec.name]['status'] != 'queued':
                continue
            try:  # finished in its worker while the interrupt came: its record counts
                records[spec.name] = json.loads(done_path(job.out_dir, spec.name).read_text())
            except (OSError, ValueError):
                records[spec.name]['status'] = 'interrupted'
        raise BatchInterrupted(outcome()) from None
    return outcome()


def _pending(job: BatchJob, spec: BagSpec) -> dict:
    return {'name': spec.name, 'bag': str(spec.bag), 'object': str(spec.object_mesh),
            'init': str(spec.init_bag) if spec.init_bag else None,
            'out_bag': str(job.out_dir / spec.name), 'status': 'pending'}


_ANSI = re.compile(r'\x1b\[[0-9;]*m')


def _ray_reason(exc: BaseException) -> str:
    text = ' '.join(_ANSI.sub('', str(exc)).split())
    return (text[:200] + '...') if len(text) > 200 else text or type(exc).__name__


def address_target(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``HOST:PORT`` or ``ray://HOST:PORT``; None for ``auto``.

    Raises:
        InputError: another form.
    """
    if address == 'auto':
        return None
    target = address[len('ray://'):] if address.startswith('ray://') else address
    host, _, port = target.rpartition(':')
    if not host or not port.isdigit() or '/' in target:
        raise InputError(f'--address {address}: expected auto, HEAD_IP:PORT or '
                         'ray://HEAD_IP:PORT')
    return host.strip('[]'), int(port)


def probe_address(address: str, *, timeout_s: float = 5.0) -> None:
    """Fail fast when nothing listens at the address (Ray itself retries for minutes).

    Raises:
        InputError: no connection within ``timeout_s`` (one line).
    """
    import socket

    target = address_target(address)
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=timeout_s).close()
    except OSError as exc:
        raise InputError(f'--address {address}: nothing answers at {target[0]}:{target[1]} '
                         f'({exc.strerror or exc}); is the head running (ray start --head)?'
                         ) from exc


@contextlib.contextmanager
def _ray_session(job: BatchJob, note: Callable[[str], None] | None):
    """Ray, started locally (``address`` '') in a temporary folder under /tmp, or joined;
    shut down (the local one stopped, its folder removed) on leaving."""
    import logging

    try:
        import ray
    except ImportError as exc:
        raise InputError("refine-batch needs Ray: pip install 'ray[client]' (requirements.txt "
                         'pins it)') from exc
    if ray.is_initialized():
        raise InputError('Ray is already initialised in this process; run the batch in its own')
    temp_dir = None
    try:
        if job.address:
            probe_address(job.address)
            try:
                ray.init(address=job.address, logging_level=logging.ERROR, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                hint = ('' if os.environ.get('RAY_AUTH_MODE') else
                        ' (a cluster with token authentication, the default: set '
                        "RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN or "
                        '~/.ray/auth_token)')
                raise InputError(f'--address {job.address}: cannot join the Ray cluster: '
                                 f'{_ray_reason(exc)}{hint}') from exc
        else:
            num_cpus = job.num_cpus or os.cpu_count() or 1
            # a short private folder: Ray's socket paths must stay under 107 characters
            temp_dir = tempfile.mkdtemp(prefix='hp-ray-', dir='/tmp')
            ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.ERROR,
                     log_to_driver=False, _temp_dir=temp_dir,
                     object_store_memory=128 * 2 ** 20)
        resources = ray.cluster_resources()
        for name, per_task, flag in (('CPU', job.cpus_per_task, '--cpus-per-task'),
                                     ('GPU', job.gpus_per_task, '--gpus-per-task')):
            have = resources.get(name, 0.0)
            if per_task > have and not job.address:
                raise InputError(f'{flag} {per_task:g}: the local Ray has {have:g} {name}s '
                                 f'({"--num-cpus" if name == "CPU" else "no GPU was found"})')
            if per_task > have and note is not None:
                note(f'{flag} {per_task:g}: the cluster has {have:g} {name}s now; the tasks '
                     'wait for an autoscaler to add them')
        if note is not None:
            note(f"{'joined Ray at ' + job.address if job.address else 'started a local Ray'}: "
                 f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs; "
                 f'{job.cpus_per_task:g} CPU, {job.gpus_per_task:g} GPU per bag')
        yield ray
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)  # the folder this batch made


def _ray_info(ray: Any, job: BatchJob) -> dict:
    resources = ray.cluster_resources()
    return {'address': job.address or 'local', 'version': ray.__version__,
            'cpus': resources.get('CPU', 0.0), 'gpus': resources.get('GPU', 0.0),
            'nodes': sum(1 for n in ray.nodes() if n.get('Alive')),
            'cpus_per_task': job.cpus_per_task, 'gpus_per_task': job.gpus_per_task}


# -- the summary ---------------------------------------------------------------------------------
def _loss_text(record: dict) -> str:
    losses = record.get('final_losses') or {}
    if not losses:
        return ''
    key = 'total' if 'total' in losses else sorted(losses)[0]
    first, last = losses[key]
    return f'{key} {first:.4g} -> {last:.4g}'


def summary_table(records: Sequence[dict]) -> list[str]:
    """The Markdown table of the bags (name, status, frames, seconds, losses, note)."""
    lines = ['| bag | status | frames | seconds | iterations | final loss | note |',
             '| --- | --- | ---: | ---: | ---: | --- | --- |']
    for r in records:
        note = r.get('reason', '')
        if r['status'] in ('ok', 'skipped') and r.get('resumed_from_iteration') is not None:
            note = f"resumed at iteration {r['resumed_from_iteration']}"
        if r['status'] == 'skipped':
            note = ('finished earlier' + (f'; {note}' if note else ''))
        cells = [r['name'], r['status'], str(r.get('frames', '')),
                 f"{r['seconds']:.1f}" if 'seconds' in r else '', str(r.get('iterations', '')),
                 _loss_text(r), note.replace('|', '\\|')]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def write_summary(outcome: BatchOutcome, job: BatchJob) -> None:
    """``summary.json`` and ``summary.md`` in ``out_dir`` (each written atomically)."""
    counts = {k: outcome.count(k) for k in ('ok', 'skipped', 'failed', 'interrupted',
                                             'queued', 'pending')}
    ran = [r for r in outcome.records if r['status'] in ('ok', 'failed')]
    per_minute = 60.0 * len(ran) / outcome.seconds if ran and outcome.seconds > 0 else None
    totals = {'bags': len(outcome.records), **counts, 'wall_s': round(outcome.seconds, 2),
              'bags_per_minute': round(per_minute, 2) if per_minute else None,
              'frames': sum(r.get('frames', 0) for r in outcome.records
                            if r['status'] in ('ok', 'skipped'))}
    data = {'written_utc': _now(), 'out_dir': str(job.out_dir), 'ray': outcome.ray,
            'resume': job.resume, 'totals': totals, 'bags': list(outcome.records)}
    write_json_atomically(job.out_dir / SUMMARY_JSON, _jsonable(data))
    rate = f', {per_minute:.2f} bags/min' if per_minute else ''
    md = ['# refine-batch summary', '',
          f"{totals['bags']} bags: {counts['ok']} refined, {counts['skipped']} finished earlier, "
          f"{counts['failed']} failed, {counts['interrupted'] + counts['queued']} not finished "
          f"({totals['wall_s']:.1f} s{rate}; Ray: {outcome.ray.get('address', '-')}, "
          f"{outcome.ray.get('cpus', 0):g} CPUs, {outcome.ray.get('gpus', 0):g} GPUs). "
          f"Written {data['written_utc']}.", '', *summary_table(outcome.records)]
    _write_atomically(job.out_dir / SUMMARY_MD, '\n'.join(md) + '\n')


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


__all__ = ['BATCH_SCHEMA', 'BagSpec', 'BagTask', 'BatchInterrupted', 'BatchJob', 'BatchOutcome',
           'BatchProgress', 'address_target', 'bag_names', 'match_object', 'plan_bags',
           'probe_address', 'read_batch_params', 'read_manifest', 'read_objects_map',
           'refine_bag', 'run_batch', 'summary_table', 'write_summary']
