"""Episode stores for the reward-classifier tests: a red square that rises over the episode, and the
success label true once it is above the middle of the image (a cube lifted, in miniature)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pld_robot.data import CameraSpec, EpisodeInfo, EpisodeWriter, StoreSchema, WriterConfig

SIZE = 32
SCHEMA = StoreSchema({"front": CameraSpec(SIZE, SIZE), "wrist": CameraSpec(SIZE, SIZE)},
                     ("x", "y", "z", "qx", "qy", "qz", "qw", "gripper_width"),
                     ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"), 10.0)


def frame(rng: np.random.Generator, row: int, column: int) -> np.ndarray:
    image = rng.integers(60, 110, (SIZE, SIZE, 3), dtype=np.uint8)  # a noisy grey table
    image[row:row + 5, column:column + 5] = (200, 30, 30)
    return image


def lifted(row: int) -> bool:
    return row < SIZE // 2 - 4


def write_store(path: Path, episodes: int, length: int = 24, seed: int = 0, label: bool = True,
                stage_split: int | None = None) -> Path:
    """Even episodes lift the square (success), odd ones leave it on the table (timeout). With
    `label` False, nobody held the success button. `stage_split`: record stage_starts [0, split]."""
    rng = np.random.default_rng(seed)
    config = WriterConfig(sync_on_commit=False)
    with EpisodeWriter.open(path, SCHEMA, task="lift the square", config=config) as writer:
        for e in range(episodes):
            success = e % 2 == 0
            column = int(rng.integers(2, SIZE - 7))
            writer.begin_episode(EpisodeInfo(prompt="lift the square", mode="base"))
            for t in range(length):
                rise = (t - length // 3) * 2 if success and t > length // 3 else 0
                row = max(SIZE - 7 - rise, 1)
                image = frame(rng, row, column)
                writer.add_step({"front_rgb": image, "wrist_rgb": image[::-1].copy(),
                                 "success_label": np.uint8(label and lifted(row))})
            extra = {} if stage_split is None else {"stage_starts": [0, stage_split]}
            writer.end_episode("success" if success else "timeout", **extra).result(30)
    return path


def write_endings(path: Path, episodes: list[tuple[list[int], str]]) -> Path:
    """Episodes with these per-frame labels and outcomes, 10 steps per second."""
    rng = np.random.default_rng(0)
    with EpisodeWriter.open(path, SCHEMA, config=WriterConfig(sync_on_commit=False)) as writer:
        for labels, outcome in episodes:
            writer.begin_episode(EpisodeInfo(mode="base"))
            for t, label in enumerate(labels):
                image = frame(rng, 20, 5)
                writer.add_step({"front_rgb": image, "wrist_rgb": image, "success_label": np.uint8(label),
                                 "timestamp": np.float64(1000.0 + t / 10)})
            writer.end_episode(outcome).result(30)
    return path
