"""Judging success live: one classifier per stage of the task, the stage the orchestrator is in, the
k-ticks-in-a-row rule, and hot reloading of checkpoints that a new training run wrote or replaced.

A stage whose checkpoint folder does not exist yet (or cannot be read) judges nothing: the episode
then ends by the operator's buttons, and the checkpoint is picked up as soon as it appears.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pld_robot.reward.checkpoint import RewardCheckpoint, load_reward_checkpoint, read_version
from pld_robot.reward.detector import SuccessDetector


class StagedClassifier:
    def __init__(self, paths: Sequence[str | Path], success_ticks: int, threshold: float = 0.0):
        """`threshold` 0 means each checkpoint's own (chosen by train-reward for its target precision)."""
        if not paths:
            raise ValueError("reward: no checkpoints given (one folder per stage, from pld-robot train-reward)")
        self.paths = [Path(p) for p in paths]
        self._threshold = threshold
        self._success_ticks = success_ticks
        self._lock = threading.Lock()
        self._checkpoints: list[RewardCheckpoint | None] = [None] * len(self.paths)
        self.stage = 0
        self._detector: SuccessDetector | None = None

    @property
    def current(self) -> RewardCheckpoint | None:
        return self._checkpoints[self.stage]

    @property
    def versions(self) -> list[str | None]:
        return [ck.version if ck else None for ck in self._checkpoints]

    @property
    def cameras(self) -> tuple[str, ...]:
        """The cameras the loaded classifiers look at."""
        return tuple(dict.fromkeys(c for ck in self._checkpoints if ck for c in ck.config.cameras))

    def set_stage(self, stage: int) -> None:
        if not 0 <= stage < len(self.paths):
            raise ValueError(f"reward: stage {stage} has no classifier ({len(self.paths)} checkpoint folder(s) given)")
        with self._lock:
            if stage != self.stage:
                self.stage = stage
                self._detector = self._new_detector()

    def judge(self, frames: Mapping[str, np.ndarray]) -> tuple[float, bool]:
        """(success probability, True on the tick that declares success) for the current stage."""
        with self._lock:
            checkpoint, detector = self.current, self._detector
        if checkpoint is None:
            raise RuntimeError(f"reward: no classifier for stage {self.stage} yet ({self.paths[self.stage]})")
        prob = float(checkpoint.model.predict(frames)[0])
        return prob, detector.update(prob)

    def miss_tick(self) -> None:
        """A tick without fresh frames breaks the run of ticks over the threshold."""
        if self._detector is not None:
            self._detector.reset()

    def reload_changed(self) -> list[tuple[bool, str]]:
        """Load every checkpoint whose folder holds a version other than the one in use; returns
        (loaded, message) per change. An unreadable folder keeps the model in use, and says why."""
        changes = []
        for stage, path in enumerate(self.paths):
            old = self._checkpoints[stage]
            version = read_version(path)
            if version is None or (old is not None and version == old.version):
                continue
            try:
                fresh = load_reward_checkpoint(path)
            except Exception as exc:  # noqa: BLE001 - a bad checkpoint must not stop judging with the good one
                kept = f"kept version {old.version}" if old else "no classifier yet"
                changes.append((False, f"stage {stage}: {kept}; {path} could not be loaded: {exc}"))
                continue
            with self._lock:
                self._checkpoints[stage] = fresh
                if stage == self.stage:
                    self._detector = self._new_detector()
            changes.append((True, f"stage {stage}: loaded {path} version {fresh.version} "
                                  f"(threshold {self.threshold_of(stage):.3f}, cameras {list(fresh.config.cameras)})"))
        return changes

    def threshold_of(self, stage: int) -> float:
        checkpoint = self._checkpoints[stage]
        return self._threshold or (checkpoint.threshold if checkpoint else 1.0)

    def _new_detector(self) -> SuccessDetector | None:
        return SuccessDetector(self.threshold_of(self.stage), self._success_ticks) if self.current else None
