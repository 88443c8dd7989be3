"""Recorded episodes -> transitions, and where each goes.

    keys = episode_keys(agent.policy.encoder.obs_keys)
    counts = route_episode(reader.episode(i, keys), reader.info(i), obs_keys, online, intervention, sac_config)
    offline.add(episode_transitions(reader.episode(j, keys), reader.info(j), obs_keys, sac_config)[0])

The reward is PLD's sparse success reward, taken from the episode's outcome: 1 on the last step of
a successful episode, which is terminal; 0 everywhere else. Any other ending is a truncation (the
state is not absorbing), so the last step of such an episode, which has no next observation, is
dropped rather than bootstrapped from a made-up one.

Transitions are n-step (`sac.n_step`; PLD is silent, DrQ-v2 uses 3): the reward is the discounted
sum over the next n steps and the critic bootstraps from the observation n steps ahead, with
`discount` = gamma^k for the k steps actually spanned, or 0 once the success is within reach. A
0/1 reward at the end of a ~60-step episode reaches the early steps n times faster; in the fast sim
n 3 took the residual from 0.65 to 0.95 success at the same budget (docs/residual_rl.md).

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
from pld_robot.rl.config import SACConfig

STEP_KEYS = ("action", "base_action", "residual_action", "source")


def episode_keys(obs_keys: Sequence[str]) -> list[str]:
    """The store arrays `episode_transitions` reads."""
    return [*obs_keys, *STEP_KEYS]


def episode_transitions(steps: Mapping[str, np.ndarray], info: EpisodeInfo, obs_keys: Sequence[str],
                        sac: SACConfig) -> tuple[dict, np.ndarray]:
    """The episode's transitions (batched, see buffers.py) and the source code of each one's step."""
    missing = [k for k in episode_keys(obs_keys) if k not in steps]
    if missing:
        raise KeyError(f"episode: lacks array(s) {missing}; read it with keys=episode_keys(obs_keys)")
    length = len(steps["action"])
    success = info.outcome == Outcome.SUCCESS.value
    gamma, last = sac.gamma, length - 1
    kept = np.arange(length if success else max(length - 1, 0))
    # n steps ahead, or the last recorded observation; the terminal step's is itself (discount 0 masks it)
    following = np.minimum(kept + sac.n_step, max(last, 0))
    terminal = success & (kept + sac.n_step > last)  # the success reward falls within the n steps
    step_rewards = np.zeros(length, dtype=np.float32)
    step_rewards[last:] = float(success)
    transitions = {
        "obs": {k: steps[k][kept] for k in obs_keys},
        "next_obs": {k: steps[k][following] for k in obs_keys},
        "base_action": steps["base_action"][kept],
        "residual_action": steps["residual_action"][kept],
        "action": steps["action"][kept],
        "reward": np.where(terminal, gamma ** (last - kept), 0.0),
        "discount": np.where(terminal, 0.0, gamma ** (following - kept)),
        "next_base_action": steps["base_action"][following],
        "mc_return": discounted_returns(step_rewards, gamma)[kept],
    }
    return transitions, np.asarray(steps["source"])[kept]


def route_episode(steps: Mapping[str, np.ndarray], info: EpisodeInfo, obs_keys: Sequence[str],
                  online: ReplayBuffer, intervention: ReplayBuffer, sac: SACConfig) -> dict[str, int]:
    """Add a recorded (base, residual or hybrid) episode's transitions to the online and intervention
    buffers; returns how many went where, and how many probe-prefix steps were left out."""
    transitions, source = episode_transitions(steps, info, obs_keys, sac)
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
