"""The ``handypriors`` command line (contract: INTERFACES.md, "Command line").

    handypriors track BAG --object MESH --out OUT_BAG [--params YAML] [--initial-pose "x y z qx qy qz qw"]
    handypriors refine BAG --object MESH --out OUT_BAG [--init TRACK_BAG]
    handypriors demo [--out DIR]
    handypriors generate ...

Exit status 0 on success; non-zero with a one-line reason on bad input.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from handypriors_ros.core.errors import HandyPriorsError

# subcommand -> module under handypriors_ros.cli that provides add_arguments(parser) and run(args)
SUBCOMMANDS = {
    'track': ('track', 'run the real-time tracker over every image of a bag'),
    'refine': ('refine', 'offline optimisation refinement of a bag'),
    'refine-batch': ('refine_batch', 'refine many bags, one Ray task each (local or a cluster)'),
    'demo': ('demo', 'run the main job on the embedded default sequence'),
    'generate': ('generate', 'generate a synthetic sequence (bag + ground truth)'),
    'urdf': ('urdf', 'write the Allegro v4 URDF for a side and a prefix'),
}


class CommandUnavailable(HandyPriorsError):
    """The subcommand's implementation is not part of this build yet."""


def _load(name: str):
    module_name, _ = SUBCOMMANDS[name]
    try:
        return importlib.import_module(f'handypriors_ros.cli.{module_name}')
    except ModuleNotFoundError as exc:
        if exc.name == f'handypriors_ros.cli.{module_name}':
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='handypriors',
        description='Hand-held object pose tracking with HandyPriors (ICRA 2024) for ROS 2.')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name, (_, help_text) in SUBCOMMANDS.items():
        module = _load(name)
        p = sub.add_parser(name, help=help_text if module else f'{help_text} (not available yet)',
                           description=help_text)
        if module is not None:
            module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = _load(args.command)
    try:
        if module is None:
            raise CommandUnavailable(
                f"'handypriors {args.command}' is not available in this version yet")
        return int(module.run(args) or 0)
    except HandyPriorsError as exc:
        print(f'handypriors {args.command}: error: {exc}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f'handypriors {args.command}: interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
