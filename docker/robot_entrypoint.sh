#!/usr/bin/env bash
# Every command in the robot image runs with ROS, the venv and the colcon install sourced, in the
# order ros2_ws/README.md gives (ROS, then the venv, then the workspace).
set -e
source /opt/ros/kilted/setup.bash
source /opt/pld_robot/.venv/bin/activate
source /opt/pld_robot/ros2_ws/install/setup.bash
exec "$@"
