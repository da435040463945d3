"""The command line's small subcommands and its error handling."""
import subprocess
import sys

from handypriors_ros.cli.main import main
from handypriors_ros.core.models.kinematics import HandKinematics


def test_urdf_subcommand_writes_a_loadable_hand_with_the_prefix(tmp_path, capsys):
    out = tmp_path / 'left.urdf'
    assert main(['urdf', '--side', 'left', '--prefix', 'lh_', '--out', str(out)]) == 0
    kin = HandKinematics.from_urdf(out)
    assert kin.root_link == 'lh_base_link'
    assert kin.joint_names[0] == 'lh_joint00' and len(kin.joint_names) == 16
    assert main(['urdf']) == 0
    assert '<robot' in capsys.readouterr().out


def test_bad_input_is_a_one_line_error_and_non_zero_exit(tmp_path):
    proc = subprocess.run([sys.executable, '-m', 'handypriors_ros.cli.main', 'track',
                           str(tmp_path / 'missing_bag'), '--object', str(tmp_path / 'x.ply'),
                           '--out', str(tmp_path / 'out')], capture_output=True, text=True)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith('handypriors')]
    assert len(lines) == 1 and 'error' in lines[0], proc.stderr
