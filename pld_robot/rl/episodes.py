"""Recorded episodes -> transitions, and where each goes.

    keys = episode_keys(agent.policy.encoder.obs_keys)
    counts = route_episode(reader.episode(i, keys), reader.info(i), obs_keys, online, intervention, gamma)
    offline.add(episode_transitions(reader.episode(j, keys), reader.info(j), obs_keys, gamma)[0])

The reward is PLD's sparse success reward, taken from the episode's outcome: 1 on the last step of
a successful episode, which is terminal; 0 everywhere else. Any other ending is a truncation (the
state is not absorbing), so the last step of such an episode, which has no next observation, is
dropped rather than bootstrapped from a made-up one.

Routing (PLD, HIL-SERL): the probe prefix of a hybrid episode (the base acting alone for its first
`extra["probe_steps"]` steps) is not RL data; human steps go to the intervention buffer with the
person's executed action; everything else goes to the online buffer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pld_robot.data.layout import EpisodeInfo, Outcome, Source
from pld_robot.rl.buffers import ReplayBuffer
from pld_robot.rl.calql import discounted_returns

STEP_KEYS = ("action", "base_action", "residual_action", "source")


def episode_keys(obs_keys: Sequence[str]) -> list[str]:
    """The store arrays `episode_transitions` reads."""
    return [*obs_keys, *STEP_KEYS]


def episode_transitions(steps: Mapping[str, np.ndarray], info: EpisodeInfo, obs_keys: Sequence[str],
                        gamma: float) -> tuple[dict, np.ndarray]:
    """The episode's transitions (batched, see buffers.py) and the source code of each one's step."""
    missing = [k for k in episode_keys(obs_keys) if k not in steps]
    if missing:
        raise KeyError(f"episode: lacks array(s) {missing}; read it with keys=episode_keys(obs_keys)")
    length = len(steps["action"])
    success = info.outcome == Outcome.SUCCESS.value
    reward = np.zeros(length, dtype=np.float32)
    done = np.zeros(length, dtype=np.float32)
    if length and success:
        reward[-1] = done[-1] = 1.0
    kept = np.arange(length if success else max(length - 1, 0))
    following = np.minimum(kept + 1, length - 1)  # the terminal step's "next" is itself; `done` masks it
    transitions = {
        "obs": {k: steps[k][kept] for k in obs_keys},
        "next_obs": {k: steps[k][following] for k in obs_keys},
        "base_action": steps["base_action"][kept],
        "residual_action": steps["residual_action"][kept],
        "action": steps["action"][kept],
        "reward": reward[kept],
        "done": done[kept],
        "next_base_action": steps["base_action"][following],
        "mc_return": discounted_returns(reward, gamma)[kept],
    }
    return transitions, np.asarray(steps["source"])[kept]


def route_episode(steps: Mapping[str, np.ndarray], info: EpisodeInfo, obs_keys: Sequence[str],
                  online: ReplayBuffer, intervention: ReplayBuffer, gamma: float) -> dict[str, int]:
    """Add a recorded (base, residual or hybrid) episode's transitions to the online and intervention
    buffers; returns how many went where, and how many probe-prefix steps were left out."""
    transitions, source = episode_transitions(steps, info, obs_keys, gamma)
    probe_steps = int(info.extra.get("probe_steps", 0))
    human = source == Source.HUMAN
    # A person who takes over during the probe prefix is still a human step worth learning from.
    probe = (np.arange(len(source)) < probe_steps) & ~human
    counts = {"online": 0, "intervention": 0, "probe": int(probe.sum())}
    for name, buffer, mask in (("online", online, ~probe & ~human), ("intervention", intervention, human)):
        if mask.any():
            buffer.add(_select(transitions, mask))
            counts[name] = int(mask.sum())
    return counts


def _select(transitions: dict, mask: np.ndarray) -> dict:
    return {f: ({k: v[mask] for k, v in value.items()} if isinstance(value, dict) else value[mask])
            for f, value in transitions.items()}
