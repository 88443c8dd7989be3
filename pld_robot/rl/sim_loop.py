"""Residual SAC against the fast sim env, in one process: PLD's probe stage in miniature.

    env = PickCubeEnv(FastEnvConfig())
    result = train_in_sim(env, SimRLConfig(env_steps=40_000), load_rl_config(path), ImperfectExpert)
    result.curve          # evaluations: env steps, wall time, success rate, Q, temperature, ...
    result.agent.policy   # the trained residual (export it with checkpoint.export_actor)

The loop is the robot's, compressed: whole episodes are collected with the current actor, turned into
transitions by the same `episodes.py` code that reads the store, and learned from once they end (as
the learner learns from committed episodes), with `sac.utd` critic updates per new step. Warm-up
episodes are the base acting alone; the successful ones are the offline buffer, and Cal-QL pre-trains
the critic on them before the residual acts (PLD). Every budget counts environment steps, warm-up and
all; evaluation episodes (the deterministic actor on held-out seeds) are not counted.

Without a base (`use_base=False`) the same agent is SAC from scratch: the "base" action is the centre
of the action box and xi is 1, so the actor's delta spans the whole box; there is no offline data,
so no Cal-QL and no offline half of the batch, and the warm-up episodes use the untrained actor.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from pld_robot.data.layout import EpisodeInfo, Outcome, Source, rgb_key
from pld_robot.rl.buffers import MixedSampler, ReplayBuffer
from pld_robot.rl.calql import pretrain_critic
from pld_robot.rl.config import ResidualSACConfig, ResidualScaleConfig
from pld_robot.rl.episodes import episode_transitions, route_episode
from pld_robot.rl.policy import ResidualPolicy
from pld_robot.rl.sac import ResidualSAC
from pld_robot.sim.fast_env import PickCubeEnv



class BasePolicy(Protocol):  # ImperfectExpert, or pld_sim's chunk-executing PI0
    def reset(self) -> None: ...
    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray: ...


BaseFactory = Callable[[int], BasePolicy]  # seed -> a fresh base policy


@dataclass(frozen=True)
class SimRLConfig:
    env_steps: int = 40_000  # the whole budget, warm-up episodes included
    use_base: bool = True  # False: SAC from scratch (see the module docstring)
    eval_every: int = 2_500  # env steps between evaluations
    eval_episodes: int = 20
    final_eval_episodes: int = 100
    eval_seed: int = 1_000_000  # evaluation episodes use env seeds eval_seed, eval_seed + 1, ...
    seed: int = 0

    def __post_init__(self):
        for name in ("env_steps", "eval_every", "eval_episodes", "final_eval_episodes"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"sim RL: {name} must be a positive integer, got {getattr(self, name)!r}")


@dataclass
class Episode:
    steps: dict[str, np.ndarray]  # the store's keys: obs keys, action, base_action, residual_action, source, reward
    success: bool

    @property
    def length(self) -> int:
        return len(self.steps["action"])

    def info(self) -> EpisodeInfo:
        return EpisodeInfo(outcome=(Outcome.SUCCESS if self.success else Outcome.FAILURE).value,
                           length=self.length)


@dataclass
class SimRLResult:
    agent: ResidualSAC
    curve: list[dict]  # one row per evaluation
    final_success: float  # over final_eval_episodes
    train_wall_s: float  # collecting and learning, evaluations excluded


def observation(obs: dict[str, np.ndarray], cameras: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The env's observation in the store's keys. With cameras the state is proprioception only (the
    cube is for the images to show); without, the cube's true pose joins the state."""
    if cameras:
        return {"state": obs["state"], **{rgb_key(c): obs[c] for c in cameras}}
    return {"state": np.concatenate([obs["state"], obs["cube"]])}


def state_dim(env: PickCubeEnv, cameras: tuple[str, ...]) -> int:
    space = env.observation_space
    return space["state"].shape[0] + (0 if cameras else space["cube"].shape[0])


def run_episode(env: PickCubeEnv, seed: int, base: BasePolicy | None, policy: ResidualPolicy | None,
                cameras: tuple[str, ...], deterministic: bool = False, prefix_steps: int = 0,
                source: Source = Source.PROBE) -> Episode:
    """One episode. `base` None: the base action is the action box's centre. `policy` None: the base
    acts alone. With a policy, base + residual act from step `prefix_steps` on (the orchestrator's
    hybrid mode), the base alone before; the base's steps are marked `source`. The recorded action is
    what was commanded, base + residual clipped to the box, as the orchestrator records it."""
    spec = env.action_spec
    low, high = np.asarray(spec.low, np.float32), np.asarray(spec.high, np.float32)
    centre = (low + high) / 2
    raw, _ = env.reset(seed=seed)
    if base is not None:
        base.reset()
    rows: dict[str, list] = {}
    success = False
    for t in range(env.config.max_steps):
        obs = observation(raw, cameras)
        base_action = np.asarray(base.act(raw), np.float32) if base is not None else centre
        corrected = policy is not None and t >= prefix_steps
        residual = policy.residual(obs, base_action, deterministic) if corrected else np.zeros_like(centre)
        action = np.clip(base_action + residual, low, high)
        raw, reward, success, truncated, _ = env.step(action)
        for key, value in (*obs.items(), ("action", action), ("base_action", base_action),
                           ("residual_action", action - base_action),
                           ("source", Source.RESIDUAL if corrected else source), ("reward", reward)):
            rows.setdefault(key, []).append(value)
        if success or truncated:
            break
    steps = {k: np.asarray(v) for k, v in rows.items()}
    steps["source"] = steps["source"].astype(np.uint8)
    steps["reward"] = steps["reward"].astype(np.float32)
    return Episode(steps, bool(success))


def evaluate(env: PickCubeEnv, episodes: int, seed: int, base_factory: BaseFactory | None,
             policy: ResidualPolicy | None, cameras: tuple[str, ...]) -> float:
    """Success rate of the deterministic actor (or the base alone) on env seeds seed, seed + 1, ..."""
    base = base_factory(seed) if base_factory is not None else None
    return float(np.mean([run_episode(env, seed + i, base, policy, cameras, deterministic=True).success
                          for i in range(episodes)]))


def from_scratch(rl: ResidualSACConfig) -> ResidualSACConfig:
    """The agent as SAC without a base: xi 1 over the whole box, no offline half."""
    return dataclasses.replace(rl, residual_scale=ResidualScaleConfig(start=1.0, end=1.0, ramp_steps=0),
                               replay=dataclasses.replace(rl.replay, offline_fraction=0.0))


def train_in_sim(env: PickCubeEnv, config: SimRLConfig, rl: ResidualSACConfig,
                 base_factory: BaseFactory | None, cameras: tuple[str, ...] = (),
                 progress: Callable[[dict], None] | None = None) -> SimRLResult:
    """Warm-up, Cal-QL pre-training (with a base) and online residual SAC within config.env_steps."""
    if not config.use_base:
        rl, base_factory = from_scratch(rl), None
    elif base_factory is None:
        raise ValueError("sim RL: use_base needs a base policy (base_factory)")
    torch.manual_seed(rl.seed)
    agent = ResidualSAC(rl, env.action_spec, state_dim(env, cameras))
    capacity = min(rl.replay.capacity, config.env_steps)
    offline, online = ReplayBuffer(capacity, "offline"), ReplayBuffer(capacity, "online")
    intervention = ReplayBuffer(1, "intervention")  # no person in the sim: stays empty
    base = base_factory(config.seed) if base_factory is not None else None
    obs_keys = agent.policy.encoder.obs_keys
    curve: list[dict] = []
    env_steps = episodes = offline_episodes = 0
    recent: list[bool] = []
    metrics: dict[str, float] = {}
    train_s, next_eval = 0.0, 0

    def record(episode: Episode) -> None:
        nonlocal env_steps, episodes
        route_episode(episode.steps, episode.info(), obs_keys, online, intervention, rl.sac)
        env_steps += episode.length
        episodes += 1
        recent.append(episode.success)
        del recent[:-20]

    def evaluate_now(phase: str) -> None:
        nonlocal next_eval
        policy = agent.policy if agent.actor_updates or not config.use_base else None
        row = {"phase": phase, "env_steps": env_steps, "episodes": episodes, "offline_episodes": offline_episodes,
               "train_wall_s": round(train_s, 1),
               "eval_success": evaluate(env, config.eval_episodes, config.eval_seed, base_factory, policy, cameras),
               "train_success_recent": float(np.mean(recent)) if recent else 0.0,
               **{k: round(v, 5) for k, v in metrics.items()}}
        curve.append(row)
        next_eval = env_steps + config.eval_every
        if progress is not None:
            progress(row)

    started = time.monotonic()
    for _ in range(rl.replay.warmup_episodes):
        if env_steps >= config.env_steps:
            break
        episode = run_episode(env, config.seed + episodes, base, None if config.use_base else agent.policy, cameras)
        record(episode)
        if config.use_base and episode.success and offline_episodes < rl.calql.offline_episodes:
            offline.add(episode_transitions(episode.steps, episode.info(), obs_keys, rl.sac)[0])
            offline_episodes += 1
    # no success in the warm-up: nothing to pre-train on, and the whole batch is online data
    replay = rl.replay if len(offline) else dataclasses.replace(rl.replay, offline_fraction=0.0)
    sampler = MixedSampler(offline, online, intervention, rl.sac.batch_size, replay, seed=rl.seed)
    if len(offline) and rl.calql.pretrain_updates:
        metrics = pretrain_critic(agent, lambda: offline.sample(rl.sac.batch_size, sampler.rng), rl.calql)
    agent.env_steps = env_steps
    train_s += time.monotonic() - started
    evaluate_now("warmup")
    while env_steps < config.env_steps:
        started = time.monotonic()
        episode = run_episode(env, config.seed + episodes, base, agent.policy, cameras)
        record(episode)
        metrics = agent.update(sampler.sample, env_steps=episode.length)
        train_s += time.monotonic() - started
        if env_steps >= next_eval or env_steps >= config.env_steps:
            evaluate_now("online")
    final = evaluate(env, config.final_eval_episodes, config.eval_seed, base_factory, agent.policy, cameras)
    return SimRLResult(agent, curve, final, train_s)

