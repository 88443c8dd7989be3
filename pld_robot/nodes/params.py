"""Node parameters -> typed config. Nodes are created with
`automatically_declare_parameters_from_overrides=True`, so whatever the YAML (via `ros2 launch`) or the
in-process runner passes arrives as dotted parameter names; this rebuilds the config dataclass."""

from __future__ import annotations

from typing import TypeVar

from rclpy.node import Node

from pld_robot.config import from_dict, unflatten

T = TypeVar("T")


def node_config(node: Node, cls: type[T], *, ignore: tuple[str, ...] = ("use_sim_time", "start_type_description_service")) -> T:
    flat = {
        name: param.value
        for name, param in node.get_parameters_by_prefix("").items()
        if name.split(".")[0] not in ignore
    }
    return from_dict(cls, unflatten(flat), where=node.get_name())
