"""``handypriors urdf``: write the Allegro Hand v4 URDF for a side and a joint/link prefix."""
from __future__ import annotations

import argparse
import sys

from handypriors_ros.core.models.urdf_writer import allegro_v4_urdf, write_allegro_v4_urdf


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--side', choices=('right', 'left'), default='right',
                        help='which hand (default: right)')
    parser.add_argument('--prefix', default='ah_',
                        help='prefix of link and joint names (default: ah_)')
    parser.add_argument('--out', default=None, help='output file (default: standard output)')


def run(args: argparse.Namespace) -> int:
    if args.out is None:
        sys.stdout.write(allegro_v4_urdf(args.side, args.prefix))
    else:
        path = write_allegro_v4_urdf(args.out, args.side, args.prefix)
        print(f'handypriors urdf: wrote {path} ({args.side} hand, prefix {args.prefix!r})')
    return 0
