"""residual_node and the orchestrator's live residual over DDS: hybrid episodes with no actor (zero
residual, counted), with an exported actor (the applied residual is the policy's for the recorded
observation and base action, within xi of the half range, stamped with its version), with a new
version and a damaged file appearing mid-run, and after the residual node is killed (the base acts
alone, counted missing, and the tick keeps its period).

The orchestrator runs in this process on the graph runner's multi-threaded executor, as in
`pld-robot sim`; residual_node runs as a child process, as `ros2 launch` starts it. A fake lab node
stands in for the arm, a camera, the base policy and the person. The observation's content never
changes, only its stamps, so the residual node's observation is exactly the one recorded.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory
from waiting import wait_for

from pld_robot.data import EpisodeReader, Source
from pld_robot.nodes.action_msgs import chunk_to_msg, pose_to_msg
from pld_robot.nodes.graph import graph_from_config
from pld_robot.nodes.image_msgs import from_time, numpy_to_image, to_time
from pld_robot.nodes.orchestrator_node import OrchestratorConfig
from pld_robot.nodes.residual_msgs import (
    parse_reply,
    parse_request,
    reply_msg,
    request_msg,
)
from pld_robot.nodes.runner import GraphRunner
from pld_robot.paths import shipped_config
from pld_robot.rl.checkpoint import export_actor
from pld_robot.rl.config import EncoderConfig, NetworkConfig, ResidualSACConfig
from pld_robot.rl.sac import ResidualSAC
from pld_robot.robots.action_spec import ActionSpec

# No other test uses domain 1: the others draw from 2..230, the benches use 231 and 232.
DOMAIN_ID = "1"
SPEC = ActionSpec()  # the sim's and the Franka's: end-effector deltas + gripper
STATE = np.array([0.5, 0.05, 0.3, 1.0, 0.0, 0.0, 0.0, 0.04], dtype=np.float32)  # EE_STATE_NAMES
FRAME = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
MAX_STEPS = 20
PERIOD_S = 1.0 / SPEC.control_hz
DEADLINE_S = OrchestratorConfig().residual_deadline_s  # the shipped default is what is under test


def make_agent(seed: int) -> ResidualSAC:
    encoder = EncoderConfig(image_encoder="cnn", cameras=("front",), image_size=32, channels=(4,), image_features=8)
    config = ResidualSACConfig(encoder=encoder, networks=NetworkConfig(hidden=(32, 32)), seed=seed)
    return ResidualSAC(config, SPEC, len(STATE))


class FakeLab(Node):
    """The arm (commands echoed as executed; home and hold succeed at once), a camera and the arm
    state (fixed content, fresh stamps), the base policy (a random chunk every second), and the person
    (START whenever the orchestrator waits, once `pressing`)."""

    def __init__(self):
        super().__init__("fake_lab")
        self.pressing = False
        self.lock = threading.Lock()
        self.status: dict = {}
        self.command_stamps: list[float] = []
        self.residual_status: list[DiagnosticStatus] = []
        self._rng = np.random.default_rng(1)
        self._image = self.create_publisher(Image, "/camera/front/color/image_raw", qos_profile_sensor_data)
        self._pose = self.create_publisher(PoseStamped, "/arm/ee_pose", 10)
        self._joints = self.create_publisher(JointState, "/joint_states", 10)
        self._chunk = self.create_publisher(JointTrajectory, "/pld/base/chunk", 10)
        self._executed = self.create_publisher(JointTrajectory, "/arm/executed", 10)
        self._event = self.create_publisher(String, "/pld/teleop/event", 10)
        self.create_subscription(JointTrajectory, "/arm/command", self._on_command, 10)
        self.create_subscription(String, "/pld/episode/status", self._on_status, 10)
        self.create_subscription(DiagnosticStatus, "/pld/residual/status", self._on_residual_status, 10)
        for name in ("/arm/home", "/arm/hold"):
            self.create_service(Trigger, name, self._succeed)
        self.create_timer(0.05, self._observe)
        self.create_timer(1.0, self._plan)

    def _observe(self) -> None:
        now = time.time()
        self._image.publish(numpy_to_image(FRAME, now, "front"))
        self._pose.publish(pose_to_msg(STATE[:3], STATE[3:7], now, "base"))
        joints = JointState(name=["finger_joint1", "finger_joint2"], position=[float(STATE[7]) / 2] * 2)
        joints.header.stamp = to_time(now)
        self._joints.publish(joints)

    def _plan(self) -> None:
        low, high = np.array(SPEC.low), np.array(SPEC.high)
        chunk = self._rng.uniform(low + 0.25 * (high - low), high - 0.25 * (high - low), (20, SPEC.dim))
        self._chunk.publish(chunk_to_msg(chunk, SPEC.names, SPEC.control_hz, time.time()))

    def _on_command(self, msg: JointTrajectory) -> None:
        self._executed.publish(msg)  # executed exactly as commanded, answering the command's stamp
        with self.lock:
            self.command_stamps.append(from_time(msg.header.stamp))

    def _on_status(self, msg: String) -> None:
        status = json.loads(msg.data)
        with self.lock:
            self.status = status
        # the orchestrator starts faulted (no observation before this node's first): START resumes it too
        if self.pressing and status["state"] in ("waiting_for_reset", "faulted") and status["fault"] is None:
            self._event.publish(String(data="start"))

    def _on_residual_status(self, msg: DiagnosticStatus) -> None:
        with self.lock:
            self.residual_status.append(msg)

    def residual_version(self) -> int | None:
        """The actor version residual_node last reported (-1: none), None before it reported."""
        with self.lock:
            last = self.residual_status[-1] if self.residual_status else None
        return None if last is None else int(next(v.value for v in last.values if v.key == "version"))

    @staticmethod
    def _succeed(_request, response):
        response.success = True
        return response


def _graph_yaml(tmp_path, actors) -> str:
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump({
        "orchestrator_node": {"ros__parameters": {
            "mode": "hybrid", "max_steps": MAX_STEPS, "alpha": 0.5, "control_hz": SPEC.control_hz,
            "cameras": {"front": [32, 32]}, "store": str(tmp_path / "episodes.zarr"), "status_hz": 10.0}},
        "residual_node": {"ros__parameters": {
            "actors_dir": str(actors), "cameras": ["front"], "deterministic": True, "reload_check_s": 0.2}},
    }))
    return str(path)


def _episodes_after(store, count: int, timeout: float, what: str) -> EpisodeReader:
    wait_for(lambda: EpisodeReader(store).num_episodes >= count, timeout, what, poll_s=0.2)
    return EpisodeReader(store)


def _check_episode(reader: EpisodeReader, index: int, agents: dict[int, ResidualSAC]) -> dict:
    """Check one recorded episode against the rules; returns its per-step actor versions and counts."""
    info, steps = reader.info(index), reader.episode(index)
    probe, n = info.extra["probe_steps"], info.length
    source, versions, residual = steps["source"], steps["actor_version"], steps["residual_action"]
    assert info.outcome == "timeout" and n == MAX_STEPS, info
    assert (source[:probe] == Source.PROBE).all() and (source[probe:] == Source.RESIDUAL).all()
    # no request in the probe prefix: every residual tick asked once and ended one way
    counts = {k: info.extra[f"residual_{k}"] for k in ("applied", "no_weights", "missing", "late")}
    assert counts["applied"] + counts["no_weights"] + counts["missing"] == n - probe, (counts, probe)
    applied = versions >= 0
    assert not applied[:probe].any() and int(applied.sum()) == counts["applied"], (versions, counts)
    assert not residual[~applied].any(), "a tick without a residual in time records zero"
    assert info.actor_version == (int(versions.max()) if applied.any() else -1)
    # the recorder's one fallback: a step the arm has not answered when the episode ends is recorded
    # as zero motion (step_recorder.py); only the last step can be that one
    answered = ~(steps["action"][:, :-1] == 0).all(axis=1)
    assert answered[:-1].all(), f"unanswered steps before the last in episode {index}"
    np.testing.assert_allclose(steps["action"][answered], (steps["base_action"] + residual)[answered], atol=1e-6)
    half = (np.array(SPEC.high) - np.array(SPEC.low)) / 2
    for t in np.flatnonzero(applied):
        agent = agents[int(versions[t])]
        assert steps["front_rgb"][t].tobytes() == FRAME.tobytes() and np.array_equal(steps["state"][t], STATE)
        expected = agent.residual({"state": steps["state"][t], "front_rgb": steps["front_rgb"][t]},
                                  steps["base_action"][t], deterministic=True)
        np.testing.assert_allclose(residual[t], expected, rtol=1e-4, atol=1e-7, err_msg=f"step {t}")
        assert (np.abs(residual[t]) <= agent.policy.scale * half + 1e-7).all()
    return {"versions": versions[probe:], **counts}


def test_the_graph_runs_residual_node_only_in_residual_and_hybrid_modes():
    for config in ("sim.yaml", "franka.yaml"):
        names = {mode: [s.name for s in graph_from_config(shipped_config(config), mode)]
                 for mode in ("base", "teleop", "residual", "hybrid", None)}
        assert "residual_node" not in names["base"] + names["teleop"] + names[None], config  # shipped: base
        assert "residual_node" in names["residual"] and "residual_node" in names["hybrid"], config


def test_request_and_reply_messages_round_trip():
    base = np.array([0.01, 0.0, -0.01, 0.05, 0.0, 0.0, 1.0])
    request = request_msg(base, SPEC.names, SPEC.control_hz, to_time(1234.5), 17)
    got, number = parse_request(request, SPEC.names)
    assert np.array_equal(got, base) and number == 17 and from_time(request.header.stamp) == 1234.5
    reply = reply_msg(request, base / 10, SPEC.names, SPEC.control_hz, 3)
    residual, number, version = parse_reply(reply, SPEC.names)
    assert np.allclose(residual, base / 10) and (number, version) == (17, 3)
    assert reply.header.stamp == request.header.stamp
    with pytest.raises(ValueError, match="no actor version"):
        parse_reply(request, SPEC.names)


@pytest.mark.slow
def test_live_residual_versions_deadline_and_a_killed_residual_node(tmp_path, monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", DOMAIN_ID)
    actors, store = tmp_path / "actors", tmp_path / "episodes.zarr"
    agents: dict[int, ResidualSAC] = {}
    with GraphRunner(_graph_yaml(tmp_path, actors), processes=("residual_node",)) as graph:
        lab = graph.add_node(FakeLab())
        wait_for(lambda: lab.residual_status, 60, "residual_node to start (its status)")
        assert lab.residual_status[-1].level == DiagnosticStatus.WARN, "no actor yet"
        lab.pressing = True

        # no actor: zero residuals, counted; the residual node answers in time with "no weights"
        first = _check_episode(_episodes_after(store, 1, 30, "an episode without an actor"), 0, agents)
        assert first["applied"] == 0 and first["no_weights"] > 0, first

        agents[export_actor(make_agent(seed=1), actors)] = make_agent(seed=1)
        done = EpisodeReader(store).num_episodes
        reader = _episodes_after(store, done + 2, 30, "two episodes after actor 1 appeared")
        first_with_actor = done + 1  # began after the reload
        assert set(_check_episode(reader, first_with_actor, agents)["versions"]) <= {-1, 1}

        agents[export_actor(make_agent(seed=2), actors)] = make_agent(seed=2)  # while episodes run
        wait_for(lambda: lab.residual_version() == 2, 10, "residual_node to report actor 2")
        done = EpisodeReader(store).num_episodes
        assert set(_check_episode(_episodes_after(store, done + 2, 30, "episodes with actor 2"), done + 1,
                                  agents)["versions"]) <= {-1, 2}
        (actors / "actor-000003.safetensors").write_bytes(b"not a safetensors file")  # damaged: logged, kept out
        done = EpisodeReader(store).num_episodes
        reader = _episodes_after(store, done + 2, 30, "episodes after a damaged actor 3 appeared")
        assert set(_check_episode(reader, done + 1, agents)["versions"]) <= {-1, 2}, "actor 2 stays in use"
        assert lab.residual_version() == 2
        agents[export_actor(make_agent(seed=4), actors)] = make_agent(seed=4)  # the learner carries on: 4
        wait_for(lambda: lab.residual_version() == 4, 10, "residual_node to report actor 4")
        done = EpisodeReader(store).num_episodes
        reader = _episodes_after(store, done + 2, 30, "episodes with actor 4")
        checked = [_check_episode(reader, i, agents) for i in range(reader.num_episodes)]
        seen = np.concatenate([c["versions"] for c in checked])
        assert {1, 2, 4} <= set(seen) and 3 not in seen, set(seen)
        applied, missing = (sum(c[k] for c in checked[first_with_actor:]) for k in ("applied", "missing"))
        on_time = applied / (applied + missing)
        assert on_time >= 0.9, f"only {on_time:.0%} of {applied + missing} residuals within {DEADLINE_S * 1e3:.0f} ms"
        assert (np.diff(seen[seen >= 0]) >= 0).all(), "versions only move forward"
        with lab.lock:
            status = dict(lab.status)
        print(f"{on_time:.1%} of {applied + missing} residuals on time; status: "
              + ", ".join(f"{k} {v}" for k, v in status.items() if k.startswith("residual_")))
        assert status["residual_ms_p50"] < DEADLINE_S * 1e3 / 2, status

        graph.children["residual_node"].kill()  # gone without a word
        done = EpisodeReader(store).num_episodes
        reader = _episodes_after(store, done + 2, 30, "two episodes after residual_node was killed")
        after = _check_episode(reader, done + 1, agents)
        assert after["applied"] == 0 and after["missing"] == len(after["versions"]), after
        info, latency = reader.info(done + 1), reader.episode(done + 1)["loop_latency"][-len(after["versions"]):]
        with lab.lock:
            stamps = np.array([s for s in lab.command_stamps
                               if info.start_time <= s <= info.start_time + info.duration_s])
            status = dict(lab.status)
        gaps = np.diff(stamps)
        print(f"after the kill: residual ticks' loop latency (ms) {np.round(np.sort(latency) * 1e3, 1)}; "
              f"command gaps (ms) {np.round(np.sort(gaps) * 1e3, 1)}")
        assert (latency >= DEADLINE_S).all(), "each residual tick waited for a reply until its deadline"
        assert latency.max() < DEADLINE_S + 0.03, "and not much longer"
        assert len(stamps) == MAX_STEPS and abs(np.median(gaps) - PERIOD_S) < 0.01 and gaps.max() < 2 * PERIOD_S, \
            "the tick kept its period"
        assert status["residual_missing"] >= after["missing"]
