#!/usr/bin/env bash
# scripts/bootstrap.sh: set up, or check, the development environment of pld_robot.
#
#   bash scripts/bootstrap.sh [--force]
#
# 1. Debian libraries the wheels load at run time (apt-get only for what is missing; no
#    `apt-get update` when nothing is). As root directly, otherwise through sudo.
# 2. A venv at .venv/ (recreated when it is broken or was made for another Python / ROS mode),
#    with .venv/COLCON_IGNORE so colcon never crawls into it.
# 3. The pinned lock files in requirements/ plus `pip install -e .` (console scripts in .venv/bin),
#    only when the lock files, setup.py/setup.cfg/pyproject.toml or this script changed since the
#    last successful run (a hash kept in .venv/.pld-bootstrap.sha256). Otherwise it prints one line.
#
# ROS 2: on a machine WITHOUT system ROS 2 (dev machines, CI) the ROS 2 Kilted wheels from PyPI and
# colcon from pip are installed into the venv (requirements/ros.txt, colcon.txt). On a lab PC WITH
# system ROS 2, source it first (`source /opt/ros/<distro>/setup.bash`): the venv is then created
# with --system-site-packages and no ROS wheels are installed over the system's rclpy.
#
# Environment:
#   PYTHON=python3                interpreter to build the venv from
#   PLD_VENV=<repo>/.venv         where the venv lives
#   PLD_ROS=auto|system|wheels    auto (default): `system` when $PYTHON can import rclpy
#   PLD_SKIP_APT=1                do not check or install Debian packages
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF=$ROOT/scripts/$(basename "${BASH_SOURCE[0]}")
cd "$ROOT"
VENV=${PLD_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
STAMP=$VENV/.pld-bootstrap.sha256
FORCE=0
for arg in "$@"; do
  case $arg in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,/^set -euo/{/^#/p}' "$SELF"; exit 0 ;;
    *) echo "bootstrap: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

# libusb: pyrealsense2; libosmesa6: MuJoCo offscreen rendering with MUJOCO_GL=osmesa; libegl1:
# MUJOCO_GL=egl; libgomp1, libquadmath0: pinocchio/boost (franky-sim); libudev1: pyrealsense2.
# Everything else (SDL2, OpenCV, Fast DDS, ...) is bundled inside the wheels.
APT_PACKAGES=(libusb-1.0-0 libosmesa6 libegl1 libgomp1 libquadmath0 libudev1)

log() { echo "bootstrap: $*"; }
die() { echo "bootstrap: ERROR: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found; install Python 3 or set PYTHON=/path/to/python3"
# The real interpreter behind $PYTHON (not a pyenv shim, and not the venv's own python when .venv
# is activated in this shell: that one imports the rclpy wheels and would look like a system ROS).
BASE_PY=$("$PYTHON" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable) if sys.prefix != sys.base_prefix else sys.executable)') \
  || die "'$PYTHON' does not run"
PY_VER=$("$BASE_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# One bootstrap at a time per venv (several `make test` may start together); waiting is cheap and
# the checks below then see what the other run installed.
if command -v flock >/dev/null 2>&1; then
  exec 9>"${TMPDIR:-/tmp}/pld-bootstrap-$(printf '%s' "$VENV" | cksum | cut -d' ' -f1).lock"
  flock -n 9 || { log "waiting for another bootstrap of $VENV to finish"; flock 9; }
fi

# --- ROS mode -----------------------------------------------------------------------------------
ROS_MODE=${PLD_ROS:-auto}
has_system_rclpy() {
  "$BASE_PY" -s -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("rclpy") is None)' 2>/dev/null
}
case $ROS_MODE in
  auto)
    if has_system_rclpy; then
      ROS_MODE=system
    else
      shopt -s nullglob; ros_setups=(/opt/ros/*/setup.bash); shopt -u nullglob
      if [ ${#ros_setups[@]} -gt 0 ]; then
        die "a system ROS 2 is installed (${ros_setups[*]}) but $BASE_PY cannot import rclpy. Run 'source ${ros_setups[0]}' and re-run this script (or set PLD_ROS=wheels to use the PyPI wheels anyway)."
      fi
      ROS_MODE=wheels
    fi ;;
  system) has_system_rclpy || die "PLD_ROS=system but $BASE_PY cannot import rclpy: source /opt/ros/<distro>/setup.bash first" ;;
  wheels) ;;
  *) die "PLD_ROS must be auto, system or wheels (got '$ROS_MODE')" ;;
esac

# --- venv health ---------------------------------------------------------------------------------
VPY=$VENV/bin/python
venv_ok() {
  [ -x "$VPY" ] && [ -f "$VENV/pyvenv.cfg" ] || return 1
  local v want=false
  v=$("$VPY" -S -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || return 1
  [ "$v" = "$PY_VER" ] || return 1
  [ "$ROS_MODE" = system ] && want=true
  grep -qiE "^include-system-site-packages *= *$want *\$" "$VENV/pyvenv.cfg"
}
NEED_VENV=0
venv_ok || NEED_VENV=1

# --- Debian packages -----------------------------------------------------------------------------
missing=()
if [ "${PLD_SKIP_APT:-0}" != 1 ] && command -v dpkg-query >/dev/null 2>&1; then
  wanted=("${APT_PACKAGES[@]}")
  # Debian's own python3 needs python3-venv for `python3 -m venv` (ensurepip)
  if [ $NEED_VENV = 1 ] && ! "$BASE_PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    case $BASE_PY in /usr/bin/python3*) wanted+=("python3-venv") ;; esac
  fi
  status=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${wanted[@]}" 2>/dev/null || true)
  for p in "${wanted[@]}"; do
    awk -v p="$p" '$1 == p && $2 ~ /^ii/ { found = 1 } END { exit !found }' <<<"$status" || missing+=("$p")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    SUDO=()
  elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    die "missing Debian packages: ${missing[*]}. As root run: apt-get update && apt-get install -y ${missing[*]} (or set PLD_SKIP_APT=1 to skip this check)"
  fi
  command -v apt-get >/dev/null 2>&1 || die "missing Debian packages (${missing[*]}) and no apt-get here"
  log "installing Debian packages: ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- venv ----------------------------------------------------------------------------------------
if [ $NEED_VENV = 1 ]; then
  if [ -e "$VENV" ]; then
    if [ -f "$VENV/pyvenv.cfg" ] || [ -d "$VENV/bin" ] || [ -z "$(ls -A "$VENV")" ]; then
      log "recreating $VENV (broken, or made for another Python or ROS mode)"
      rm -rf "$VENV"
    else
      die "$VENV exists but is not a venv; move it away"
    fi
  fi
  venv_args=()
  [ "$ROS_MODE" = system ] && venv_args+=(--system-site-packages)
  log "creating $VENV (Python $PY_VER, ROS: $ROS_MODE)"
  "$BASE_PY" -m venv "${venv_args[@]}" "$VENV"
fi
# colcon must never crawl into the venv (it contains ROS package manifests of its own).
[ -e "$VENV/COLCON_IGNORE" ] || touch "$VENV/COLCON_IGNORE"

# --- Python packages -----------------------------------------------------------------------------
LOCKS=(requirements/build.txt requirements/base.txt requirements/sim.txt requirements/dev.txt)
[ "$ROS_MODE" = wheels ] && LOCKS+=(requirements/ros.txt requirements/colcon.txt)
HASH=$({ echo "python=$PY_VER ros=$ROS_MODE"; cat "${LOCKS[@]}" setup.py setup.cfg pyproject.toml "$SELF"; } \
  | sha256sum | cut -d' ' -f1)

if [ $FORCE = 0 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ] && [ -x "$VENV/bin/pld-robot" ]; then
  log "$VENV is up to date (Python $PY_VER, ROS: $ROS_MODE)"
  exit 0
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
# This machine's pip config names index locations that may not exist; pip warns about each one on
# every call. Drop that noise (and the "already satisfied" lines); keep everything else.
pipq() {
  "$VPY" -m pip "$@" --progress-bar off 2>&1 \
    | { grep -v -E "^WARNING: Location '.*' is ignored|^Requirement already satisfied|^Looking in (indexes|links):" || true; }
}

rm -f "$STAMP"
start=$SECONDS
log "installing Python packages into $VENV from ${LOCKS[*]} (a few minutes on a fresh machine)"
pipq install -q -r requirements/build.txt
pip_args=()
for f in "${LOCKS[@]:1}"; do pip_args+=(-r "$f"); done
pipq install -q "${pip_args[@]}"
# The package itself, editable (console scripts into .venv/bin). Its dependencies are the lock files
# above; it is built with the setuptools pinned in build.txt instead of downloading one.
# (PYTHONWARNINGS: hide setuptools' multi-line "Editable installation" notice.)
PYTHONWARNINGS=ignore pipq install -q --no-deps --no-build-isolation -e .

# Fail here, with a clear message, rather than in the first test: the imports below load the native
# libraries (libusb, Fast DDS, MuJoCo, SDL2, OpenCV).
"$VPY" -W ignore -c 'import numpy, yaml, franky, franky_sim, mujoco, cv2, sdl2, pyrealsense2, rclpy, std_msgs.msg' \
  || die "the installed packages do not import (see above)"
[ -x "$VENV/bin/pld-robot" ] || die "pip did not create $VENV/bin/pld-robot"

echo "$HASH" > "$STAMP"
log "done in $((SECONDS - start)) s (Python $PY_VER, ROS: $ROS_MODE)"
