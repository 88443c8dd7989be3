"""A lab YAM: `ros2 launch pld_robot yam.launch.py [config:=/path/to/yam.yaml]`."""

from pld_robot.nodes.launch_graph import launch_description


def generate_launch_description():
    return launch_description("yam.yaml")
