# Source this file to use the project's virtual environment in a shell:
#     source tools/env.sh
# It sets what the ROS 2 wheels need (PLATFORM.md): the library path, the ament prefix and
# localhost-only discovery. tools/setup_env.sh creates the environment; ./run.sh sources this.
_hp_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export HANDYPRIORS_VENV="${HANDYPRIORS_VENV:-$_hp_root/.venv}"
export VIRTUAL_ENV="$HANDYPRIORS_VENV"
case ":$PATH:" in *":$VIRTUAL_ENV/bin:"*) ;; *) export PATH="$VIRTUAL_ENV/bin:$PATH" ;; esac
_hp_ld="$VIRTUAL_ENV/lib"
for _d in "$VIRTUAL_ENV"/lib/python3.11/site-packages/ros_*.libs; do
  [ -d "$_d" ] && _hp_ld="$_hp_ld:$_d"
done
export LD_LIBRARY_PATH="$_hp_ld${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The ros-wheels bootstrapper re-executes Python to set LD_LIBRARY_PATH; it is set already.
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
unset _hp_root _hp_ld _d
