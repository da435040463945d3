"""pip route of handypriors_ros (the virtual-environment set-up; see README).

colcon builds the package with CMakeLists.txt (ament_cmake: message interfaces + this Python
package); pip installs the same Python package and the same executables as console scripts.
"""
from setuptools import find_packages, setup

setup(
    name='handypriors_ros',
    version='0.1.0',
    description='Real-time hand-held object pose tracking with HandyPriors (ROS 2)',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['handypriors_ros', 'handypriors_ros.*']),
    package_data={'handypriors_ros': ['data/*']},
    extras_require={'test': ['pytest']},
    entry_points={
        'console_scripts': [
            'handypriors = handypriors_ros.cli.main:main',
            'tracker_node = handypriors_ros.ros.tracker_node:main',
            'realsense_node = handypriors_ros.ros.realsense_node:main',
            'refiner_node = handypriors_ros.ros.refiner_node:main',
        ],
    },
)
