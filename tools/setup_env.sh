#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv) from nothing:
#   pinned wheels (ROS 2 Kilted, torch, warp, ...), libusb for pyrealsense2, the message
#   interfaces (msg/ and tf2_msgs/TFMessage) generated into the venv, the launch wheels of
#   ../shared/wheels/ros2-launch when that folder exists, and the package itself.
# Idempotent: every step is skipped when its inputs have not changed (a second run takes seconds).
# Usage: tools/setup_env.sh                      .venv, ROS 2 Kilted (requirements.txt)
#        HP_ROS_DISTRO=jazzy tools/setup_env.sh  .venv-jazzy, ROS 2 Jazzy (requirements-jazzy.txt)
#        (HANDYPRIORS_VENV=/path overrides the location)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DISTRO="${HP_ROS_DISTRO:-kilted}"
case "$DISTRO" in
  kilted) REQUIREMENTS="$ROOT/requirements.txt"; DEFAULT_VENV="$ROOT/.venv" ;;
  jazzy) REQUIREMENTS="$ROOT/requirements-jazzy.txt"; DEFAULT_VENV="$ROOT/.venv-jazzy" ;;
  *) echo "[setup] error: HP_ROS_DISTRO must be kilted or jazzy (the distributions with wheels on the package index), got '$DISTRO'" >&2; exit 2 ;;
esac
VENV="${HANDYPRIORS_VENV:-$DEFAULT_VENV}"
LAUNCH_WHEELS="$ROOT/../shared/wheels/ros2-launch"
STAMPS="$VENV/.handypriors_stamps"
log() { echo "[setup] $*" >&2; }
die() { echo "[setup] error: $*" >&2; exit 1; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }
stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp_set() { mkdir -p "$STAMPS"; echo "$2" > "$STAMPS/$1"; }

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || die "Python 3.11 is required (the ROS 2 wheels of the package index are built for it); found $("$PYTHON" --version 2>&1). Set PYTHON=/path/to/python3.11."

# 1. the virtual environment
if [ ! -x "$VENV/bin/python" ]; then
  log "creating the virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
pip_quiet() {  # pip with its output in a log, shown when it fails
  "$VPY" -m pip --disable-pip-version-check "$@" >"$VENV/pip.log" 2>&1 \
    || { grep -v '^WARNING: Location' "$VENV/pip.log" | tail -n 30 >&2; die "pip $* failed (log: $VENV/pip.log)"; }
}
SITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

# 2. pinned wheels
req_hash="$(hash_of "$REQUIREMENTS" "$ROOT/requirements-base.txt")"
if ! stamp_ok requirements "$req_hash"; then
  log "installing the pinned wheels ($(basename "$REQUIREMENTS"), ROS 2 $DISTRO); a cold install takes about 2 minutes"
  pip_quiet install 'setuptools<80' wheel
  pip_quiet install -r "$REQUIREMENTS"
  stamp_set requirements "$req_hash"
fi

# 3. libusb for pyrealsense2 (a Debian package)
LDCONFIG="$(PATH="$PATH:/usr/sbin:/sbin" command -v ldconfig || echo ldconfig)"  # root's PATH only may have it
if ! "$LDCONFIG" -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing libusb-1.0-0 (pyrealsense2 needs it)"
    (apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q libusb-1.0-0 >/dev/null; }) \
      || log "warning: could not install libusb-1.0-0; the realsense_node will not import pyrealsense2"
  else
    log "warning: libusb-1.0-0 is missing and this is not root: run 'sudo apt-get install libusb-1.0-0' for the realsense_node"
  fi
fi

# 4. the exported CMake files of the ROS wheels name the wheel builder's Python and numpy
#    include dirs (PLATFORM.md); point them at this venv's.
PY_INC="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
NP_INC="$("$VPY" -c 'import numpy; print(numpy.get_include())')"
mapfile -t stale < <(grep -rl 'cp311-cp311' "$VENV/share" --include='*.cmake' 2>/dev/null || true)
if [ "${#stale[@]}" -gt 0 ]; then
  log "pointing ${#stale[@]} exported CMake files at this venv's Python and numpy headers"
  sed -i -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NP_INC#g" \
         -e "s#/opt/python/cp311-cp311/include/python3.11#$PY_INC#g" "${stale[@]}"
fi

# shellcheck source=tools/env.sh
HANDYPRIORS_VENV="$VENV" source "$ROOT/tools/env.sh"

build_interfaces() {  # name source_dir extra_cmake_args...
  local name="$1" src="$2"; shift 2
  local bdir="$VENV/build/$name"
  log "generating the $name message interfaces into the venv"
  rm -rf "$bdir"
  cmake -S "$src" -B "$bdir" -DCMAKE_INSTALL_PREFIX="$VENV" -DBUILD_TESTING=OFF \
        -DPython3_EXECUTABLE="$VPY" "$@" >"$bdir.log" 2>&1 \
    && cmake --build "$bdir" -j2 >>"$bdir.log" 2>&1 \
    && cmake --install "$bdir" >>"$bdir.log" 2>&1 \
    || { tail -n 30 "$bdir.log" >&2; die "building the $name interfaces failed (log: $bdir.log)"; }
}

# 5. tf2_msgs/TFMessage (no wheel on the package index)
tf2_hash="$(hash_of "$ROOT"/tools/interfaces/tf2_msgs/msg/*.msg "$ROOT/tools/interfaces/tf2_msgs/CMakeLists.txt")"
if ! stamp_ok tf2_msgs "$tf2_hash" || ! "$VPY" -c 'import tf2_msgs.msg' 2>/dev/null; then
  mkdir -p "$VENV/build"
  build_interfaces tf2_msgs "$ROOT/tools/interfaces/tf2_msgs"
  stamp_set tf2_msgs "$tf2_hash"
fi

# 6. handypriors_ros/msg: installed into a directory of its own, so that an editable checkout
#    of the Python package and the generated bindings form one package (see
#    handypriors_ros/__init__.py).
IFACE_PY="lib/handypriors_interfaces"
msg_hash="$(hash_of "$ROOT"/msg/*.msg "$ROOT/CMakeLists.txt" "$ROOT/package.xml")"
if ! stamp_ok interfaces "$msg_hash"; then
  mkdir -p "$VENV/build"
  build_interfaces handypriors_ros "$ROOT" -DHANDYPRIORS_INTERFACES_ONLY=ON -DPYTHON_INSTALL_DIR="$IFACE_PY"
  # The checkout's handypriors_ros/__init__.py must be the package's; keep only the bindings here.
  # Its egg-info would make pip take it for the package's own distribution (and uninstall it).
  rm -rf "$VENV/$IFACE_PY/handypriors_ros/__init__.py" "$VENV/$IFACE_PY"/handypriors_ros-*.egg-info
  echo "$VENV/$IFACE_PY" > "$SITE/zz_handypriors_interfaces.pth"
  stamp_set interfaces "$msg_hash"
fi

# 6b. launch, launch_ros and launch_testing (no wheels on the package index): the prebuilt wheels
#     of ../shared/wheels/ros2-launch when that folder exists (the test set-up of the dev and CI
#     machines; README there), and composition_interfaces, which launch_ros imports, built from
#     the sources beside them. Without that folder the launch tests skip, saying why.
if [ -d "$LAUNCH_WHEELS" ] && ls "$LAUNCH_WHEELS"/*.whl >/dev/null 2>&1; then
  launch_hash="$(cd "$LAUNCH_WHEELS" && ls -l --time-style=+%s ./*.whl composition_interfaces-src/srv/* | sha256sum | cut -c1-16)"
  if ! stamp_ok launch "$launch_hash" || ! "$VPY" -c 'import launch_ros.actions, launch_testing' 2>/dev/null; then
    log "installing the launch wheels of $LAUNCH_WHEELS"
    pip_quiet install --no-deps "$LAUNCH_WHEELS"/*.whl
    mkdir -p "$VENV/build"
    # Its tests (ADD_LINTER_TESTS) need linters that are not installed: BUILD_TESTING=OFF.
    build_interfaces composition_interfaces "$LAUNCH_WHEELS/composition_interfaces-src"
    stamp_set launch "$launch_hash"
  fi
else
  log "no launch wheels at $LAUNCH_WHEELS: the launch tests will skip"
fi

# 7. the package itself, editable, so the checkout is what runs
pkg_hash="$(hash_of "$ROOT/setup.py")"
if ! stamp_ok package "$pkg_hash:$ROOT"; then
  log "installing handypriors_ros (editable) and its executables"
  pip_quiet install --no-deps --no-build-isolation -e "$ROOT"
  stamp_set package "$pkg_hash:$ROOT"
fi

# 8. the activate script sets the same environment as tools/env.sh
if ! grep -q 'handypriors_ros environment' "$VENV/bin/activate"; then
  {
    echo ''
    echo '# handypriors_ros environment (tools/setup_env.sh)'
    echo "HANDYPRIORS_VENV=\"$VENV\" source \"$ROOT/tools/env.sh\""
  } >> "$VENV/bin/activate"
fi

"$VPY" -c 'import rclpy, torch, warp, trimesh, tf2_msgs.msg, handypriors_ros.msg' \
  || die "the environment does not import; remove $VENV and run again"
log "ready: $VENV (source tools/env.sh or $VENV/bin/activate to use it)"
