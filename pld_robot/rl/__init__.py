"""Residual RL for PLD's probe stage: residual SAC on top of a frozen base policy (torch, no ROS).

config (defaults = config/rl/residual_sac.yaml), actions (bounds <-> [-1, 1]), encoders, networks,
policy (what the robot runs), buffers (replay, RLPD sampling), episodes (store episodes -> buffers),
sac (the agent), calql (critic pre-training), checkpoint (resume; actor export for hot-loading),
tail (reading a store as it grows), learner + metrics + cli (`pld-robot learn`), sim_loop (the same
loop against the fast sim env in one process, for bench/residual_rl.py). docs/residual_rl.md.
"""
