"""Fast DDS and camera images: the profile a launch gives its processes, what a process's
transports are, and a start-up hint without a profile. Pure (no rclpy, no launch at import).

Measured on the 2-core VM (README, "DDS and large images"): Fast DDS gives each participant a
512 KB shared-memory segment. An image larger than it (a 640x480 rgb8 image is 921.6 KB)
reaches a subscriber on the same host 12-13 ms after its publication instead of ~3 ms; the
threshold lies between 520 and 600 KB. The package's profile
(``config/fastdds_large_images.xml``) gives the segment 8 MiB. The segment is the publisher's,
so the profile must reach the camera driver's process.

rmw_fastrtps with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` builds its own transports and
ignores ``FASTDDS_BUILTIN_TRANSPORTS``; transports from a profile file are kept there.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from handypriors_ros.core.errors import InputError

#: Environment variables naming a Fast DDS XML profile file: Fast DDS 3 (Kilted and later)
#: reads the first, Fast DDS 2 (Humble, Jazzy) the second.
PROFILE_VARIABLES = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')
#: The package's profile (relative to the package root / its share directory).
LARGE_IMAGES_PROFILE = 'config/fastdds_large_images.xml'
#: Fast DDS's default shared-memory segment [bytes].
DEFAULT_SEGMENT_BYTES = 512 * 1024
#: The rmw implementations on Fast DDS.
FASTDDS_RMWS = ('rmw_fastrtps_cpp', 'rmw_fastrtps_dynamic_cpp')
#: Distributions on Fast DDS 2 (``FASTRTPS_DEFAULT_PROFILES_FILE``).
FASTDDS_2_DISTROS = ('foxy', 'galactic', 'humble', 'iron', 'jazzy')


def uses_fastdds(environ: Mapping[str, str]) -> bool:
    """Whether processes started with ``environ`` use Fast DDS (the default rmw of Humble,
    Jazzy and Kilted when ``RMW_IMPLEMENTATION`` is unset)."""
    return environ.get('RMW_IMPLEMENTATION', '').strip() in ('',) + FASTDDS_RMWS


def profile_variables(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The profile-file variable(s) the processes' Fast DDS reads: Fast DDS 3 (Kilted on)
    reads both but warns that ``FASTRTPS_DEFAULT_PROFILES_FILE`` is deprecated, Fast DDS 2
    reads only that one. Told by ``ROS_DISTRO`` (set by a ROS setup script), else by the
    install under ``AMENT_PREFIX_PATH`` (``share/fastdds`` is Fast DDS 3, ``share/fastrtps``
    Fast DDS 2, as the apt packages and the wheels lay them out); both when neither tells."""
    distro = environ.get('ROS_DISTRO', '').strip().lower()
    if distro:
        return PROFILE_VARIABLES[1:] if distro in FASTDDS_2_DISTROS else PROFILE_VARIABLES[:1]
    for prefix in environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        if prefix and (Path(prefix) / 'share' / 'fastdds').is_dir():
            return PROFILE_VARIABLES[:1]
        if prefix and (Path(prefix) / 'share' / 'fastrtps').is_dir():
            return PROFILE_VARIABLES[1:]
    return PROFILE_VARIABLES


def profile_file(environ: Mapping[str, str]) -> str | None:
    """The Fast DDS profile file ``environ`` names (the Fast DDS 3 variable first), or None."""
    for name in PROFILE_VARIABLES:
        value = environ.get(name, '').strip()
        if value:
            return value
    return None


def profile_environment(choice: str, environ: Mapping[str, str],
                        package_profile: Callable[[], Path]) -> dict[str, str]:
    """The variables a launch sets for the processes it starts, from its ``dds_profile``
    argument.

    Args:
        choice: ``auto``: the package's profile when the processes use Fast DDS and
            ``environ`` names no profile file (the user's own file wins); ``none`` (or
            empty): nothing; otherwise the path of a profile file to use.
        environ: the environment the processes would get.
        package_profile: gives the package's profile file (called only for ``auto``).

    Returns:
        ``{variable: path}`` for the variable(s) of :func:`profile_variables`, or ``{}``.

    Raises:
        InputError: ``choice`` names a file that does not exist or is not XML.
    """
    choice = choice.strip()
    if choice in ('', 'none'):
        return {}
    if choice == 'auto':
        if not uses_fastdds(environ) or profile_file(environ) is not None:
            return {}
        path = package_profile()
    else:
        path = Path(choice).expanduser()
        if not path.is_file():
            raise InputError(f"launch argument dds_profile: no file {choice!r} (a Fast DDS XML "
                             f"profile, 'auto' or 'none')")
        try:  # Fast DDS only logs a broken file and goes on with its defaults
            ElementTree.parse(path)
        except ElementTree.ParseError as exc:
            raise InputError(f'launch argument dds_profile: {choice!r} is not XML ({exc})') \
                from None
    return {name: str(path) for name in profile_variables(environ)}


def describe_transports(environ: Mapping[str, str]) -> str:
    """What carries this process's DDS traffic, in words (start-up log, diagnostics)."""
    rmw = environ.get('RMW_IMPLEMENTATION', '').strip() or 'rmw_fastrtps_cpp'
    if not uses_fastdds(environ):
        return rmw
    profile = profile_file(environ)
    if profile is not None:
        return f'profile {profile} ({rmw})'
    default = 'shared memory (512 KB segment) + UDPv4'
    builtin = environ.get('FASTDDS_BUILTIN_TRANSPORTS', '').strip()
    if builtin and environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE', '').strip() == 'LOCALHOST':
        return (f'{default}: FASTDDS_BUILTIN_TRANSPORTS={builtin} is ignored with '
                f'ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ({rmw})')
    return f'{builtin or "default: " + default} ({rmw})'


def profile_hint(environ: Mapping[str, str]) -> str | None:
    """A start-up hint for a Fast DDS process without a profile file, else None."""
    if not uses_fastdds(environ) or profile_file(environ) is not None:
        return None
    return (f"no Fast DDS profile file: an image over the default {DEFAULT_SEGMENT_BYTES // 1024} "
            f'KB shared-memory segment (640x480 rgb8: 921.6 KB) arrives ~12 ms late. Start the '
            f'camera driver and the tracker with FASTDDS_DEFAULT_PROFILES_FILE (Fast DDS 2: '
            f"FASTRTPS_DEFAULT_PROFILES_FILE) set to the package's {LARGE_IMAGES_PROFILE}; "
            f'tracker.launch.py does so (dds_profile:=auto)')


def launch_environment(context: Any, *_, **__) -> list:
    """OpaqueFunction of the launch files: ``SetEnvironmentVariable`` for the profile chosen by
    the ``dds_profile`` argument (:func:`profile_environment`), and a log line saying it."""
    from launch.actions import LogInfo, SetEnvironmentVariable
    from launch.substitutions import LaunchConfiguration

    from handypriors_ros.resources import package_file

    environ = getattr(context, 'environment', None)
    if environ is None:  # launch without LaunchContext.environment: processes get os.environ
        environ = os.environ
    choice = LaunchConfiguration('dds_profile').perform(context)
    values = profile_environment(choice, environ, lambda: package_file(LARGE_IMAGES_PROFILE))
    actions: list = [SetEnvironmentVariable(name, value) for name, value in values.items()]
    if values:
        names = ', '.join(values)
        actions.append(LogInfo(msg=f'Fast DDS profile for the launched processes ({names}): '
                                   f'{next(iter(values.values()))} (dds_profile:={choice})'))
    return actions
