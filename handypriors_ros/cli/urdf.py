"""``handypriors urdf``: write the Allegro Hand v4 URDF for a side and a joint/link prefix.

``--out FILE`` never replaces a file that is there unless ``--overwrite`` is given, and even
then only a URDF this command wrote (recognised by the comment it writes at the top); anything
else (a URDF of the user's, a folder) is refused with a one-line error.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.models.urdf_writer import allegro_v4_urdf, write_allegro_v4_urdf

#: Text every URDF this package writes holds near its top (how --overwrite recognises one).
OWN_URDF_MARK = 'Written by handypriors_ros.core.models.urdf_writer'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--side', choices=('right', 'left'), default='right',
                        help='which hand (default: right)')
    parser.add_argument('--prefix', default='ah_',
                        help='prefix of link and joint names (default: ah_)')
    parser.add_argument('--out', default=None, help='output file (default: standard output)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace --out if it is a URDF written by this command (never '
                             'any other file)')


def is_own_urdf(path: Path) -> bool:
    """Whether ``path`` is a file that :func:`write_allegro_v4_urdf` wrote."""
    try:
        with open(path, encoding='utf-8', errors='replace') as stream:
            head = stream.read(2048)
    except OSError:
        return False
    return OWN_URDF_MARK in head


def check_urdf_out(path: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that would replace something that is not ours, or that cannot be
    written (before anything is written).

    Raises:
        InputError: naming the path, the problem and the fix.
    """
    if path.is_symlink() or path.exists():
        if path.is_dir():
            raise InputError(f'--out {path}: is a folder; give a file name, e.g. '
                             f'{path / "allegro_hand.urdf"}')
        if not overwrite:
            raise InputError(f'--out {path}: exists (use --overwrite to replace it, if it is a '
                             'URDF this command wrote)')
        if path.is_symlink() or not is_own_urdf(path):
            raise InputError(f'--out {path}: is not a URDF written by handypriors urdf: '
                             'refusing to replace it (choose another file name)')
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f'--out {path}: its parent {parent} is a file, not a folder')
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f'--out {path}: cannot write in {parent} (choose a writable folder)')


def run(args: argparse.Namespace) -> int:
    if args.out is None:
        sys.stdout.write(allegro_v4_urdf(args.side, args.prefix))
        return 0
    out = Path(args.out)
    check_urdf_out(out, args.overwrite)
    try:
        path = write_allegro_v4_urdf(out, args.side, args.prefix)
    except OSError as exc:
        raise InputError(f'--out {out}: cannot be written ({exc.strerror or exc}); choose a '
                         'writable location') from exc
    print(f'handypriors urdf: wrote {path} ({args.side} hand, prefix {args.prefix!r})')
    return 0
