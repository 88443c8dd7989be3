# The robot PC's image: ROS 2 Kilted (Ubuntu 24.04) with pld_robot built by colcon, the way
# ros2_ws/README.md does it by hand: a venv over the system ROS with the pinned lock files, then
# `python -m colcon build` from that venv.
#
#   docker build -f docker/robot.Dockerfile -t pld-robot:0.1.0 .          # from the repository root
#   docker run --rm -it --network host --ipc host --privileged \
#       -v /dev:/dev -v "$PWD/calibration:/opt/pld_robot/calibration" -v "$PWD/pld_data:/opt/pld_robot/pld_data" \
#       pld-robot:0.1.0 ros2 launch pld_robot franka.launch.py
#
# Pinned: the base image by tag (pin its digest too once you have pulled it: docker/README.md),
# Python packages by requirements/*.txt. torch comes as the CPU build (the robot PC runs only the
# small reward and residual networks; the VLA is served from the workstation).
FROM ros:kilted-ros-base-noble

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu \
    MUJOCO_GL=egl
# colcon from apt, and the libraries the wheels load (the same list as scripts/bootstrap.sh)
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3-venv python3-colcon-common-extensions \
        libusb-1.0-0 libosmesa6 libegl1 libgomp1 libquadmath0 libudev1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/pld_robot
# The lock files first, so that a code change does not reinstall every package. The venv sees the
# system's rclpy and message packages and installs no ROS wheels over them (requirements/README.md).
COPY requirements/ requirements/
RUN python3 -m venv --system-site-packages .venv && touch .venv/COLCON_IGNORE \
    && .venv/bin/pip install -r requirements/build.txt \
    && .venv/bin/pip install -r requirements/base.txt
COPY . .
# `pld-robot` in the venv, then the ROS package: colcon from the venv's Python, so the executables'
# #! line is the venv's interpreter and the nodes find franky, pyrealsense2 and torch
RUN .venv/bin/pip install --no-deps --no-build-isolation -e . \
    && bash -c 'source /opt/ros/kilted/setup.bash && source .venv/bin/activate && cd ros2_ws && python -m colcon build'

COPY docker/robot_entrypoint.sh /usr/local/bin/pld-robot-entrypoint
ENTRYPOINT ["/usr/local/bin/pld-robot-entrypoint"]
CMD ["ros2", "launch", "pld_robot", "franka.launch.py"]
