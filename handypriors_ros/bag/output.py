"""Output paths that never cost the user a file: checks to run before a job starts, and the
mark that tells a bag this package wrote from anything else.

Every bag :class:`~handypriors_ros.bag.io.BagWriter` writes holds a small marker file,
:data:`MARKER_NAME`, next to its metadata.yaml (and the writer's name in metadata.yaml's
``custom_data``). Overwriting replaces only such a bag, and only while it holds nothing but
the files the writer put there; anything else (a folder of the user's, a recording from
``ros2 bag record``, one of the job's inputs) is refused with a one-line error. Deleting the
marker protects a bag of ours from being overwritten.

:func:`check_output_bag` and :func:`check_output_dir` are what a command runs on its output
paths before any work starts, so a wrong path fails in a second instead of after the job.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

from ruamel.yaml import YAML, YAMLError

from handypriors_ros.core.errors import InputError

MARKER_NAME = '.handypriors_ros_bag'
"""File inside every bag this package writes (its presence is what allows overwriting)."""

CUSTOM_DATA_KEY = 'handypriors_ros.writer'
"""metadata.yaml ``custom_data`` key naming the writer (informational)."""

MARKER_TEXT = ('This rosbag2 bag was written by handypriors_ros. While this file is here, '
               'handypriors --overwrite may replace the whole folder; delete this file to '
               'protect the bag.\n')


def writer_name() -> str:
    """``'handypriors_ros <version>'`` (the version when the package is installed)."""
    try:
        from importlib.metadata import PackageNotFoundError, version
        return f'handypriors_ros {version("handypriors_ros")}'
    except (ImportError, PackageNotFoundError):
        return 'handypriors_ros'


def bag_files(path: Path) -> set[str] | None:
    """Names of the files a bag of ours at ``path`` consists of, or None when it is not one.

    Ours: a folder with :data:`MARKER_NAME` and a readable metadata.yaml; its files are
    those two plus the storage files metadata.yaml lists.
    """
    if path.is_symlink() or not path.is_dir() or not (path / MARKER_NAME).is_file():
        return None
    try:
        meta = YAML(typ='safe').load((path / 'metadata.yaml').read_text())
        names = meta['rosbag2_bagfile_information']['relative_file_paths']
        listed = {Path(str(n)).name for n in names}
    except (OSError, YAMLError, KeyError, TypeError):
        return None
    return {MARKER_NAME, 'metadata.yaml', *listed}


def replace_problem(path: Path) -> str | None:
    """Why the existing ``path`` must not be replaced by a new bag, or None when it may."""
    if path.is_symlink():
        return 'is a symbolic link, not a bag written by handypriors_ros'
    if not path.is_dir():
        return 'is a file, not a bag written by handypriors_ros'
    expected = bag_files(path)
    if expected is None:
        if (path / MARKER_NAME).exists():
            return 'has an unreadable metadata.yaml'
        return (f'is not a bag written by handypriors_ros (no {MARKER_NAME} marker in it)')
    try:
        present = {p.name for p in path.iterdir()}
    except OSError as exc:
        return f'cannot be listed ({exc.strerror or exc})'
    others = sorted(present - expected)
    if others:
        shown = ', '.join(others[:3]) + (f' and {len(others) - 3} more' if len(others) > 3 else '')
        return f'contains files handypriors_ros did not write ({shown})'
    if any((path / n).is_dir() and not (path / n).is_symlink() for n in present):
        return 'contains folders handypriors_ros did not write'
    return None


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _probe(folder: Path) -> str | None:
    """Why nothing can be created in the existing ``folder``, or None."""
    try:  # the only reliable test (root, read-only mounts, /proc): make a folder and remove it
        probe = tempfile.mkdtemp(prefix='.handypriors-probe-', dir=folder)
    except OSError as exc:
        return (f'cannot write in {folder} ({exc.strerror or exc}); choose a writable '
                'location')
    os.rmdir(probe)
    return None


def _writable_ancestor_problem(path: Path) -> str | None:
    """Why no folder can be created at ``path`` (its nearest existing ancestor), or None."""
    ancestor = path.parent
    while not ancestor.exists():
        if ancestor.is_symlink():
            return (f'its parent {ancestor} is a broken symbolic link; give a path in an '
                    'existing folder')
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f'its parent {ancestor} is a file, not a folder; give a path in a folder'
    return _probe(ancestor)


def _input_problem(path: Path, inputs: Iterable[str | os.PathLike], *, contains: bool
                   ) -> str | None:
    real = _real(path)
    for item in inputs:
        inp = _real(item)
        if real == inp:
            return f'is the input {item}; give another path (inputs are never replaced)'
        if _is_within(real, inp):
            return f'is inside the input {item}; give a path outside it'
        if contains and _is_within(inp, real):
            return (f'contains the input {item}; give another path (inputs are never '
                    'replaced)')
    return None


def _exists_text(flag: str | None) -> str:
    if flag:
        return f'exists (use {flag} to replace it)'
    return 'already exists (overwriting replaces only a bag written by handypriors_ros)'


def output_bag_problem(path: str | os.PathLike, *, overwrite: bool = False,
                       inputs: Iterable[str | os.PathLike] = (), flag: str | None = None
                       ) -> str | None:
    """Why a new bag cannot be written at ``path``, or None. See :func:`check_output_bag`."""
    path = Path(path)
    problem = _input_problem(path, inputs, contains=True)
    if problem:
        return problem
    if path.exists() or path.is_symlink():
        if not overwrite:
            return _exists_text(flag)
        problem = replace_problem(path)
        if problem:
            return f'{problem}: refusing to replace it'
    return _writable_ancestor_problem(path)


def check_output_bag(path: str | os.PathLike, *, overwrite: bool = False,
                     inputs: Iterable[str | os.PathLike] = (), name: str = 'output bag',
                     flag: str | None = None) -> Path:
    """Check, before any work starts, that a bag can be written at ``path``.

    Refused: ``path`` is one of ``inputs``, inside one, or contains one (compared after
    resolving symbolic links); ``path`` exists and ``overwrite`` is False; ``path`` exists and
    is not a bag written by this package holding only its own files (:func:`replace_problem`);
    no folder can be created there (the nearest existing ancestor is a file or not
    writable). Missing parent folders are fine: the writer creates them.

    Args:
        path: the bag folder to write.
        overwrite: allow replacing a bag this package wrote.
        inputs: the job's input paths (bags, folders, files).
        name: how the message names the path (e.g. ``'--out'``).
        flag: the option that allows overwriting (e.g. ``'--overwrite'``), named in the
            message when the path exists.
    Returns:
        ``Path(path)``.
    Raises:
        InputError: one line naming ``name``, the path and why, e.g.
            ``--out d: is not a bag written by handypriors_ros (no .handypriors_ros_bag marker
            in it): refusing to replace it``.
    """
    problem = output_bag_problem(path, overwrite=overwrite, inputs=inputs, flag=flag)
    if problem:
        raise InputError(f'{name} {path}: {problem}')
    return Path(path)


def check_output_dir(path: str | os.PathLike, *, overwrite: bool = False,
                     inputs: Iterable[str | os.PathLike] = (), files: Iterable[str] | None = None,
                     name: str = 'output folder', flag: str | None = None) -> Path:
    """Check, before any work starts, that a job may write its files into folder ``path``.

    Writing into a folder never deletes it or anything in it that the job does not write:
    ``overwrite`` only allows replacing the job's own file names there. Refused: ``path`` is
    a file; it is one of ``inputs`` or inside one; it exists and holds ``files`` (any file
    when ``files`` is None) and ``overwrite`` is False; no folder can be created there.

    Args:
        path: the folder.
        overwrite: allow replacing the job's files in an existing folder.
        inputs: the job's input paths.
        files: names the job writes into the folder; None: any existing entry conflicts.
        name: how the message names the path (e.g. ``'--report'``).
        flag: the option that allows overwriting, named in the message.
    Returns:
        ``Path(path)``.
    Raises:
        InputError: one line naming ``name``, the path and why.
    """
    path = Path(path)
    problem = _input_problem(path, inputs, contains=False)
    if problem is None and (path.exists() or path.is_symlink()):
        if not path.is_dir():
            problem = 'is a file, not a folder; give a folder'
        elif not overwrite:
            try:
                present = sorted(p.name for p in path.iterdir())
            except OSError as exc:
                present, problem = [], f'cannot be listed ({exc.strerror or exc})'
            clash = present if files is None else sorted(set(present) & set(files))
            if clash:
                shown = ', '.join(clash[:3]) + (f' and {len(clash) - 3} more'
                                                if len(clash) > 3 else '')
                how = f'use {flag}' if flag else 'allow overwriting'
                problem = (f'already holds {shown} ({how} to replace '
                           f'{"them" if files is not None else "files of the same names"}; '
                           'nothing else in it is touched)')
        if problem is None:
            problem = _probe(path)
    elif problem is None:
        problem = _writable_ancestor_problem(path)
    if problem:
        raise InputError(f'{name} {path}: {problem}')
    return path


__all__ = ['CUSTOM_DATA_KEY', 'MARKER_NAME', 'bag_files', 'check_output_bag',
           'check_output_dir', 'output_bag_problem', 'replace_problem', 'writer_name']
