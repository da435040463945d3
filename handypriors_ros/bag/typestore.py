"""The rosbags typestore: ROS 2 Kilted types plus handypriors_ros/msg/*.

The type hashes (RIHS01) rosbags computes for our definitions match rosidl's, so bags written
here read back in ``ros2 bag`` on a workstation and vice versa.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from handypriors_ros.core.errors import ModelError

PACKAGE = 'handypriors_ros'


def find_msg_dir() -> Path:
    """Directory of this package's .msg files.

    Looked up in order: $HANDYPRIORS_MSG_DIR, the source checkout (``<repo>/msg``), the
    installed share directory (ament index, colcon route).
    """
    candidates = []
    if os.environ.get('HANDYPRIORS_MSG_DIR'):
        candidates.append(Path(os.environ['HANDYPRIORS_MSG_DIR']))
    candidates.append(Path(__file__).resolve().parents[2] / 'msg')
    try:
        from ament_index_python.packages import get_package_share_directory
        candidates.append(Path(get_package_share_directory(PACKAGE)) / 'msg')
    except (ImportError, LookupError, OSError, ValueError):
        pass
    for path in candidates:
        if (path / 'TrackedObject.msg').is_file():
            return path
    raise ModelError(f'cannot find the {PACKAGE} .msg files; looked in '
                     + ', '.join(str(p) for p in candidates)
                     + ' (set HANDYPRIORS_MSG_DIR)')


@functools.lru_cache(maxsize=1)
def make_typestore() -> Typestore:
    """Kilted typestore with handypriors_ros/msg/* registered (cached; treat as read-only)."""
    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for path in sorted(find_msg_dir().glob('*.msg')):
        types.update(get_types_from_msg(path.read_text(), f'{PACKAGE}/msg/{path.stem}'))
    store.register(types)
    return store
