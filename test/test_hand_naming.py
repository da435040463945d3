"""Hand naming (core.frames.hand_naming): the robot's joint-state names and hand root frame for a
hand model, resolved once for every front; and the problem counter every front counts with."""
import numpy as np
import pytest

from handypriors_ros.core.errors import InputError
from handypriors_ros.core.frames import HandNaming, ProblemCounter, parse_joint_name_map
from handypriors_ros.core.models.joint_names import (allegro_joint_names,
                                                     allegro_ros1_joint_names,
                                                     ros1_to_ros2_name_map)

AH = allegro_joint_names('ah_')


def test_default_naming_is_the_model_s_own():
    naming = HandNaming.resolve(AH, 'ah_base_link')
    assert naming.joint_names == AH and naming.name_map == {}
    assert naming.hand_root_frame == 'ah_base_link'


def test_joint_prefix_renames_joints_and_root_frame():
    naming = HandNaming.resolve(AH, 'ah_base_link', joint_prefix='lh_')
    assert naming.hand_root_frame == 'lh_base_link'
    assert naming.name_map['lh_joint00'] == 'ah_joint00' and len(naming.name_map) == 16
    buf = naming.joint_buffer()
    names = allegro_joint_names('lh_')
    buf.add(1, names[::-1], np.arange(16.0)[::-1])
    np.testing.assert_array_equal(buf.lookup(1).q, np.arange(16.0))  # model order


def test_ros1_names_and_extra_entries():
    naming = HandNaming.resolve(AH, 'ah_base_link',
                                joint_name_map=['allegro_ros1', 'thumb_base:ah_joint00'])
    expected = dict(ros1_to_ros2_name_map('ah_'), thumb_base='ah_joint00')
    assert naming.name_map == expected
    buf = naming.joint_buffer()
    buf.add(1, allegro_ros1_joint_names(), np.arange(16.0))
    q = buf.lookup(1).q
    for i, name in enumerate(allegro_ros1_joint_names()):
        assert q[AH.index(expected[name])] == i


def test_explicit_root_frame_and_a_urdf_without_a_prefix():
    assert HandNaming.resolve(AH, 'ah_base_link', hand_root_frame='/my_hand').hand_root_frame \
        == 'my_hand'
    other = HandNaming.resolve(('j1', 'j2'), 'palm', joint_prefix='lh_')
    assert other.hand_root_frame == 'palm' and other.name_map == {}  # prefix unknown: kept


@pytest.mark.parametrize('entries, match', [
    (['joint_a'], "joint_name_map: expected entries 'incoming:urdf_joint' or 'allegro_ros1', "
                  "got 'joint_a'"),
    (['a:'], 'joint_name_map: expected entries'),
    ('a:ah_joint00', 'joint_name_map: expected a list of entries'),
])
def test_malformed_entries_are_named(entries, match):
    with pytest.raises(InputError, match=match):
        parse_joint_name_map(entries)


def test_entry_naming_a_joint_the_model_lacks():
    with pytest.raises(InputError, match=r"joint_name_map: \['ah_joint99'\] are not joints of "
                                         r'the hand model \(its joints: ah_joint00'):
        HandNaming.resolve(AH, 'ah_base_link', joint_name_map=['x:ah_joint99'])


def test_problem_counter_counts_every_problem_and_throttles_warnings():
    now = [0.0]
    warnings = []
    counter = ProblemCounter(warnings.append, period_s=2.0, clock=lambda: now[0])
    for _ in range(3):
        counter.report('missing_tf', 'frame skipped')
    counter.report('missing_mask', 'quiet')  # counted, never warned about
    assert counter.counts == {'missing_tf': 3, 'missing_mask': 1}
    assert warnings == ['[missing_tf] frame skipped']
    now[0] = 2.5
    counter.report('missing_tf', 'again')
    assert warnings[-1] == '[missing_tf] again (2 more since the last warning)'
    assert counter.take_period() == {'missing_tf': 4, 'missing_mask': 1}
    assert counter.take_period() == {}
    assert counter.summary() == '1 missing_mask, 4 missing_tf'
    assert ProblemCounter().summary() == 'no problem'
