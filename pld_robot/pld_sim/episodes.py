"""Episodes in the fast env as the episode store records them, and writing them into a store.

The PI0 policies see the state (TCP pose, gripper width) with the cube's true pose appended, as the
residual's state-only observation does (rl.sim_loop.observation), and one constant black image: PI0
needs a camera, and rendering a real one costs ~5x a control step on this CPU while a 1-layer SigLIP
seeing 2 x 2 patches could not locate the cube in it anyway. The camera is named `blank` so that
nobody mistakes it for a view.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from pld_robot.data.layout import (
    CameraSpec,
    EpisodeInfo,
    Outcome,
    Source,
    StoreSchema,
    rgb_key,
)
from pld_robot.data.writer import EpisodeWriter
from pld_robot.rl import sim_loop
from pld_robot.rl.policy import ResidualPolicy
from pld_robot.rl.sim_loop import BasePolicy, Episode
from pld_robot.sim.fast_env import PickCubeEnv

BLANK_CAMERA = "blank"
BLANK_SIZE = 32  # pixels: the generalist's vision tower input, so nothing is resized
STATE_NAMES = ("x", "y", "z", "qx", "qy", "qz", "qw", "gripper_width",
               "cube_x", "cube_y", "cube_z", "cube_qx", "cube_qy", "cube_qz", "cube_qw")
PROMPT = "pick up the cube"


def store_schema(env: PickCubeEnv) -> StoreSchema:
    return StoreSchema(cameras={BLANK_CAMERA: CameraSpec(BLANK_SIZE, BLANK_SIZE)}, state_names=STATE_NAMES,
                       action_names=tuple(env.action_spec.names), control_hz=env.config.control_hz)


def blank_image() -> np.ndarray:
    return np.zeros((BLANK_SIZE, BLANK_SIZE, 3), np.uint8)


def probe_prefix(rng: np.random.Generator, max_steps: int, alpha: float) -> int:
    """PLD's T_base ~ U[0, alpha * T]: steps the base acts alone before base + residual take over."""
    return int(rng.integers(0, int(alpha * max_steps) + 1))


def run_episode(env: PickCubeEnv, seed: int, base: BasePolicy, residual: ResidualPolicy | None = None,
                prefix_steps: int = 0, source: Source = Source.PROBE) -> Episode:
    """rl.sim_loop.run_episode with the deterministic residual and the PI0 policies' observation: the
    state and the blank camera."""
    episode = sim_loop.run_episode(env, seed, base, residual, (), deterministic=True, prefix_steps=prefix_steps,
                                   source=source)
    episode.steps[rgb_key(BLANK_CAMERA)] = np.repeat(blank_image()[None], episode.length, axis=0)
    return episode


def collect_successes(attempt: Callable[[int], tuple[Episode, EpisodeInfo]], seeds: Iterator[int], wanted: int,
                      writer: EpisodeWriter, progress: Callable[[int, int], None]) -> dict:
    """Run attempt(seed) on seeds in turn, recording the successful episodes, until `wanted` are in the
    store or the seeds run out. Returns the counts (attempts, successes)."""
    attempts = successes = 0
    for seed in seeds:
        if successes >= wanted:
            break
        episode, info = attempt(seed)
        attempts += 1
        if episode.success:
            write_episode(writer, episode, info)
            successes += 1
        progress(successes, attempts)
    return {"attempts": attempts, "successes": successes,
            "success_rate": round(successes / attempts, 4) if attempts else 0.0}


def write_episode(writer: EpisodeWriter, episode: Episode, info: EpisodeInfo) -> None:
    writer.begin_episode(info)
    for t in range(episode.length):
        writer.add_step({key: values[t] for key, values in episode.steps.items()})
    writer.end_episode(Outcome.SUCCESS if episode.success else Outcome.FAILURE).result()


def open_store(path: Path, env: PickCubeEnv) -> EpisodeWriter:
    return EpisodeWriter.open(path, store_schema(env), task=PROMPT)
