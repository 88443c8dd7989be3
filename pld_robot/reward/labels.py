"""Labelled frames for the success classifier, from an episode store.

A frame's label is the store's per-frame `success_label` (the operator held the success button, or the
sim lab's ground truth). A successful episode in which nobody held the button still teaches one thing:
its last `outcome_tail` frames show success (the operator pressed SUCCESS on seeing them). For a
multi-stage task, stage i's classifier learns from the frames recorded while stage i was running
(`stage_starts` in the episode's metadata; an episode without it is all stage 0).

Splits are by episode, so no held-out frame has a near-twin from the same episode in training.

The frames next to a change of label are ambiguous: a button is never pressed on the exact frame, and
the sim's ground truth flips at a height the camera cannot resolve to the centimetre. They are left
out of training and of the choice of threshold (`ambiguous_frames` on each side of a change), and
kept in the reported scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from pld_robot.data import EpisodeReader
from pld_robot.data.layout import Outcome, rgb_key

STAGE_STARTS_KEY = "stage_starts"  # in EpisodeInfo.extra: the step at which each stage began


@dataclass(frozen=True)
class LabelConfig:
    stage_index: int = 0  # the stage whose frames are used (0 for a single-stage task)
    outcome_tail: int = 1  # success episodes without held labels: this many last frames are positive
    ambiguous_frames: int = 1  # frames this close to a change of label are not learned from
    outcomes: tuple[str, ...] = ("success", "failure", "timeout", "aborted")  # episodes used
    val_fraction: float = 0.2
    max_negative_ratio: float = 8.0  # training keeps at most this many negatives per positive
    seed: int = 0

    def __post_init__(self):
        if self.stage_index < 0 or self.outcome_tail < 0 or self.ambiguous_frames < 0:
            raise ValueError("labels: stage_index, outcome_tail and ambiguous_frames must be >= 0")
        if not 0.0 < self.val_fraction < 1.0 or self.max_negative_ratio <= 0:
            raise ValueError("labels: val_fraction must be in (0, 1) and max_negative_ratio positive")
        unknown = set(self.outcomes) - {o.value for o in Outcome}
        if unknown or not self.outcomes:
            raise ValueError(f"labels: unknown outcomes {sorted(unknown)}; choose from {[o.value for o in Outcome]}")


@dataclass
class LabelledFrames:
    """Frames (uint8, per camera, N x H x W x 3) with their labels and where they came from."""

    frames: dict[str, np.ndarray]
    labels: np.ndarray  # (N,) uint8
    ambiguous: np.ndarray  # (N,) bool: next to a change of label
    store: np.ndarray  # (N,) index into the list of stores
    episode: np.ndarray  # (N,)
    step: np.ndarray  # (N,)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def positives(self) -> int:
        return int(self.labels.sum())

    def subset(self, index: np.ndarray) -> "LabelledFrames":
        return LabelledFrames({k: v[index] for k, v in self.frames.items()}, self.labels[index],
                              self.ambiguous[index], self.store[index], self.episode[index], self.step[index])


@dataclass(frozen=True)
class EpisodeLabels:
    store: int
    episode: int
    start: int  # first step of the chosen stage in the episode
    labels: np.ndarray
    ambiguous: np.ndarray  # bool, per label

    @property
    def has_positive(self) -> bool:
        return bool(self.labels.any())


def episode_labels(reader: EpisodeReader, store: int, config: LabelConfig) -> list[EpisodeLabels]:
    """The labels of every usable episode of one store (reads only the small label column)."""
    out = []
    column = reader.array("success_label")[: reader.num_steps] if reader.num_episodes else np.zeros(0)
    for episode in reader.select(outcome=list(config.outcomes)):
        info = reader.info(episode)
        begin, end = reader.episode_range(episode)
        stage_starts = [int(s) for s in info.extra.get(STAGE_STARTS_KEY, [0])]
        if config.stage_index >= len(stage_starts):
            continue  # the episode ended before reaching this stage
        first = stage_starts[config.stage_index]
        last = stage_starts[config.stage_index + 1] if config.stage_index + 1 < len(stage_starts) else end - begin
        labels = column[begin + first: begin + last].astype(np.uint8)
        ambiguous = _near_changes(labels, config.ambiguous_frames)  # of what was recorded, not of the tail rule
        if info.outcome == Outcome.SUCCESS.value and not labels.any() and config.outcome_tail and \
                config.stage_index == len(stage_starts) - 1:
            labels[-config.outcome_tail:] = 1
        if len(labels):
            out.append(EpisodeLabels(store, episode, first, labels, ambiguous))
    return out


def _near_changes(labels: np.ndarray, n: int) -> np.ndarray:
    """True within n frames of a change of label, on either side."""
    near = np.zeros(len(labels), bool)
    for change in np.flatnonzero(np.diff(labels.astype(np.int8))) + 1:  # first frame of the new label
        near[max(change - n, 0): change + n] = True
    return near


def split_episodes(episodes: Sequence[EpisodeLabels], config: LabelConfig) -> tuple[list, list]:
    """Held-out episodes drawn separately from those with and without positives, so both sides see both."""
    rng = np.random.default_rng(config.seed)
    train, val = [], []
    for group in ([e for e in episodes if e.has_positive], [e for e in episodes if not e.has_positive]):
        order = rng.permutation(len(group))
        n_val = int(round(len(group) * config.val_fraction))
        if len(group) >= 2:
            n_val = min(max(n_val, 1), len(group) - 1)
        val += [group[i] for i in order[:n_val]]
        train += [group[i] for i in order[n_val:]]
    return train, val


def load_frames(readers: Sequence[EpisodeReader], episodes: Sequence[EpisodeLabels], cameras: Sequence[str],
                keep: np.ndarray | None = None, desc: str = "frames", progress: bool = True) -> LabelledFrames:
    """Read the frames of `episodes` (only the steps where `keep`, a mask over their concatenated steps)."""
    frames = {c: [] for c in cameras}
    labels, ambiguous, stores, eps, steps = [], [], [], [], []
    offset = 0
    for e in tqdm(episodes, desc=f"reading {desc}", unit="episode", leave=False, disable=None if progress else True):
        mask = np.ones(len(e.labels), bool) if keep is None else keep[offset: offset + len(e.labels)]
        offset += len(e.labels)
        if not mask.any():
            continue
        reader = readers[e.store]
        begin, _ = reader.episode_range(e.episode)
        rows = np.flatnonzero(mask)
        for camera in cameras:
            block = reader.array(rgb_key(camera))[begin + e.start: begin + e.start + len(e.labels)]
            frames[camera].append(block[rows])
        labels.append(e.labels[rows])
        ambiguous.append(e.ambiguous[rows])
        stores.append(np.full(len(rows), e.store))
        eps.append(np.full(len(rows), e.episode))
        steps.append(rows + e.start)
    if not labels:
        raise ValueError("no frames to read")
    return LabelledFrames({c: np.concatenate(v) for c, v in frames.items()}, np.concatenate(labels),
                          np.concatenate(ambiguous), np.concatenate(stores), np.concatenate(eps), np.concatenate(steps))


def balance_mask(episodes: Sequence[EpisodeLabels], max_negative_ratio: float, seed: int) -> np.ndarray:
    """Keep every unambiguous positive and a uniform sample of at most `ratio` unambiguous negatives per
    positive (frames of a fixed camera at control rate are near-duplicates; this bounds memory without
    losing variety)."""
    labels = np.concatenate([e.labels for e in episodes]) if episodes else np.zeros(0, np.uint8)
    clear = ~np.concatenate([e.ambiguous for e in episodes]) if episodes else np.zeros(0, bool)
    keep = labels.astype(bool) & clear
    negatives = np.flatnonzero(~labels.astype(bool) & clear)
    budget = int(max(keep.sum(), 1) * max_negative_ratio)
    chosen = negatives if len(negatives) <= budget else \
        np.random.default_rng(seed).choice(negatives, budget, replace=False)
    keep[chosen] = True
    return keep


def open_stores(paths: Sequence[str | Path], cameras: Sequence[str]) -> list[EpisodeReader]:
    readers = []
    for path in paths:
        reader = EpisodeReader(path)
        missing = [c for c in cameras if rgb_key(c) not in reader.keys]
        if missing:
            have = sorted(reader.schema.cameras)
            raise ValueError(f"{path}: no camera {missing} in this store (it has {have}); set --cameras")
        readers.append(reader)
    return readers
