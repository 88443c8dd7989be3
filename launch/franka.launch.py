"""A lab Franka: `ros2 launch pld_robot franka.launch.py [config:=/path/to/franka.yaml]`."""

from pld_robot.nodes.launch_graph import launch_description


def generate_launch_description():
    return launch_description("franka.yaml")
