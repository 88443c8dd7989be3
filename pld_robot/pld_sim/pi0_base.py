"""A PI0 checkpoint as the base policy of the fast env, executing action chunks as the robot does.

    policy = Pi0Policy(checkpoint, device="cpu")
    base = Pi0ChunkBase(policy, execute_steps=4, seed=0)
    base.reset(); action = base.act(env_obs)

Every `execute_steps` steps the policy is queried with the current observation and the first
`execute_steps` actions of its chunk are then executed open loop, one per step, as the chunk broker
plays a chunk on the robot. The flow-matching noise comes from the base's own seeded generator, so a
base made with the same seed acts the same on the same episodes.
"""

from __future__ import annotations

import numpy as np

from pld_robot.pld_sim.episodes import BLANK_CAMERA, PROMPT, blank_image
from pld_robot.policy.pi0.backend import Pi0Policy
from pld_robot.policy.spec import Observation
from pld_robot.rl.sim_loop import observation
from pld_robot.robots.action_spec import ActionSpec


class Pi0ChunkBase:
    def __init__(self, policy: Pi0Policy, execute_steps: int, seed: int, action_spec: ActionSpec = ActionSpec()):
        if not 1 <= execute_steps <= policy.spec.chunk_length:
            raise ValueError(f"execute_steps must be in [1, {policy.spec.chunk_length}] (the checkpoint's chunk "
                             f"length), got {execute_steps}")
        if tuple(policy.spec.action_names) != tuple(action_spec.names):
            raise ValueError(f"the checkpoint's actions {policy.spec.action_names} are not the env's "
                             f"{action_spec.names}")
        self.policy, self.execute_steps = policy, execute_steps
        self._low, self._high = np.asarray(action_spec.low, np.float32), np.asarray(action_spec.high, np.float32)
        self._rng = np.random.default_rng(seed)
        self._noise_shape = (policy.layout.chunk_size, policy.layout.max_action_dim)
        self.queries = 0
        self._chunk = np.zeros((0, action_spec.dim), np.float32)

    def reset(self) -> None:
        """A new episode: the next act() queries the policy (the noise stream goes on)."""
        self._chunk = self._chunk[:0]

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        if not len(self._chunk):
            request = Observation(images={BLANK_CAMERA: blank_image()}, state=observation(obs, ())["state"],
                                  prompt=PROMPT, noise=self._rng.standard_normal(self._noise_shape).astype(np.float32))
            self._chunk = self.policy.predict(request)[:self.execute_steps]
            self.queries += 1
        action, self._chunk = self._chunk[0], self._chunk[1:]
        return np.clip(action, self._low, self._high)
