"""One declared schema of options per job and node: every consumer is made from it, as
generate_parameter_library makes them from its YAML.

An :class:`Option` declares a name, a type, a default, a description with units, its choices or
range, whether it can change at run time, and its command-line flag. A :class:`Schema` (a job's
or a node's options) then gives:

- the command line: :meth:`Schema.add_arguments` (argparse flags of the options that have one,
  plus ``--params YAML`` and ``--quiet``) and :meth:`Schema.values_from_args` (defaults, then
  the ``--params`` file, then the flags given; one-line errors naming the flag or key; unknown
  keys of the file are rejected with the list of known ones);
- the node's ROS parameters: :mod:`handypriors_ros.ros.parameters` declares every option with
  ``node=True`` with a descriptor made from it (type, description, choices, range, read-only);
- the YAML defaults (``config/tracker.yaml``, ``config/refine.yaml``): :meth:`Schema.defaults_yaml`;
- validation: :meth:`Schema.validate` (types, choices, ranges, required values), the same for
  values from a node, a file or the command line.

Types: ``str``, ``float``, ``int``, ``bool``, ``str_list``, ``float_list`` (ROS parameter types
string, double, integer, bool, string array, double array). Lists become tuples.

Pure Python; no ROS.
"""
from __future__ import annotations

import argparse
import math
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handypriors_ros.core.errors import InputError

TYPES = ('str', 'float', 'int', 'bool', 'str_list', 'float_list')
#: Parameters of ROS itself a parameters file may hold; they mean nothing offline.
ROS_PARAMETERS = ('use_sim_time',)


@dataclass(frozen=True)
class Option:
    """One option of a job or node.

    Attributes:
        name: the parameter name (``object_scale``, ``weights.mask``).
        type: one of :data:`TYPES`.
        default: the default (a tuple for lists).
        description: what it does, with units.
        choices: allowed values of a ``str`` option.
        range: inclusive ``(low, high)`` of a number.
        read_only: set at start-up only (a node); False: may change at run time.
        cli: the command-line flag (``--object-scale``), an upper-case name for a positional
            argument (``BAG``), or None: only through ``--params``.
        parse: turns the flag's text into a value (default: by type).
        metavar: the flag's metavar in ``--help``.
        required: must not be empty.
        node: a parameter of the node (False: the command line's only, e.g. the input bag of
            ``track``).
        offline: has an effect in the offline job; False: live only (the job reports it when
            set to another value than the default).
        group: the section of the YAML defaults.
    """
    name: str
    type: str
    default: Any
    description: str
    choices: tuple[str, ...] | None = None
    range: tuple[float, float] | None = None
    read_only: bool = True
    cli: str | None = None
    parse: Callable[[str], Any] | None = None
    metavar: str | None = None
    required: bool = False
    node: bool = True
    offline: bool = True
    group: str = ''

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f'Option {self.name}: type {self.type!r} is not one of {TYPES}')
        if isinstance(self.default, list):
            object.__setattr__(self, 'default', tuple(self.default))
        if self.choices is not None:
            object.__setattr__(self, 'choices', tuple(self.choices))
        self.check(self.default, source='the default of ')  # shows at import

    @property
    def help(self) -> str:
        """The description with its choices (``--help``, ROS descriptors, YAML comments)."""
        return self.description + (f' (one of: {", ".join(self.choices)})'
                                   if self.choices else '')

    def check(self, value: Any, *, source: str = '') -> Any:
        """``value`` checked and normalised (ints accepted as floats, lists as tuples).

        Raises:
            InputError: naming the option (prefixed by ``source``), what was expected and what
                came.
        """
        name = f'{source}{self.name}'
        kind = self.type
        if kind == 'str':
            if not isinstance(value, str):
                raise InputError(f'{name}: expected a string, got {value!r}')
        elif kind == 'bool':
            if not isinstance(value, bool):
                raise InputError(f'{name}: expected true or false, got {value!r}')
        elif kind == 'int':
            if isinstance(value, bool) or not isinstance(value, int):
                raise InputError(f'{name}: expected an integer, got {value!r}')
        elif kind == 'float':
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise InputError(f'{name}: expected a finite number, got {value!r}')
            value = float(value)
        else:
            if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
                raise InputError(f'{name}: expected a list, got {value!r}')
            value = tuple(value)
            if kind == 'str_list' and not all(isinstance(v, str) for v in value):
                raise InputError(f'{name}: expected a list of strings, got {list(value)!r}')
            if kind == 'float_list':
                if not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           for v in value):
                    raise InputError(f'{name}: expected a list of numbers, got {list(value)!r}')
                value = tuple(float(v) for v in value)
        if self.choices is not None and value not in self.choices:
            raise InputError(f'{name}: expected one of {list(self.choices)}, got {value!r}')
        if self.range is not None and not self.range[0] <= value <= self.range[1]:
            raise InputError(f'{name}: expected a value in [{self.range[0]:g}, '
                             f'{self.range[1]:g}], got {value!r}')
        return value

    def parse_text(self, text: str) -> Any:
        """The value of a command-line flag's text (checked).

        Raises:
            InputError: naming the flag.
        """
        flag = self.cli or self.name
        if self.parse is not None:
            return self.check(self.parse(text), source=f'{flag} -> ')
        try:
            if self.type == 'float':
                value: Any = float(text)
            elif self.type == 'int':
                value = int(text)
            elif self.type == 'str':
                value = text
            elif self.type == 'float_list':
                value = [float(v) for v in text.replace(',', ' ').split()]
            elif self.type == 'str_list':
                value = [v for v in text.replace(',', ' ').split()]
            else:
                raise InputError(f'{flag}: a bool option is a flag without a value')
        except ValueError as exc:
            raise InputError(f'{flag}: expected {_a(self.type)}, got {text!r}') from exc
        try:
            return self.check(value)
        except InputError as exc:
            raise InputError(f'{flag}: {str(exc).split(": ", 1)[1]}') from exc


def _a(kind: str) -> str:
    return {'float': 'a number', 'int': 'an integer', 'float_list': 'numbers',
            'str_list': 'names'}.get(kind, 'a value')


class Schema:
    """The options of one job or node (module docstring).

    Args:
        name: the job's or node's name (``track``, ``tracker_node``).
        options: its options, in the order of the YAML defaults and ``--help``.
    """

    def __init__(self, name: str, options: Iterable[Option]) -> None:
        self.name = name
        self.options = tuple(options)
        self.by_name = {o.name: o for o in self.options}
        if len(self.by_name) != len(self.options):
            seen: set[str] = set()
            twice = [o.name for o in self.options if o.name in seen or seen.add(o.name)]
            raise ValueError(f'Schema {name}: options declared twice: {twice}')

    def __contains__(self, name: str) -> bool:
        return name in self.by_name

    def __getitem__(self, name: str) -> Option:
        return self.by_name[name]

    @property
    def node_options(self) -> tuple[Option, ...]:
        """The options that are parameters of the node."""
        return tuple(o for o in self.options if o.node)

    def derive(self, name: str, *, drop: Iterable[str] = (),
               change: Mapping[str, Mapping[str, Any]] | None = None,
               first: Iterable[Option] = (), last: Iterable[Option] = ()) -> Schema:
        """A schema made from this one (a batch of jobs over this job's options): the options
        in ``drop`` removed, those in ``change`` with fields replaced (``{'object_mesh':
        {'required': False}}``), ``first`` before and ``last`` after the others.

        Raises:
            ValueError: ``drop`` or ``change`` names an option this schema does not have (a
                renamed option shows at import, not as a silently kept one).
        """
        import dataclasses

        drop, change = set(drop), dict(change or {})
        unknown = sorted((drop | set(change)) - set(self.by_name))
        if unknown:
            raise ValueError(f'Schema {self.name} -> {name}: no options {unknown}')
        kept = [dataclasses.replace(o, **change[o.name]) if o.name in change else o
                for o in self.options if o.name not in drop]
        return Schema(name, (*first, *kept, *last))

    def defaults(self) -> dict[str, Any]:
        """``{name: default}`` of every option."""
        return {o.name: o.default for o in self.options}

    # -- validation ------------------------------------------------------------------------------
    def validate(self, values: Mapping[str, Any], *, source: str = '') -> dict[str, Any]:
        """Every option's value (defaults for those not given), checked.

        Raises:
            InputError: an unknown name (with the known ones), a bad value, or empty required
                values (naming them).
        """
        unknown = sorted(set(values) - set(self.by_name))
        if unknown:
            raise InputError(f'{source}unknown {self.name} parameters {unknown}; known: '
                             f'{sorted(self.by_name)}')
        out = {}
        for o in self.options:
            out[o.name] = o.check(values[o.name], source=source) if o.name in values \
                else o.default
        missing = [o.name for o in self.options if o.required and out[o.name] in ('', ())]
        if missing:
            raise InputError(f'{", ".join(missing)}: expected a path, got \'\' (required: set '
                             f'{"it" if len(missing) == 1 else "them"}, e.g. -p '
                             f'{missing[0]}:=/path)')
        return out

    def check_change(self, name: str) -> Option:
        """The option a run-time change sets.

        Raises:
            InputError: not a parameter of the node, or read-only.
        """
        option = self.by_name.get(name)
        if option is None or not option.node:
            raise InputError(f'{name}: not a parameter of {self.name}')
        if option.read_only:
            raise InputError(f'{name}: read-only (set it at start-up)')
        return option

    def live_only_set(self, values: Mapping[str, Any]) -> list[str]:
        """``'name=value'`` of the live-only options set to another value than the default
        (what an offline job reports as having no effect)."""
        return [f'{o.name}={values[o.name]!r}' for o in self.options
                if not o.offline and o.name in values and values[o.name] != o.default]

    # -- parameters files ------------------------------------------------------------------------
    def read_params_file(self, path: str | Path, *, flag: str = '--params') -> dict[str, Any]:
        """The values of a parameters file: a ROS 2 parameters file (``node:
        ros__parameters: {...}``; every node section is read) or a plain mapping; nested
        mappings are dotted names (``weights: {mask: 1}`` is ``weights.mask``). Parameters of
        ROS itself (:data:`ROS_PARAMETERS`) are skipped.

        Raises:
            InputError: the file is missing or not YAML, a key is unknown (the known ones are
                listed) or a value is bad (named).
        """
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise InputError(f'{flag}: cannot read {path}: {exc}') from exc
        except UnicodeDecodeError as exc:
            raise InputError(f'{flag} {path}: not a text file ({exc.reason} at byte '
                             f'{exc.start}); give a YAML parameters file') from exc
        except yaml.YAMLError as exc:
            reason = ' '.join(str(exc).split())
            raise InputError(f'{flag} {path}: not valid YAML: {reason}') from exc
        if data is None:
            return {}
        source = f'{flag} {path}: '
        flat = _flatten(_unwrap_ros_parameters(data, source), source)
        for name in ROS_PARAMETERS:
            flat.pop(name, None)
        return self.validate_partial(flat, source=source)

    def validate_partial(self, values: Mapping[str, Any], *, source: str = '') -> dict[str, Any]:
        """Only the given values, checked (unknown names rejected with the known ones)."""
        unknown = sorted(set(values) - set(self.by_name))
        if unknown:
            raise InputError(f'{source}unknown {self.name} parameters {unknown}; known: '
                             f'{sorted(self.by_name)}')
        return {k: self.by_name[k].check(v, source=source) for k, v in values.items()}

    # -- command line ----------------------------------------------------------------------------
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """argparse arguments: the options with a flag, then ``--params`` and ``--quiet``.
        Flags keep their text (:meth:`values_from_args` parses it, with one-line errors)."""
        for o in self.options:
            if o.cli is None:
                continue
            if not o.cli.startswith('-'):
                parser.add_argument(o.name, metavar=o.cli, help=o.help)
                continue
            default_note = '' if o.required or o.default in ('', ()) or o.type == 'bool' \
                else f' (default: {_text(o.default)})'
            if o.type == 'bool':
                parser.add_argument(o.cli, dest=o.name, action='store_true', default=None,
                                    help=o.help)
            else:
                parser.add_argument(o.cli, dest=o.name, required=o.required, default=None,
                                    metavar=o.metavar or o.name.upper().replace('.', '_'),
                                    help=o.help + default_note)
        parser.add_argument('--params', metavar='YAML', default=None,
                            help=f'parameters file ({self.name} parameters, ROS 2 parameters file '
                                 'or plain mapping); flags given override it; unknown keys are '
                                 'an error')
        parser.add_argument('--quiet', action='store_true', help='no progress bar')

    def values_from_args(self, args: argparse.Namespace, *,
                         read_params: Callable[[str], Mapping[str, Any]] | None = None
                         ) -> dict[str, Any]:
        """Every option's value: default, then the ``--params`` file, then the flags given.

        Args:
            read_params: reads the ``--params`` file (default :meth:`read_params_file`; a
                derived schema may accept its parent's files).
        Raises:
            InputError: a missing or bad parameters file, an unknown key, a bad flag value.
        """
        values: dict[str, Any] = {}
        params = getattr(args, 'params', None)
        if params:
            if Path(params).is_dir():
                raise InputError(f'--params: {params} is a folder; give a YAML parameters '
                                 'file')
            if not Path(params).is_file():
                raise InputError(f'--params: parameter file not found: {params}')
            values.update((read_params or self.read_params_file)(params))
        for o in self.options:
            if o.cli is None:
                continue
            given = getattr(args, o.name, None)
            if given is None:
                continue
            values[o.name] = given if o.type == 'bool' else o.parse_text(given)
        return self.validate(values)

    # -- YAML defaults ---------------------------------------------------------------------------
    def defaults_yaml(self, header: Sequence[str]) -> str:
        """A ROS 2 parameters file (``/**: ros__parameters:``) with every node option's default
        and description, in sections by group; ``[start-up]`` marks the read-only options
        when some may change at run time."""
        options = self.node_options
        mark = any(not o.read_only for o in options)
        lines = [f'# {line}'.rstrip() for line in header] + ['/**:', '  ros__parameters:']
        group = None
        for o in options:
            if o.group != group:
                group = o.group
                lines.append(f'    # --- {group} ---')
            text = o.help + (' [start-up]' if mark and o.read_only else '')
            lines += ['    # ' + line for line in textwrap.wrap(text, 92)]
            lines.append(f'    {o.name}: {_yaml_value(o.default)}')
        return '\n'.join(lines) + '\n'


def _text(value: Any) -> str:
    if isinstance(value, tuple):
        return ' '.join(str(v) for v in value)
    return str(value)


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, str):
        if value == '':
            return "''"
        plain = not any(c in value for c in ':#[]{},\'"') and value not in ('true', 'false')
        return value if plain else repr(value)
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(_yaml_value(v) for v in value) + ']'
    return repr(value)


def _unwrap_ros_parameters(values: Any, source: str) -> Mapping[str, Any]:
    """The ``ros__parameters`` mappings of a ROS 2 parameters file merged, or ``values``."""
    if not isinstance(values, Mapping):
        raise InputError(f'{source}expected a mapping, got {type(values).__name__} (write '
                         "'name: value' lines, or a ROS 2 parameters file 'node: "
                         "{ros__parameters: {...}}')")
    nodes = [v for v in values.values() if isinstance(v, Mapping) and 'ros__parameters' in v]
    if not nodes:
        return values
    if len(nodes) != len(values):
        raise InputError(f'{source}mixes ROS node sections with other keys: {sorted(values)}')
    merged: dict[str, Any] = {}
    for node in nodes:
        params = node['ros__parameters'] or {}
        if not isinstance(params, Mapping):
            raise InputError(f'{source}ros__parameters must be a mapping')
        merged.update(params)
    return merged


def _flatten(values: Mapping[str, Any], source: str, prefix: str = '') -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise InputError(f'{source}expected string keys, got {key!r}')
        name = f'{prefix}{key}'
        if isinstance(value, Mapping):
            out.update(_flatten(value, source, f'{name}.'))
        else:
            out[name] = value
    return out
