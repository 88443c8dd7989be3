"""Pairs each commanded step with what the arm executed for it, then hands it to the episode writer.

The arm answers a command on /arm/executed a few milliseconds after the tick that sent it, so a step is
recorded once its answer is in, in order, without holding up the loop. A step that waited `patience`
ticks is recorded anyway, as zero motion with the gripper as commanded (the arm refused it or is gone),
and counted.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from pld_robot.data.writer import EpisodeWriter
from pld_robot.nodes.observation import ObservationTap


class StepRecorder:
    def __init__(self, tap: ObservationTap, writer: EpisodeWriter, patience: int = 5):
        self._tap = tap
        self._writer = writer
        self._patience = patience
        self._waiting: deque[tuple[float, np.ndarray, dict]] = deque()
        self.unanswered = 0

    def add(self, stamp: float, command: np.ndarray, step: dict) -> None:
        """`command` as sent, stamped `stamp` (its header stamp); `step` is everything else to record."""
        self._waiting.append((stamp, command, step))
        self._record_answered(self._patience, 0.0)

    def flush(self, wait_s: float = 1.0) -> None:
        """Record every waiting step (the episode is ending), waiting up to `wait_s` in all for answers."""
        self._record_answered(0, wait_s)

    def _record_answered(self, patience: int, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while self._waiting:
            stamp, command, step = self._waiting[0]
            executed = self._tap.executed(stamp, timeout=max(0.0, deadline - time.monotonic()))
            if executed is None and len(self._waiting) <= patience:
                return
            self._waiting.popleft()
            if executed is None:
                self.unanswered += 1
                executed = np.zeros(len(command), dtype=np.float32)
                executed[-1] = command[-1]
            self._writer.add_step({**step, "action": executed})
