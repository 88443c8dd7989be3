"""The sim lab graph: `ros2 launch pld_robot sim.launch.py [config:=/path/to/sim.yaml]`.

policy_node asks http://127.0.0.1:8000 for its spec at start, so serve the policy first:
`pld-robot serve-policy --backend scripted --config config/policies/scripted.yaml` (`pld-robot sim`
does both, on a free port). The success classifier (reward_node) is left out unless `exclude:=""`;
then set sim_operator.play_reward to false, so that only the classifier declares success. The
residual actor (residual_node) starts when orchestrator_node.mode in the config is residual or hybrid."""

from pld_robot.nodes.launch_graph import launch_description


def generate_launch_description():
    return launch_description("sim.yaml", exclude="reward_node")
