"""The orchestrator in the whole sim graph when the policy server dies mid-episode: the arm comes to
rest, the episode is recorded as aborted, and once the server is back the next episode runs and commits."""

from __future__ import annotations

import json
import os
import random
import time

import numpy as np
import pytest
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from pld_robot.data import EpisodeReader, validate
from pld_robot.nodes.runner import GraphRunner
from pld_robot.paths import shipped_config
from pld_robot.policy.server_process import PolicyServerProcess
from waiting import wait_for

pytestmark = pytest.mark.slow

HOST = "127.0.0.65"  # franky-sim binds fixed ports: an address of this module's own


class Watch(Node):
    def __init__(self):
        super().__init__("orchestrator_watch")
        self.status: dict | None = None
        self.positions: list[tuple[float, np.ndarray]] = []  # (time, joint positions)
        self.create_subscription(String, "/pld/episode/status", self._on_status, 10)
        self.create_subscription(JointState, "/joint_states", self._on_joints, 10)

    def _on_status(self, msg: String) -> None:
        self.status = json.loads(msg.data)

    def _on_joints(self, msg: JointState) -> None:
        self.positions.append((time.monotonic(), np.array(msg.position[:7])))


def test_policy_server_gone_mid_episode_aborts_safely_and_the_next_episode_runs(tmp_path):
    exact = tmp_path / "exact_policy.yaml"
    exact.write_text("chunk_length: 10\nmiss_probability: 0.0\n")
    store = tmp_path / "episodes.zarr"
    server = PolicyServerProcess("scripted", config=exact).start()
    overrides = {"sim_node": {"lab": {"host": HOST}}, "arm_node": {"arm": {"host": HOST}},
                 "policy_node": {"server_url": server.url},
                 "orchestrator_node": {"store": str(store), "max_steps": 300}}
    os.environ["ROS_DOMAIN_ID"] = str(random.randint(201, 230))
    try:
        with GraphRunner(shipped_config("sim.yaml"), overrides=overrides) as graph:
            watch = graph.add_node(Watch())
            wait_for(lambda: watch.status and watch.status["state"] == "running" and watch.status["step"] >= 8,
                     60, "the first episode to be under way")
            server.stop()
            wait_for(lambda: watch.status["state"] == "faulted", 15, "the orchestrator to abort the episode")
            assert "policy" in watch.status["fault"], watch.status
            time.sleep(1.5)
            # at rest: the joints travel less than 1 mrad in half a second (franky-sim's reported joint
            # velocities keep the last commanded value after a stop, so positions are the evidence)
            recent = [p for t, p in watch.positions if t > time.monotonic() - 0.5]
            travel = float(np.abs(recent[-1] - recent[0]).max())
            assert len(recent) >= 3 and travel < 1e-3, f"the arm is still moving: {travel:.4f} rad in 0.5 s"
            reader = EpisodeReader(store)
            assert reader.num_episodes == 1 and reader.info(0).outcome == "aborted"
            assert "policy" in reader.info(0).operator_note, "the record says why"

            server = PolicyServerProcess("scripted", config=exact, port=server.port).start()
            wait_for(lambda: EpisodeReader(store).num_episodes >= 2, 90, "the next episode to run and commit")
            reader = EpisodeReader(store)
            assert reader.info(1).outcome in ("success", "failure", "timeout"), reader.info(1).operator_note
            assert reader.info(1).length > 5
    finally:
        server.stop()
    assert validate(store) == []
