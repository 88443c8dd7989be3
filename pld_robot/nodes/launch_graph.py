"""`ros2 launch` adapter over the graph description: every launch file is this plus a default config.

Imports `launch`/`launch_ros`, which exist wherever `ros2 launch` runs (not on every dev machine)."""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from pld_robot.nodes.graph import graph_from_config


def _nodes(context):
    config = LaunchConfiguration("config").perform(context)
    return [
        Node(package="pld_robot", executable=spec.executable, name=spec.name,
             parameters=[config], remappings=list(spec.remappings), output="screen")
        for spec in graph_from_config(config)
    ]


def launch_description(default_config: str) -> LaunchDescription:
    default = os.path.join(get_package_share_directory("pld_robot"), "config", default_config)
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=default, description="robot YAML"),
        OpaqueFunction(function=_nodes),
    ])
