"""The one graph description: which nodes a robot runs, read from its YAML.

Every top-level section of a robot config (`config/*.yaml`, ROS `ros__parameters` layout) is a node:
the section name is the node name, and the executable is the section name itself, or `camera_node`
for `camera_<name>` sections. `launch/*.launch.py` turns this into launch_ros Nodes for `ros2 launch`;
`GraphRunner` (nodes/runner.py) instantiates the same nodes in one process for `pld-robot sim` and
the tests. A node that only some rollout modes use (residual_node: residual and hybrid) is left out
when the orchestrator runs in another mode, rather than started to sit idle on the camera streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pld_robot.config import ConfigError, load_yaml, node_params

# executable -> (module, node class, its config class); every executable is also a console script
# in setup.py.
EXECUTABLES = {
    "sim_node": ("pld_robot.nodes.sim_node", "SimNode", "SimNodeConfig"),
    "arm_node": ("pld_robot.nodes.arm_node", "ArmNode", "ArmNodeConfig"),
    "camera_node": ("pld_robot.nodes.camera_node", "CameraNode", "CameraConfig"),
    "teleop_node": ("pld_robot.nodes.teleop_node", "TeleopNode", "TeleopNodeConfig"),
    "policy_node": ("pld_robot.nodes.policy_node", "PolicyNode", "PolicyNodeConfig"),
    "orchestrator_node": ("pld_robot.nodes.orchestrator_node", "OrchestratorNode", "OrchestratorConfig"),
    "sim_operator": ("pld_robot.nodes.sim_operator", "SimOperator", "SimOperatorConfig"),
    "reward_node": ("pld_robot.nodes.reward_node", "RewardNode", "RewardNodeConfig"),
    "residual_node": ("pld_robot.nodes.residual_node", "ResidualNode", "ResidualNodeConfig"),
}


# executable -> the orchestrator modes that use it; in any other mode the graph leaves it out
MODE_NODES = {"residual_node": ("residual", "hybrid")}


@dataclass(frozen=True)
class NodeSpec:
    name: str
    executable: str
    remappings: tuple[tuple[str, str], ...] = ()


def executable_for(section: str) -> str:
    if section.startswith("camera_"):
        return "camera_node"
    if section in EXECUTABLES:
        return section
    raise ConfigError(
        f"config section '{section}' is not a node this package provides; "
        f"known: {sorted(EXECUTABLES)} and camera_<name>"
    )


def graph_from_config(path: str | Path, mode: str | None = None) -> list[NodeSpec]:
    """The nodes of the YAML at `path`, for orchestrator mode `mode` (default: the YAML's own)."""
    data = load_yaml(path)
    sections = [name for name in data if name != "/**"]
    if not sections:
        raise ConfigError(f"{path}: no node sections")
    specs = [NodeSpec(name=name.lstrip("/"), executable=executable_for(name.lstrip("/"))) for name in sections]
    if not any(s.executable == "orchestrator_node" for s in specs):  # no rollouts here: nothing to decide
        return specs
    mode = mode or node_params(data, "orchestrator_node", source=str(path)).get("mode", "base")
    return [s for s in specs if mode in MODE_NODES.get(s.executable, (mode,))]
