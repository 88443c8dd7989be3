"""PLDSimConfig: the sizes and budgets of `pld-robot pld-sim` (config/pld_sim/pick_cube.yaml, section
`pld_sim:`).

    config = load_pld_sim_config(shipped_config("pld_sim/pick_cube.yaml"))
    config = with_overrides(config, {"rollouts.episodes": 10})     # command-line sizes
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pld_robot.config import ConfigError, from_dict, load_yaml
from pld_robot.data.normalization import StdFloor
from pld_robot.sim.fast_env import FastEnvConfig


def _positive(where: str, **values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{where}.{name} must be positive, got {value!r}")


@dataclass(frozen=True)
class DemoConfig:
    """Scripted demonstrations: the ImperfectExpert (its systematic cube offset is what the generalist
    inherits and the residual can correct); only its successful episodes are recorded. The cube ranges
    narrow where the demonstrations place the cube (None: the env's whole range, where the probe,
    the rollouts and the evaluation place it)."""

    episodes: int = 60  # successful demonstrations recorded
    max_attempts: int = 300
    cube_offset: tuple[float, float, float] = (0.02, 0.0, 0.0)  # m, base frame: where the expert believes the cube is
    # m, std of the translation noise per step. At 0 whether the expert succeeds depends on the
    # cube's pose alone (its yaw), a failure the generalist's own successes cannot select away
    action_noise: float = 0.0
    cube_x_range: tuple[float, float] | None = None  # m, base frame
    cube_y_range: tuple[float, float] | None = None

    def __post_init__(self):
        _positive("demos", episodes=self.episodes, max_attempts=self.max_attempts)
        if self.max_attempts < self.episodes:
            raise ValueError(f"demos.max_attempts ({self.max_attempts}) must be >= demos.episodes ({self.episodes})")
        if len(self.cube_offset) != 3 or not all(math.isfinite(v) for v in self.cube_offset):
            raise ValueError(f"demos.cube_offset must be 3 finite numbers, got {self.cube_offset}")
        if not (math.isfinite(self.action_noise) and self.action_noise >= 0):
            raise ValueError(f"demos.action_noise must be >= 0, got {self.action_noise}")
        self.env_config(max_steps=1)  # the ranges must be ones the env accepts

    def env_config(self, max_steps: int) -> FastEnvConfig:
        """The fast env the demonstrations are recorded in."""
        ranges = {name: value for name, value in (("cube_x_range", self.cube_x_range),
                                                  ("cube_y_range", self.cube_y_range)) if value is not None}
        try:
            return FastEnvConfig(max_steps=max_steps, **ranges)
        except ValueError as exc:
            raise ValueError(f"demos: {exc}") from None


@dataclass(frozen=True)
class SFTConfig:
    """One supervised fine-tuning run (pld_robot.distill); the rest of DistillConfig keeps
    config/distill/pi0.yaml's values."""

    steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 50
    finetune: Literal["lora", "full"] = "full"  # the tiny model is small: LoRA buys nothing here

    def __post_init__(self):
        _positive("sft", steps=self.steps, batch_size=self.batch_size, lr=self.lr)
        if self.warmup_steps < 0:  # more than steps is allowed, as in DistillConfig: the lr stays in its ramp
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")


@dataclass(frozen=True)
class GeneralistConfig:
    """The small PI0 trained from scratch on the demonstrations."""

    width: int = 64  # hidden size of the VLM's Gemma and of the action expert
    layers: int = 2
    chunk_size: int = 8  # actions predicted per query
    execute_steps: int = 4  # actions of each chunk executed open loop before the next query
    num_inference_steps: int = 5  # flow-matching integration steps per query
    # of the demonstrations' statistics, which the students keep: the expert never tilts the hand, and
    # a finer state floor made the generalist close its hand wherever a residual's 0.01 rad roll took it
    std_floor: StdFloor = field(default_factory=lambda: StdFloor(state=0.05, action=0.005))
    sft: SFTConfig = field(default_factory=SFTConfig)

    def __post_init__(self):
        _positive("generalist", width=self.width, layers=self.layers, chunk_size=self.chunk_size,
                  execute_steps=self.execute_steps, num_inference_steps=self.num_inference_steps)
        if self.width % 16:
            raise ValueError(f"generalist.width must be a multiple of 16 (the head size), got {self.width}")
        if self.execute_steps > self.chunk_size:
            raise ValueError(f"generalist.execute_steps ({self.execute_steps}) must be <= chunk_size "
                             f"({self.chunk_size})")


@dataclass(frozen=True)
class ProbeConfig:
    """Residual SAC on the generalist (pld_robot.rl.sim_loop.train_in_sim)."""

    env_steps: int = 16000  # the whole budget, warm-up episodes included (at 8,000: 0.4-0.8 on 10 seeds)
    rl_config: str = "rl/residual_sac.yaml"  # shipped config name or a path
    # dotted field -> value, applied on top of rl_config: bench/residual_rl.py's BENCH, for its reasons
    # (docs/residual_rl.md)
    rl_changes: dict[str, Any] = field(default_factory=lambda: {
        "replay.warmup_episodes": 20, "calql.pretrain_updates": 0, "sac.initial_temperature": 0.01,
        "sac.target_entropy": -2.0, "sac.residual_l2": 1.0, "residual_scale.dims": ["dx", "dy", "dz", "gripper"]})
    eval_every: int = 2000
    eval_episodes: int = 10

    def __post_init__(self):
        _positive("probe", env_steps=self.env_steps, eval_every=self.eval_every, eval_episodes=self.eval_episodes)
        for dotted in self.rl_changes:
            if dotted.count(".") != 1:
                raise ValueError(f"probe.rl_changes: {dotted!r} must be 'section.field' (e.g. sac.residual_l2)")


@dataclass(frozen=True)
class RolloutConfig:
    """Data collection: N successful hybrid episodes (PLD) and N successful base-only ones."""

    episodes: int = 10  # N, successful episodes in each store
    max_attempts: int = 300  # per store
    alpha: float = 0.6  # the base acts alone for T_base ~ U[0, alpha * max_steps] steps (PLD)
    seed: int = 100_000  # env seeds seed, seed + 1, ... for both stores: the same cube poses for both

    def __post_init__(self):
        _positive("rollouts", episodes=self.episodes, max_attempts=self.max_attempts)
        if self.max_attempts < self.episodes:
            raise ValueError(f"rollouts.max_attempts ({self.max_attempts}) must be >= rollouts.episodes "
                             f"({self.episodes})")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"rollouts.alpha must be in [0, 1], got {self.alpha}")


@dataclass(frozen=True)
class EvalConfig:
    episodes: int = 200  # a difference of 0.08 is 2 standard errors at this count
    seed: int = 1_000_000  # held-out env seeds seed, seed + 1, ... (the collection seeds start at 0)

    def __post_init__(self):
        _positive("eval", episodes=self.episodes)


@dataclass(frozen=True)
class PLDSimConfig:
    max_steps: int = 100  # per episode (the expert's successes take 40-80)
    demos: DemoConfig = field(default_factory=DemoConfig)
    generalist: GeneralistConfig = field(default_factory=GeneralistConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    rollouts: RolloutConfig = field(default_factory=RolloutConfig)
    distill: SFTConfig = field(default_factory=lambda: SFTConfig(steps=500, lr=3e-4))  # each student, the same
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0

    def __post_init__(self):
        _positive("pld_sim", max_steps=self.max_steps)
        # demonstrations use env seeds from 0, the probe from 0 (at most one episode per env step)
        used = max(self.demos.max_attempts, self.probe.env_steps, self.rollouts.seed + self.rollouts.max_attempts)
        if self.eval.seed < used or self.demos.max_attempts > self.rollouts.seed:
            raise ValueError(f"eval.seed ({self.eval.seed}) must lie above every collection seed ({used}) and "
                             f"rollouts.seed ({self.rollouts.seed}) above the demonstrations' "
                             f"({self.demos.max_attempts}): collection, demonstrations and evaluation use "
                             "different cube poses")


def load_pld_sim_config(path: str | Path) -> PLDSimConfig:
    data = load_yaml(path)
    if set(data) != {"pld_sim"}:
        raise ConfigError(f"{path}: expected exactly one section, 'pld_sim:', found {sorted(data)}")
    return from_dict(PLDSimConfig, data["pld_sim"] or {}, where=f"{path}: pld_sim")


def with_overrides(config: PLDSimConfig, overrides: dict[str, Any]) -> PLDSimConfig:
    """`{"rollouts.episodes": 10, "max_steps": 80}` -> a new, validated config (ConfigError if not)."""
    data = dataclasses.asdict(config)
    for dotted, value in overrides.items():
        *path, last = dotted.split(".")
        node = data
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or last not in node:
            raise ConfigError(f"override {dotted}: no such field")
        node[last] = value
    return from_dict(PLDSimConfig, data, where="pld_sim")
