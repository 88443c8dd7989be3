"""`ros2 launch` adapter over the graph description: every launch file is this plus a default config.

Imports `launch`/`launch_ros`, which exist wherever `ros2 launch` runs (not on every dev machine)."""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from pld_robot.nodes.graph import graph_from_config


def _nodes(context):
    config = LaunchConfiguration("config").perform(context)
    exclude = {name.strip() for name in LaunchConfiguration("exclude").perform(context).split(",") if name.strip()}
    return [
        Node(package="pld_robot", executable=spec.executable, name=spec.name,
             parameters=[config], remappings=list(spec.remappings), output="screen")
        for spec in graph_from_config(config) if spec.name not in exclude
    ]


def launch_description(default_config: str, exclude: str = "") -> LaunchDescription:
    share = get_package_share_directory("pld_robot")
    actions = [
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config", default_config),
                              description="robot YAML"),
        DeclareLaunchArgument("exclude", default_value=exclude,
                              description="comma-separated node (section) names of the YAML not to start"),
        OpaqueFunction(function=_nodes),
    ]
    if "FASTDDS_DEFAULT_PROFILES_FILE" not in os.environ:  # big SHM segment for images: fastdds.xml
        actions.insert(0, SetEnvironmentVariable(
            "FASTDDS_DEFAULT_PROFILES_FILE", os.path.join(share, "config", "fastdds.xml")))
    return LaunchDescription(actions)

