"""The sim lab graph: `ros2 launch pld_robot sim.launch.py [config:=/path/to/sim.yaml]`."""

from pld_robot.nodes.launch_graph import launch_description


def generate_launch_description():
    return launch_description("sim.yaml")
