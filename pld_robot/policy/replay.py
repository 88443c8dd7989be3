"""Replays a recorded episode's actions as a base policy: the chunk for step t is the episode's
actions t .. t+chunk-1 (the last one repeated past the end), so a recorded success can be played back
through the whole serving path. The step is the request's `extra["step"]`; without it, the policy
counts the requests it has answered since `extra["episode"]` last changed."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from pld_robot.data.reader import EpisodeReader
from pld_robot.policy.spec import InvalidObservation, Observation, PolicySpec, check_observation


class ReplayPolicy:
    def __init__(self, store: str | Path, episode: int, *, chunk_length: int = 10, action_key: str = "action"):
        reader = EpisodeReader(store)
        self._actions = reader.episode(episode, [action_key])[action_key].astype(np.float32)
        schema = reader.schema
        self.spec = PolicySpec(cameras={}, state_names=schema.state_names, action_names=schema.action_names,
                               chunk_length=chunk_length, control_hz=schema.control_hz, backend="replay",
                               version=f"{Path(store).name}#{reader.episode_range(episode)[0]}:{action_key}")
        self._lock = threading.Lock()
        self._episode: object = None
        self._count = 0

    def predict(self, obs: Observation) -> np.ndarray:
        check_observation(self.spec, obs)
        step = obs.extra.get("step")
        with self._lock:
            if obs.extra.get("episode") != self._episode:
                self._episode, self._count = obs.extra.get("episode"), 0
            if step is None:
                step, self._count = self._count, self._count + 1
        if not isinstance(step, (int, np.integer)) or step < 0:
            raise InvalidObservation(f"extra.step must be a step index >= 0, got {step!r}")
        index = np.minimum(np.arange(step, step + self.spec.chunk_length), len(self._actions) - 1)
        return self._actions[index]
