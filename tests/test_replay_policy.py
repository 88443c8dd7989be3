"""The replay backend plays a recorded episode's executed actions back, chunk by chunk."""

from __future__ import annotations

import numpy as np
import pytest

from pld_robot.data import EpisodeWriter, WriterConfig
from pld_robot.policy.replay import ReplayPolicy
from pld_robot.policy.spec import InvalidObservation, Observation
from store_procs import SCHEMA, expected_episode, record


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("replay") / "store.zarr"
    with EpisodeWriter.open(path, SCHEMA, config=WriterConfig(sync_on_commit=False)) as writer:
        for episode in range(2):
            record(writer, episode)
    return path


def obs(**extra) -> Observation:
    return Observation(images={}, state=np.zeros(4, dtype=np.float32), extra=extra)


def test_chunks_are_the_recorded_actions_padded_with_the_last(store):
    policy = ReplayPolicy(store, 1, chunk_length=8)
    actions = expected_episode(1)["action"]
    np.testing.assert_array_equal(policy.predict(obs(step=0)), actions[:8])
    np.testing.assert_array_equal(policy.predict(obs(step=5)), actions[5:13])
    tail = policy.predict(obs(step=len(actions) - 3))
    np.testing.assert_array_equal(tail[:3], actions[-3:])
    np.testing.assert_array_equal(tail[3:], np.repeat(actions[-1:], 5, axis=0))
    assert policy.spec.backend == "replay" and policy.spec.action_names == SCHEMA.action_names


def test_without_a_step_it_counts_requests_per_episode(store):
    policy = ReplayPolicy(store, 0, chunk_length=4)
    actions = expected_episode(0)["action"]
    for t in range(3):
        np.testing.assert_array_equal(policy.predict(obs(episode="a")), actions[t:t + 4])
    np.testing.assert_array_equal(policy.predict(obs(episode="b")), actions[:4])  # a new episode restarts
    with pytest.raises(InvalidObservation, match="extra.step"):
        policy.predict(obs(step=-2))
