"""The Fast DDS profile for large images (handypriors_ros.ros.dds, config/fastdds_large_images.xml).

- the launch files' choice of profile (``dds_profile``) and the transports' description, as pure
  functions;
- the shipped file, read with the standard library's XML parser;
- that Fast DDS itself takes it: a child process creates a node and lists the shared-memory
  segments it has mapped (``/proc/self/maps``, the kernel's view): 8 MiB with the profile,
  Fast DDS's default 512 KB without (segments are /dev/shm/fastdds_* in Fast DDS 3,
  fastrtps_* in Fast DDS 2). Both under ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``
  (where rmw_fastrtps ignores ``FASTDDS_BUILTIN_TRANSPORTS``) and ``SUBNET``.
"""
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from handypriors_ros.core.errors import InputError
from handypriors_ros.resources import package_file
from handypriors_ros.ros import dds

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / dds.LARGE_IMAGES_PROFILE
NS = '{http://www.eprosima.com}'


def _package_profile() -> Path:
    return PROFILE


# -- choosing the profile (launch argument dds_profile) -------------------------------------
def test_auto_gives_the_package_profile_in_the_variable_of_the_fastdds_generation(tmp_path):
    both = {'FASTDDS_DEFAULT_PROFILES_FILE': str(PROFILE),
            'FASTRTPS_DEFAULT_PROFILES_FILE': str(PROFILE)}
    assert dds.profile_environment('auto', {}, _package_profile) == both  # nothing tells
    assert dds.profile_environment(
        'auto', {'RMW_IMPLEMENTATION': 'rmw_fastrtps_dynamic_cpp'}, _package_profile) == both
    # Fast DDS 3 warns that FASTRTPS_ is deprecated; Fast DDS 2 reads only FASTRTPS_.
    for distro, name in (('kilted', 'FASTDDS_DEFAULT_PROFILES_FILE'),
                         ('rolling', 'FASTDDS_DEFAULT_PROFILES_FILE'),
                         ('jazzy', 'FASTRTPS_DEFAULT_PROFILES_FILE'),
                         ('humble', 'FASTRTPS_DEFAULT_PROFILES_FILE')):
        assert dds.profile_environment('auto', {'ROS_DISTRO': distro}, _package_profile) == \
            {name: str(PROFILE)}, distro
    for share, name in (('fastdds', 'FASTDDS_DEFAULT_PROFILES_FILE'),
                        ('fastrtps', 'FASTRTPS_DEFAULT_PROFILES_FILE')):
        prefix = tmp_path / share
        (prefix / 'share' / share).mkdir(parents=True)
        environ = {'AMENT_PREFIX_PATH': os.pathsep.join([str(tmp_path / 'other'), str(prefix)])}
        assert dds.profile_environment('auto', environ, _package_profile) == \
            {name: str(PROFILE)}, share


@pytest.mark.parametrize('environ', [
    {'FASTDDS_DEFAULT_PROFILES_FILE': '/etc/mine.xml'},
    {'FASTRTPS_DEFAULT_PROFILES_FILE': '/etc/mine.xml'},
    {'RMW_IMPLEMENTATION': 'rmw_cyclonedds_cpp'},
    {'RMW_IMPLEMENTATION': 'rmw_zenoh_cpp'},
])
def test_auto_leaves_a_users_profile_and_other_rmws_alone(environ):
    def never() -> Path:
        raise AssertionError('the package profile was looked up')
    assert dds.profile_environment('auto', environ, never) == {}


@pytest.mark.parametrize('choice', ['none', '', '  '])
def test_none_sets_nothing(choice):
    assert dds.profile_environment(choice, {}, _package_profile) == {}


def test_a_given_file_is_used_and_a_missing_or_broken_one_is_refused(tmp_path):
    mine = tmp_path / 'mine.xml'
    mine.write_text(PROFILE.read_text())
    assert set(dds.profile_environment(str(mine), {}, _package_profile).values()) == {str(mine)}
    with pytest.raises(InputError, match='dds_profile.*no file'):
        dds.profile_environment(str(tmp_path / 'missing.xml'), {}, _package_profile)
    broken = tmp_path / 'broken.xml'
    broken.write_text('<dds><profiles>')
    with pytest.raises(InputError, match='dds_profile.*not XML'):
        dds.profile_environment(str(broken), {}, _package_profile)


def test_description_says_what_is_in_effect():
    assert dds.describe_transports({'FASTDDS_DEFAULT_PROFILES_FILE': '/p.xml'}).startswith(
        'profile /p.xml')
    ignored = dds.describe_transports({'FASTDDS_BUILTIN_TRANSPORTS': 'SHM',
                                       'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST'})
    assert 'FASTDDS_BUILTIN_TRANSPORTS=SHM is ignored' in ignored and '512 KB' in ignored
    assert dds.describe_transports({'FASTDDS_BUILTIN_TRANSPORTS': 'SHM',
                                    'ROS_AUTOMATIC_DISCOVERY_RANGE': 'SUBNET'}).startswith('SHM')
    assert dds.describe_transports({'RMW_IMPLEMENTATION': 'rmw_cyclonedds_cpp'}) == \
        'rmw_cyclonedds_cpp'
    assert dds.profile_hint({}) is not None
    assert dds.profile_hint({'FASTRTPS_DEFAULT_PROFILES_FILE': '/p.xml'}) is None
    assert dds.profile_hint({'RMW_IMPLEMENTATION': 'rmw_cyclonedds_cpp'}) is None


# -- the shipped file -------------------------------------------------------------------------
def test_shipped_profile_is_found_and_sets_an_8_mib_segment_with_udp():
    assert package_file(dds.LARGE_IMAGES_PROFILE).resolve() == PROFILE.resolve()
    root = ET.parse(PROFILE).getroot()
    descriptors = {d.findtext(f'{NS}transport_id'): d
                   for d in root.iter(f'{NS}transport_descriptor')}
    kinds = {d.findtext(f'{NS}type'): d for d in descriptors.values()}
    assert set(kinds) == {'SHM', 'UDPv4'}
    assert int(kinds['SHM'].findtext(f'{NS}segment_size')) == 8 * 1024 * 1024
    participant, = root.iter(f'{NS}participant')
    assert participant.get('is_default_profile') == 'true'
    rtps = participant.find(f'{NS}rtps')
    assert rtps.findtext(f'{NS}useBuiltinTransports') == 'false'
    assert {t.text for t in rtps.find(f'{NS}userTransports')} == set(descriptors)


# -- Fast DDS takes it -------------------------------------------------------------------------
_CHILD = r'''
import rclpy
from std_msgs.msg import String
rclpy.init()
node = rclpy.create_node('handypriors_test_dds_profile')
node.create_publisher(String, 'handypriors_test_dds_profile', 1)
sizes = []
for line in open('/proc/self/maps'):
    path = line.split()[-1]
    if path.startswith(('/dev/shm/fastdds_', '/dev/shm/fastrtps_')) and 'port' not in path:
        start, end = (int(x, 16) for x in line.split()[0].split('-'))
        sizes.append(end - start)
print('SEGMENTS', *sorted(set(sizes)))
node.destroy_node()
rclpy.shutdown()
'''


def _segments(environ: dict) -> tuple[list[int], str]:
    """Sizes [bytes] of the Fast DDS segments a fresh node's process maps, and its stderr."""
    pytest.importorskip('rclpy', reason='rclpy is not installed (run ./run.sh test)')
    from ros_helpers.domains import free_domain_id
    env = {k: v for k, v in os.environ.items() if k not in dds.PROFILE_VARIABLES}
    env.update(environ, ROS_DOMAIN_ID=str(free_domain_id()))
    done = subprocess.run([sys.executable, '-c', _CHILD], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    line, = [ln for ln in done.stdout.splitlines() if ln.startswith('SEGMENTS')]
    return [int(x) for x in line.split()[1:]], done.stderr


@pytest.mark.parametrize('discovery_range', ['LOCALHOST', 'SUBNET'])
def test_fastdds_maps_the_profiles_segment(discovery_range):
    environ = {k: v for k, v in os.environ.items() if k not in dds.PROFILE_VARIABLES}
    values = dds.profile_environment('auto', environ, _package_profile)
    assert len(values) == 1, values  # this install tells its Fast DDS generation
    with_profile, errors = _segments({'ROS_AUTOMATIC_DISCOVERY_RANGE': discovery_range, **values})
    assert 'XMLPARSER' not in errors and 'deprecated' not in errors, errors
    assert max(with_profile) >= 8 * 1024 * 1024, with_profile
    without, _ = _segments({'ROS_AUTOMATIC_DISCOVERY_RANGE': discovery_range})
    assert without and max(without) < 1024 * 1024, without
