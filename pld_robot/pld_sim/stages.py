"""The stages of the PLD loop in the fast sim, each a function from what is on disk to what it writes.

    demos = record_demos(out / "demos.zarr", config)                           # scripted demonstrations
    generalist = Pi0Policy(...) after run_sft(...)                             # sft.py
    probe_residual(env, generalist, config, out / "probe")                     # residual SAC, exported actor
    collect(env, generalist, residual, config, out / "pld_episodes.zarr")      # hybrid successes
    collect(env, generalist, None, config, out / "base_episodes.zarr")         # base-only successes
    evaluate(env, policy, config)                                              # held-out seeds
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pld_robot.config import ConfigError
from pld_robot.data.layout import EpisodeInfo, Source
from pld_robot.paths import shipped_config
from pld_robot.pld_sim.config import PLDSimConfig
from pld_robot.pld_sim.episodes import (
    PROMPT,
    collect_successes,
    open_store,
    probe_prefix,
    run_episode,
)
from pld_robot.pld_sim.pi0_base import Pi0ChunkBase
from pld_robot.policy.pi0.backend import Pi0Policy
from pld_robot.rl.checkpoint import export_actor, load_latest_actor
from pld_robot.rl.config import ResidualSACConfig, load_rl_config
from pld_robot.rl.policy import ResidualPolicy
from pld_robot.rl.sim_loop import SimRLConfig, train_in_sim
from pld_robot.sim.fast_env import ImperfectExpert, PickCubeEnv

Progress = Callable[[str], None]  # one status line


def record_demos(store: Path, config: PLDSimConfig, progress: Progress) -> dict:
    """The ImperfectExpert's successful episodes on env seeds 0, 1, ..., recorded as demonstrations
    (mode teleop, source human: what a person's demonstration would be), in demos' cube ranges."""
    demos = config.demos
    env = PickCubeEnv(demos.env_config(config.max_steps))
    expert = ImperfectExpert(cube_offset=demos.cube_offset, action_noise=demos.action_noise, seed=config.seed)

    def attempt(seed: int):
        episode = run_episode(env, seed, expert, source=Source.HUMAN)
        episode.steps["teleop_action"] = episode.steps["action"]
        return episode, EpisodeInfo(prompt=PROMPT, mode="teleop", extra={"env_seed": seed})

    try:
        with open_store(store, env) as writer:
            return collect_successes(attempt, iter(range(demos.max_attempts)), demos.episodes, writer, lambda s, a:
                                     progress(f"demos: {s}/{demos.episodes} successful of {a} attempts"))
    finally:
        env.close()


def load_base(checkpoint: Path, config: PLDSimConfig) -> Callable[[int], Pi0ChunkBase]:
    """seed -> a chunk-executing base on the checkpoint (loaded once, shared by the bases it makes)."""
    policy = Pi0Policy(checkpoint, device="cpu")
    return lambda seed: Pi0ChunkBase(policy, config.generalist.execute_steps, seed)


def rl_config(config: PLDSimConfig) -> ResidualSACConfig:
    """probe.rl_config with probe.rl_changes applied."""
    probe = config.probe
    path = Path(probe.rl_config)
    rl = load_rl_config(path if path.is_file() else shipped_config(probe.rl_config))
    sections: dict[str, dict] = {}
    for dotted, value in probe.rl_changes.items():
        section, name = dotted.split(".")
        sections.setdefault(section, {})[name] = tuple(value) if isinstance(value, list) else value
    try:
        changes = {name: dataclasses.replace(getattr(rl, name), **fields) for name, fields in sections.items()}
        return dataclasses.replace(rl, seed=config.seed, encoder=dataclasses.replace(rl.encoder, image_encoder="none"),
                                   **changes)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ConfigError(f"probe.rl_changes {probe.rl_changes}: {exc}") from exc


def probe_residual(env: PickCubeEnv, base_factory: Callable[[int], Pi0ChunkBase], config: PLDSimConfig,
                   out: Path, progress: Progress) -> dict:
    """Residual SAC on the generalist with state observations; the trained actor is exported into `out`."""
    probe = config.probe
    sim = SimRLConfig(env_steps=probe.env_steps, eval_every=probe.eval_every, eval_episodes=probe.eval_episodes,
                      final_eval_episodes=probe.eval_episodes, eval_seed=config.eval.seed, seed=config.seed)
    result = train_in_sim(env, sim, rl_config(config), base_factory, (), progress=lambda row: progress(
        f"probe: {row['env_steps']}/{probe.env_steps} env steps, residual success {row['eval_success']:.2f} "
        f"on {probe.eval_episodes} held-out seeds, train {row['train_wall_s']:.0f} s"))
    version = export_actor(result.agent, out)
    return {"final_success": result.final_success, "train_wall_s": round(result.train_wall_s, 1),
            "actor_version": version,
            "curve": [{k: row[k] for k in ("env_steps", "eval_success", "train_wall_s")} for row in result.curve]}


def load_residual(folder: Path) -> ResidualPolicy:
    exported = load_latest_actor(folder)
    if exported is None:
        raise FileNotFoundError(f"{folder}: no exported residual actor")
    return exported.policy


def collect(store: Path, env: PickCubeEnv, base_factory: Callable[[int], Pi0ChunkBase],
            residual: ResidualPolicy | None, config: PLDSimConfig, progress: Progress) -> dict:
    """N successful episodes into `store`: hybrid (a base-only prefix of random length, then base +
    residual) with a residual, base-only without; on the same env seeds either way."""
    rollouts, mode = config.rollouts, "hybrid" if residual is not None else "base"
    base = base_factory(config.seed)
    prefixes = np.random.default_rng(config.seed)

    def attempt(seed: int):
        prefix = probe_prefix(prefixes, config.max_steps, rollouts.alpha) if residual is not None else config.max_steps
        episode = run_episode(env, seed, base, residual, prefix)
        return episode, EpisodeInfo(prompt=PROMPT, mode=mode,
                                    extra={"env_seed": seed, "probe_steps": min(prefix, episode.length)})

    seeds = iter(range(rollouts.seed, rollouts.seed + rollouts.max_attempts))
    with open_store(store, env) as writer:
        return collect_successes(attempt, seeds, rollouts.episodes, writer, lambda s, a: progress(
            f"{mode} rollouts: {s}/{rollouts.episodes} successful of {a} attempts"))


def evaluate(env: PickCubeEnv, base_factory: Callable[[int], Pi0ChunkBase], config: PLDSimConfig,
             progress: Progress, name: str) -> dict:
    """The policy alone on the held-out seeds eval.seed, eval.seed + 1, ... (its noise seeded alike):
    its success rate, and per seed in order "1" (success) or "0", to see where it fails."""
    base, outcomes = base_factory(config.eval.seed), ""
    for i in range(config.eval.episodes):
        outcomes += "1" if run_episode(env, config.eval.seed + i, base).success else "0"
        progress(f"eval {name}: {outcomes.count('1')}/{i + 1} successful")
    return {"success_rate": outcomes.count("1") / config.eval.episodes, "outcomes": outcomes}


def eval_groups(env: PickCubeEnv, config: PLDSimConfig) -> dict[str, list[bool]]:
    """The held-out seeds (in evaluate's order) grouped by their cube's pose: the half of the yaw range
    nearer 0 and the other half (the imperfect expert fails on the turned cubes, docs/distill.md), and,
    when the demonstrations cover less than the whole range, inside it or outside."""
    demos, full = config.demos.env_config(config.max_steps), env.config
    half_yaw = max(abs(v) for v in full.cube_yaw_range) / 2
    small, large = f"|yaw| < {half_yaw:g}", f"|yaw| >= {half_yaw:g}"
    inside, outside = "inside the demonstrations' range", "outside the demonstrations' range"
    narrowed = demos.cube_x_range != full.cube_x_range or demos.cube_y_range != full.cube_y_range
    groups: dict[str, list[bool]] = {small: [], large: [], **({inside: [], outside: []} if narrowed else {})}
    for i in range(config.eval.episodes):
        _, info = env.reset(seed=config.eval.seed + i)
        x, y, *_, qz, qw = info["cube_pose"]
        turned = abs(2 * math.atan2(qz, qw)) >= half_yaw
        groups[small].append(not turned)
        groups[large].append(turned)
        if narrowed:
            shown = (demos.cube_x_range[0] <= x <= demos.cube_x_range[1]
                     and demos.cube_y_range[0] <= y <= demos.cube_y_range[1])
            groups[inside].append(shown)
            groups[outside].append(not shown)
    return groups
