"""The rollout: one clock, one state machine, every step recorded as it was executed. Pure logic,
driven by ticks and events; nodes/orchestrator_node.py is its ROS shell."""
