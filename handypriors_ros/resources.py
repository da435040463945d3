"""Files shipped with the package (URDFs), found in a source checkout or an installed share."""
from __future__ import annotations

from pathlib import Path

from handypriors_ros.core.errors import InputError

PACKAGE = 'handypriors_ros'


def package_file(relative: str) -> Path:
    """A file of the package: ``<repo>/<relative>`` in a source checkout, else
    ``share/handypriors_ros/<relative>`` from the ament index (colcon / pip install).

    Raises:
        InputError: the file is in neither place (the message lists where it looked).
    """
    candidates = [Path(__file__).resolve().parents[1] / relative]
    try:
        from ament_index_python.packages import get_package_share_directory
        candidates.append(Path(get_package_share_directory(PACKAGE)) / relative)
    except (ImportError, LookupError, OSError, ValueError):
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise InputError(f'cannot find the package file {relative}; looked in '
                     + ', '.join(map(str, candidates)))


def default_hand_urdf() -> Path:
    """The package's right Allegro hand URDF (``urdf/allegro_hand_right.urdf``)."""
    return package_file('urdf/allegro_hand_right.urdf')
