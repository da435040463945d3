"""pip route of handypriors_ros (the virtual-environment set-up; see README).

colcon builds the package with CMakeLists.txt (ament_cmake: message interfaces + this Python
package); pip installs the same Python package and the same executables as console scripts.
"""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def share(folder: str) -> tuple[str, list[str]]:
    """(install dir, files) of a data folder, as colcon's CMakeLists.txt installs it."""
    files = sorted(str(p.relative_to(HERE)) for p in (HERE / folder).glob('*') if p.is_file())
    return f'share/handypriors_ros/{folder}', files


setup(
    name='handypriors_ros',
    version='0.1.0',
    description='Real-time hand-held object pose tracking with HandyPriors (ROS 2)',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['handypriors_ros', 'handypriors_ros.*']),
    data_files=[('share/ament_index/resource_index/packages', ['resource/handypriors_ros']),
                ('share/handypriors_ros', ['package.xml'])]
    + [share(d) for d in ('urdf', 'config', 'launch', 'msg') if (HERE / d).is_dir()],
    extras_require={'test': ['pytest']},
    entry_points={
        'console_scripts': [
            'handypriors = handypriors_ros.cli.main:main',
            'tracker_node = handypriors_ros.ros.tracker_node:main',
            'realsense_node = handypriors_ros.ros.realsense_node:main',
            'refiner_node = handypriors_ros.ros.refiner_node:main',
            'tracker_with_camera = handypriors_ros.ros.composed:main',
        ],
    },
)
