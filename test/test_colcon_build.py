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
EXECUTABLES = ('tracker_node', 'realsense_node', 'refiner_node', 'handypriors')


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
