"""The workstation route: the package builds with colcon in a ROS 2 workspace.

colcon comes from the package index and builds against the same ROS 2 wheels as the venv;
the test checks what `ros2 run` / `ros2 launch` need: the executables under
lib/handypriors_ros, launch/ config/ urdf/ under share/, the package in the ament index, and
the generated messages importing from the install tree (not from this checkout).
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXECUTABLES = ('tracker_node', 'realsense_node', 'refiner_node', 'tracker_with_camera',
               'handypriors')


@pytest.fixture(scope='module')
def colcon_install(tmp_path_factory):
    if shutil.which('colcon') is None:
        pytest.skip('colcon is not installed in this environment (run ./run.sh test)')
    ws = tmp_path_factory.mktemp('colcon_ws')
    (ws / 'src').mkdir()
    (ws / 'src' / 'handypriors_ros').symlink_to(REPO)
    proc = subprocess.run(
        ['colcon', 'build', '--packages-select', 'handypriors_ros',
         '--cmake-args', '-DBUILD_TESTING=OFF', f'-DPython3_EXECUTABLE={sys.executable}'],
        cwd=ws, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return ws / 'install'


def test_layout_for_ros2_run_and_launch(colcon_install):
    prefix = colcon_install / 'handypriors_ros'
    for name in EXECUTABLES:
        exe = prefix / 'lib' / 'handypriors_ros' / name
        assert exe.is_file() and os.access(exe, os.X_OK), exe
    share = prefix / 'share' / 'handypriors_ros'
    for folder in ('launch', 'config', 'urdf'):
        if not (REPO / folder).is_dir():
            continue  # nothing of that kind in the package yet
        assert (share / folder).is_dir(), folder
        assert sorted(p.name for p in (share / folder).iterdir()) == \
            sorted(p.name for p in (REPO / folder).iterdir()), folder
    assert (share / 'package.xml').is_file()
    assert (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages'
            / 'handypriors_ros').is_file()


def test_installed_package_imports_from_the_install_tree(colcon_install):
    script = (
        'import handypriors_ros, handypriors_ros.msg as m, handypriors_ros.core;'
        'print(handypriors_ros.__file__); print(m.__file__);'
        'from ament_index_python.packages import get_package_share_directory as g;'
        'print(g("handypriors_ros"))')
    proc = subprocess.run(
        ['bash', '-c', f'source "{colcon_install}/local_setup.bash" && cd / && '
                       f'"{sys.executable}" -c \'{script}\''],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    init_file, msg_file, share = proc.stdout.split()
    assert init_file.startswith(str(colcon_install)), init_file
    assert msg_file.startswith(str(colcon_install)), msg_file
    assert share == str(colcon_install / 'handypriors_ros' / 'share' / 'handypriors_ros')


def test_installed_executable_runs(colcon_install):
    exe = colcon_install / 'handypriors_ros' / 'lib' / 'handypriors_ros' / 'handypriors'
    proc = subprocess.run(
        ['bash', '-c', f'source "{colcon_install}/local_setup.bash" && cd / && '
                       f'"{sys.executable}" "{exe}" --help'],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'track' in proc.stdout and 'demo' in proc.stdout


def test_colcon_test_runs_the_pytest_suite(tmp_path):
    """`colcon test` runs the package's pytest suite (CMakeLists.txt: ament_add_pytest_test).

    Built with BUILD_TESTING=ON; the suite is narrowed to test_compat.py (PYTEST_ADDOPTS, which
    pytest reads) so that this check stays short: what is checked is that colcon test starts
    pytest on test/ and collects its result."""
    if shutil.which('colcon') is None:
        pytest.skip('colcon is not installed in this environment (run ./run.sh test)')
    ws = tmp_path / 'ws'
    (ws / 'src').mkdir(parents=True)
    (ws / 'src' / 'handypriors_ros').symlink_to(REPO)
    build = subprocess.run(
        ['colcon', 'build', '--packages-select', 'handypriors_ros',
         '--cmake-args', '-DBUILD_TESTING=ON', f'-DPython3_EXECUTABLE={sys.executable}'],
        cwd=ws, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    env = dict(os.environ, PYTEST_ADDOPTS='-k test_compat -p no:cacheprovider')
    test = subprocess.run(
        ['colcon', 'test', '--packages-select', 'handypriors_ros', '--event-handlers',
         'console_direct+'], cwd=ws, capture_output=True, text=True, timeout=600, env=env)
    assert test.returncode == 0, test.stdout[-3000:] + test.stderr[-3000:]
    results = list((ws / 'build' / 'handypriors_ros').rglob('handypriors_ros_pytest.xunit.xml'))
    assert len(results) == 1, test.stdout[-3000:]
    import xml.etree.ElementTree as ET
    suite = ET.parse(results[0]).getroot()
    suite = suite if suite.tag == 'testsuite' else suite.find('testsuite')
    assert int(suite.get('tests')) >= 10, ET.tostring(suite)[:500]
    assert int(suite.get('failures')) == 0 and int(suite.get('errors')) == 0
    names = {case.get('classname') for case in suite.iter('testcase')}
    assert names and all('test_compat' in (n or '') for n in names), names


#: Top-level modules the package imports -> the package.xml key (rosdep / ROS package) that
#: provides them on a workstation.
IMPORT_KEYS = {
    'rclpy': 'rclpy', 'rcl_interfaces': 'rcl_interfaces', 'builtin_interfaces':
    'builtin_interfaces', 'ament_index_python': 'ament_index_python', 'std_msgs': 'std_msgs',
    'std_srvs': 'std_srvs', 'geometry_msgs': 'geometry_msgs', 'sensor_msgs': 'sensor_msgs',
    'visualization_msgs': 'visualization_msgs', 'diagnostic_msgs': 'diagnostic_msgs',
    'tf2_msgs': 'tf2_msgs', 'launch': 'launch', 'numpy': 'python3-numpy',
    'scipy': 'python3-scipy', 'yaml': 'python3-yaml', 'cv2': 'python3-opencv',
    'matplotlib': 'python3-matplotlib', 'imageio': 'python3-imageio', 'torch': 'python3-torch',
    'trimesh': 'python3-trimesh-pip', 'rosbags': 'python3-rosbags-pip',
    'yourdfpy': 'python3-yourdfpy-pip', 'pyrealsense2': 'python3-pyrealsense2-pip',
}
#: Imports without a key of their own, and why.
NO_KEY = {
    'warp': 'warp-lang has no rosdep key: requirements-workstation.txt installs it',
    'nvdiffrast': 'optional CUDA rasterizer, built from source (README)',
    'ray': 'refine-batch only (imported there, a clear error without it); no rosdep key: '
           'requirements-workstation.txt pins ray[client]',
    'lz4': 'a dependency of rosbags (python3-rosbags-pip)',
    'ruamel': 'a dependency of rosbags (python3-rosbags-pip)',
    'backports': 'a dependency of rosbags before Python 3.14 (python3-rosbags-pip)',
    'compression': 'the standard library from Python 3.14 (guarded import)',
    'handypriors_ros': 'this package',
}


def test_package_xml_declares_what_the_package_imports():
    import ast
    import xml.etree.ElementTree as ET
    imported = set()
    for path in (REPO / 'handypriors_ros').rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                imported |= {a.name.split('.')[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split('.')[0])
    third_party = imported - set(sys.stdlib_module_names)
    unknown = third_party - set(IMPORT_KEYS) - set(NO_KEY)
    assert not unknown, (f'imports {sorted(unknown)} have no package.xml key: add an '
                         f'<exec_depend> (rosdep key) and an IMPORT_KEYS entry')
    root = ET.parse(REPO / 'package.xml').getroot()
    declared = {e.text for e in root if e.tag in ('depend', 'exec_depend')}
    needed = {IMPORT_KEYS[m] for m in third_party if m in IMPORT_KEYS}
    assert needed <= declared, f'package.xml lacks {sorted(needed - declared)}'
    # rosbag2 for `ros2 bag play` (replay.launch.py) and its MCAP storage (the bags we write).
    assert {'ros2bag', 'rosbag2_storage_mcap', 'ament_cmake_pytest'} <= \
        declared | {e.text for e in root if e.tag == 'test_depend'}
