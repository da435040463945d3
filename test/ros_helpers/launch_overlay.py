"""An ament prefix whose handypriors_ros is this checkout, for tests that run the launch files.

The launch files find the package through the ament index (FindPackageShare, Node(package=..)).
:func:`overlay_prefix` makes a small prefix to put in front of AMENT_PREFIX_PATH:
share/handypriors_ros/{launch,config,urdf,package.xml} link to the checkout, lib/handypriors_ros
holds tracker_node, realsense_node and tracker_with_camera starting this interpreter.
"""
import stat
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = 'handypriors_ros'


def overlay_prefix(folder: Path) -> Path:
    prefix = folder / 'prefix'
    index = prefix / 'share' / 'ament_index' / 'resource_index' / 'packages'
    index.mkdir(parents=True)
    (index / PACKAGE).write_text('')
    share = prefix / 'share' / PACKAGE
    share.mkdir()
    for name in ('launch', 'config', 'urdf', 'package.xml'):
        (share / name).symlink_to(ROOT / name)
    lib = prefix / 'lib' / PACKAGE
    lib.mkdir(parents=True)
    for executable, module in (('tracker_node', 'tracker_node'),
                               ('realsense_node', 'realsense_node'),
                               ('tracker_with_camera', 'composed')):
        script = lib / executable
        script.write_text(f'#!{sys.executable}\nimport sys\n'
                          f'from handypriors_ros.ros.{module} import main\n'
                          f'sys.exit(main())\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return prefix
