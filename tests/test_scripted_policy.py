"""The scripted base policy: re-planned from the state at every tick, it picks up the cube in the sim
lab through the real Franka driver; its imperfections make it fail the way they are meant to."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from pld_robot.config import from_dict, load_node_params
from pld_robot.policy.scripted import ScriptedPolicy, ScriptedPolicyConfig
from pld_robot.policy.spec import InvalidObservation, Observation
from pld_robot.robots.franka import FrankaArm, FrankaConfig
from pld_robot.sim.lab import SimLab, SimLabConfig

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.53"  # franky-sim binds fixed ports: an address of this module's own
CONFIG = dataclasses.replace(
    from_dict(FrankaConfig, load_node_params(ROOT / "config/sim.yaml", "arm_node")["arm"], where="arm"),
    host=HOST, connect_timeout_s=10.0)


def observation(state, cube_position, cube_quaternion, episode=0) -> Observation:
    return Observation(images={}, state=np.asarray(state, dtype=np.float32),
                       extra={"cube_position": cube_position, "cube_quaternion": cube_quaternion,
                              "episode": episode})


def test_chunk_shape_bounds_and_missing_ground_truth():
    policy = ScriptedPolicy(ScriptedPolicyConfig(chunk_length=12, action_noise=0.01, seed=3))
    state = [0.5, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0, 0.08]
    chunk = policy.predict(observation(state, [0.55, 0.05, 0.02], [0, 0, 0, 1]))
    spec = policy.config.action
    assert chunk.shape == (12, 7) and chunk.dtype == np.float32
    assert np.all(chunk >= np.array(spec.low) - 1e-6) and np.all(chunk <= np.array(spec.high) + 1e-6)
    exact = ScriptedPolicy().predict(observation(state, [0.55, 0.05, 0.02], [0, 0, 0, 1]))
    assert exact[0, 0] > 0 and exact[0, 1] > 0, "heads for the cube"
    assert 0.001 < np.abs(chunk[:, :3] - exact[:10, :3].mean(0)).mean(), "noise on the deltas"
    with pytest.raises(InvalidObservation, match="extra.cube_position"):
        policy.predict(Observation(images={}, state=np.asarray(state, dtype=np.float32)))


def test_offset_shifts_where_it_goes():
    state = [0.55, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0, 0.08]
    exact = ScriptedPolicy().predict(observation(state, [0.55, 0.0, 0.02], [0, 0, 0, 1]))
    shifted = ScriptedPolicy(ScriptedPolicyConfig(cube_offset=(0.0, 0.03, 0.0))).predict(
        observation(state, [0.55, 0.0, 0.02], [0, 0, 0, 1]))
    assert abs(exact[0, 1]) < 1e-6 and shifted[0, 1] > 0.01


@pytest.fixture(scope="module")
def sim():
    lab = SimLab(SimLabConfig(host=HOST, cameras={}, seed=5)).start()
    arm = FrankaArm(CONFIG)
    arm.connect()
    yield lab, arm
    arm.close()
    lab.stop()


def run_episode(lab: SimLab, arm: FrankaArm, policy: ScriptedPolicy, episode: int, max_steps: int = 250) -> bool:
    arm.reset_estop()
    arm.home()
    lab.reset_cube()
    time.sleep(0.3)
    period = 1.0 / CONFIG.action.control_hz
    start = time.monotonic()
    for step in range(max_steps):
        s = arm.state()
        cube_position, cube_quaternion = lab.cube_pose()
        state = np.concatenate([s.ee_position, s.ee_quaternion, [s.gripper_width]])
        chunk = policy.predict(observation(state, cube_position, cube_quaternion, episode))
        arm.step(chunk[0])
        if lab.cube_lifted() and step > 5 and chunk[0, 2] < 0.002:
            break
        time.sleep(max(0.0, start + (step + 1) * period - time.monotonic()))
    arm.hold()
    time.sleep(0.5)
    return lab.cube_lifted()


@pytest.mark.slow
def test_the_exact_expert_lifts_the_cube_and_a_missing_one_does_not(sim):
    lab, arm = sim
    assert run_episode(lab, arm, ScriptedPolicy(), episode=1), "the exact expert should lift the cube"
    assert not run_episode(lab, arm, ScriptedPolicy(ScriptedPolicyConfig(miss_probability=1.0)), episode=2), \
        "an expert that closes its hand 3 cm too high cannot lift the cube"


def test_shipped_scripted_config_loads_through_the_backend_factory():
    from pld_robot.config import ConfigError
    from pld_robot.policy.backends import load_policy

    policy = load_policy("scripted", config=ROOT / "config/policies/scripted.yaml")
    assert policy.config.miss_probability == 0.3 and policy.spec.chunk_length == 10
    with pytest.raises(ConfigError, match="unknown backend 'gpt'"):
        load_policy("gpt")
    with pytest.raises(ConfigError, match="needs --checkpoint"):
        load_policy("pi0")
