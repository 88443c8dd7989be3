"""pld_robot: an ament_python ROS 2 package that is also a plain pip package.

Two ways to install the same tree:

* ROS 2: `cd ros2_ws && colcon build` (ros2_ws/src/pld_robot is a symlink to this directory). colcon
  runs this file with setup.cfg's [install]/[develop] sections, so the executables land in
  `install/pld_robot/lib/pld_robot/` where `ros2 run pld_robot <node>` finds them, and data_files
  below install the ament index marker, package.xml, launch files and configs under share/.
* pip: `pip install -e .` (what scripts/bootstrap.sh does). pip writes the console scripts into the
  environment's bin/ (so `.venv/bin/pld-robot` exists; setup.cfg's script dirs do not apply to
  wheels). An editable install does not install data_files (the code finds configs in the source
  tree, see pld_robot/paths.py); a plain `pip install .` puts them under `<venv>/share/`.

Dependency pins live in ONE place: the lock files in requirements/ (base.txt, sim.txt, ros.txt,
dev.txt, colcon.txt), which scripts/bootstrap.sh installs. This file only names the direct
dependencies without versions, so a lab PC can combine them with its system ROS 2 and a checkout
stays installable by plain pip. Keep the names here in step with the lock files (see
requirements/README.md).

Keep `name`, `version` and the entry points literal: tests/test_packaging.py reads them with `ast`.
"""

import os
from glob import glob

from setuptools import find_packages, setup

package_name = 'pld_robot'

# The ROS 2 Kilted wheels from PyPI. Only for machines WITHOUT a system ROS 2 (dev machines, CI);
# on a lab PC rclpy and the message packages come from /opt/ros and these must not be installed.
ROS_WHEELS = [
    'ros-rclpy[fastrtps]',
    'ros-rmw-fastrtps-cpp',
    'ros-std-msgs',
    'ros-sensor-msgs',
    'ros-geometry-msgs',
    'ros-std-srvs',
    'ros-trajectory-msgs',
    'ros-diagnostic-msgs',
]

TEST = ['pytest', 'pytest-timeout', 'stable-baselines3']

# colcon from pip, for building ros2_ws (and its test) where no system colcon exists.
COLCON = [
    'colcon-core',
    'colcon-ros',
    'colcon-python-setup-py',
    'colcon-bash',
    'ros-ament-package',
    'catkin-pkg',
]

setup(
    name=package_name,
    version='0.1.0',
    description='PLD (Probe, Learn, Distill) on a real arm with ROS 2',
    maintainer='pld_robot maintainers',
    maintainer_email='pld-robot-maintainers@example.com',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(exclude=['tests*', 'bench*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        (os.path.join('share', package_name), ['package.xml']),
        (os.path.join('share', package_name, 'launch'), sorted(glob('launch/*.launch.py'))),
        (os.path.join('share', package_name, 'config'), sorted(glob('config/*.yaml') + glob('config/*.xml'))),
        (os.path.join('share', package_name, 'config', 'policies'), sorted(glob('config/policies/*.yaml'))),
        (os.path.join('share', package_name, 'config', 'reward'), sorted(glob('config/reward/*.yaml'))),
        (os.path.join('share', package_name, 'config', 'rl'), sorted(glob('config/rl/*.yaml'))),
        (os.path.join('share', package_name, 'config', 'distill'), sorted(glob('config/distill/*.yaml'))),
        (os.path.join('share', package_name, 'config', 'pld_sim'), sorted(glob('config/pld_sim/*.yaml'))),
        (os.path.join('share', package_name, 'calibration', 'boards'), sorted(glob('calibration/boards/*.yaml'))),
    ],
    install_requires=[
        'numpy',
        'pyyaml',
        'franky-control',
        'mujoco',
        'pyrealsense2',
        'pysdl2',
        'pysdl2-dll',
        'opencv-python-headless',
        'zarr',
        'torch',
        'matplotlib',
        'tqdm',
        'transformers',
        'safetensors',
        'tokenizers',
        'fastapi',
        'uvicorn',
        'msgpack',
        'websockets',
        'httpx',
        'gymnasium',
        'peft',
        'python-can',
    ],
    extras_require={
        'sim': ['franky-sim'],
        'ros': ROS_WHEELS,
        'test': TEST,
        'dev': TEST + COLCON,
    },
    zip_safe=False,
    entry_points={
        'console_scripts': [
            'pld-robot = pld_robot.cli:main',
            'arm_node = pld_robot.nodes.arm_node:main',
            'camera_node = pld_robot.nodes.camera_node:main',
            'teleop_node = pld_robot.nodes.teleop_node:main',
            'sim_node = pld_robot.nodes.sim_node:main',
            'policy_node = pld_robot.nodes.policy_node:main',
            'orchestrator_node = pld_robot.nodes.orchestrator_node:main',
            'sim_operator = pld_robot.nodes.sim_operator:main',
            'reward_node = pld_robot.nodes.reward_node:main',
            'residual_node = pld_robot.nodes.residual_node:main',
        ],
    },
)
