"""The ``handypriors`` command line (contract: INTERFACES.md, "Command line").

    handypriors track BAG --object MESH --out OUT_BAG [--params YAML] [--initial-pose "x y z qx qy qz qw"]
    handypriors refine BAG --object MESH --out OUT_BAG [--init TRACK_BAG]
    handypriors demo [--out DIR]
    handypriors generate ...

Exit status (the same for every command; a one-line reason on standard error, never a
traceback):

- 0: success;
- 1: bad input (a missing or unreadable file, a wrong value, an output that would replace
  something that is not ours, ...): the line names the problem and the fix;
- 2: usage (an unknown flag, a missing argument: argparse's usage message);
- 70: internal error (a bug: the line says so; ``HANDYPRIORS_DEBUG=1`` shows the traceback);
- 130 / 143: stopped by SIGINT (Ctrl-C) / SIGTERM; ``refine`` writes a checkpoint first and
  continues with ``--resume``.

Warnings (a truncated bag, a repaired mesh) are one line each: ``handypriors CMD: warning: ...``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from handypriors_ros.core.errors import HandyPriorsError

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70  # EX_SOFTWARE (sysexits.h)
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

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


def _one_line(text: object) -> str:
    return ' '.join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors: argparse exits 2
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    module = _load(args.command)
    prefix = f'handypriors {args.command}'

    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f'{prefix}: warning: {_one_line(message)}', file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        try:
            if module is None:
                raise CommandUnavailable(
                    f"'handypriors {args.command}' is not available in this version yet")
            return int(module.run(args) or 0)
        except HandyPriorsError as exc:
            print(f'{prefix}: error: {_one_line(exc)}', file=sys.stderr, flush=True)
            return int(getattr(exc, 'exit_code', EXIT_BAD_INPUT))
        except KeyboardInterrupt:
            print(f'{prefix}: interrupted (nothing half-written is left; refine: rerun with '
                  '--resume to continue from its last checkpoint)', file=sys.stderr, flush=True)
            return EXIT_SIGINT
        except Exception as exc:  # a bug: one line, the traceback on request
            if os.environ.get('HANDYPRIORS_DEBUG'):
                raise
            print(f'{prefix}: internal error ({type(exc).__name__}: {_one_line(exc)}); '
                  'this is a bug: please report it with the command (HANDYPRIORS_DEBUG=1 shows '
                  'the traceback)', file=sys.stderr, flush=True)
            return EXIT_INTERNAL


if __name__ == '__main__':
    sys.exit(main())
