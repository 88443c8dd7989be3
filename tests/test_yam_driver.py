"""The YAM driver over python-can's virtual bus, against simulated Damiao motors on real threads.

Every test opens its own virtual channel: the driver (its own bus), the simulated motors (theirs)
and a tap that records every frame on the channel, decoded with the protocol, to check what the
driver actually sent.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import os
import random
import re
import time

import can
import mujoco
import numpy as np
import pytest

from pld_robot.config import from_dict, load_node_params, load_yaml
from pld_robot.paths import shipped_config
from pld_robot.robots.arm import ArmFault
from pld_robot.robots.safety import EStopEngaged, UnsafeCommand
from pld_robot.robots.yam import JointLimits, YamArm, YamConfig
from pld_robot.robots.yam.joint_filter import JointSafetyFilter, StartTooFar
from pld_robot.robots.yam.motor_loop import Mode
from pld_robot.robots.yam.protocol import (
    COMM_LOST, ENABLE, ENABLED, SAVE_ZERO, is_special, unpack_command,
)
from pld_robot.robots.yam.sim import SimMotors
from waiting import wait_for

START = np.array([0.1, 0.8, 0.8, 0.2, -0.1, 0.3])
P_STEP = 25.0 / 65535  # one position quantum (P_MAX 12.5 on both types)
_channel = itertools.count()


def config(**changes) -> YamConfig:
    """A fresh channel; fault thresholds wider than a lab's (0.05 s silent, 0.1 s motor timeout),
    because here the motors are threads of this process and a busy machine can starve them."""
    limits = changes.pop("limits", {})
    base = YamConfig(interface="virtual", channel=f"yam-test-{os.getpid()}-{next(_channel)}",
                     silent_after_s=0.5, motor_timeout_s=1.0)
    return dataclasses.replace(base, limits=dataclasses.replace(base.limits, **limits), **changes)


class Tap:
    """A third node on the channel: every frame anyone sends, with its send time."""

    def __init__(self, channel: str):
        self.bus = can.Bus(interface="virtual", channel=channel)
        self.frames: list[can.Message] = []

    def read(self) -> list[can.Message]:
        while (msg := self.bus.recv(timeout=0)) is not None:
            self.frames.append(msg)
        return self.frames

    def commands(self, cfg: YamConfig, i: int, since: float = 0.0):
        """The MIT commands sent to motor `i` at or after wall time `since`, decoded."""
        return [unpack_command(bytes(m.data), cfg.motor_type(i)) for m in self.read()
                if m.arbitration_id == cfg.can_ids[i] and not is_special(bytes(m.data)) and m.timestamp >= since]


class Rig:
    def __init__(self, cfg: YamConfig, initial=None, model_path: str = ""):
        self.cfg = cfg
        self.sim = SimMotors(cfg, initial=(*START, cfg.gripper_open) if initial is None else initial,
                             model_path=model_path).start()
        self.tap = Tap(cfg.channel)
        self.arm = YamArm(cfg)

    def close(self):
        self.arm.close()
        self.sim.stop()
        self.tap.bus.shutdown()


@pytest.fixture
def rig():
    made: list[Rig] = []

    def make(cfg: YamConfig | None = None, connect: bool = True, **kwargs) -> Rig:
        r = Rig(cfg or config(), **kwargs)
        made.append(r)
        if connect:
            r.arm.connect()
        return r

    yield make
    for r in made:
        r.close()


def action(joints, gripper=1.0) -> np.ndarray:
    return np.append(joints, gripper)


def drive(arm: YamArm, joints, steps: int, gripper=1.0) -> list:
    """Send the same target `steps` times at the control rate."""
    targets = []
    for _ in range(steps):
        targets.append(arm.step(action(joints, gripper)))
        time.sleep(arm.spec.period)
    return targets


# -- round trip --------------------------------------------------------------------------------


def test_enable_command_feedback_round_trip_decodes_within_the_quantisation(rig):
    r = rig()
    cfg, arm = r.cfg, r.arm
    frames = r.tap.read()
    enables = {m.arbitration_id for m in frames if bytes(m.data) == ENABLE}
    assert sorted(enables) == list(cfg.can_ids), "enable frames go to every motor's CAN id"

    state = arm.state()
    np.testing.assert_allclose(state.joint_positions, START, atol=P_STEP)
    assert state.gripper_width == pytest.approx(cfg.gripper_stroke, abs=1e-3)
    readings = arm.motors()
    assert readings.errors == (ENABLED,) * 7
    assert list(readings.temp_mos) == [35] * 7 and list(readings.temp_rotor) == [30] * 7

    target = START + np.array([0.03, -0.02, 0.01, 0.04, -0.03, 0.02])
    sent = drive(arm, target, steps=8, gripper=0.5)[-1]
    assert sent.clipped == ()
    np.testing.assert_allclose(sent.executed, action(target, 0.5))
    time.sleep(0.3)  # the last interpolation is over: setpoints at the target, velocity 0
    since = time.time()
    wait_for(lambda: all(r.tap.commands(cfg, i, since) for i in range(7)), 2.0, "commands to every motor")
    gripper_position = cfg.gripper_closed + 0.5 * (cfg.gripper_open - cfg.gripper_closed)
    for i, want in enumerate([*target, gripper_position]):
        cmd = r.tap.commands(cfg, i, since)[-1]
        motor = cfg.motor_type(i)
        assert cmd.position == pytest.approx(want, abs=P_STEP / 2 + 1e-12), f"motor {i} position"
        assert cmd.velocity == pytest.approx(0.0, abs=motor.v_max / 4095)
        assert cmd.kp == pytest.approx(cfg.kp[i], abs=500 / 4095 / 2)
        assert cmd.kd == pytest.approx(cfg.kd[i], abs=5 / 4095 / 2)
        assert cmd.torque == pytest.approx(0.0, abs=motor.t_max / 4095), "no model: no feed-forward"
    # the simulated motors got there, and the driver decodes their feedback to where they are
    np.testing.assert_allclose(r.sim.positions[:6], target, atol=2e-3)
    np.testing.assert_allclose(arm.state().joint_positions, r.sim.positions[:6], atol=P_STEP + 1e-4)
    assert arm.state().gripper_width == pytest.approx(0.5 * cfg.gripper_stroke, abs=1e-3)
    assert not any(bytes(m.data) == SAVE_ZERO for m in r.tap.read()), "the driver never re-zeros a motor"


def test_the_motor_loop_interpolates_between_control_rate_targets(rig):
    r = rig()
    drive(r.arm, START, steps=2)
    since = time.time()
    r.arm.step(action(START + [0.04, 0, 0, 0, 0, 0]))
    time.sleep(r.arm.spec.period * 1.5)
    positions = [c.position for c in r.tap.commands(r.cfg, 0, since)]
    # 250 Hz over a 10 Hz period: about 25 setpoints between the old target and the new (fewer when
    # this shared machine delays the loop's thread; without interpolation, none), each carrying the
    # slope as velocity feed-forward
    climbing = [c for c in r.tap.commands(r.cfg, 0, since) if START[0] + 0.002 < c.position < START[0] + 0.038]
    assert climbing, positions
    assert all(c.velocity == pytest.approx(0.4, abs=0.005) for c in climbing)  # 0.04 rad in 0.1 s
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(positions)), "monotonic, no jumps back"


# -- the safety filter in the driver ----------------------------------------------------------


def test_an_oversized_step_is_clipped_to_the_step_limit(rig):
    r = rig()
    drive(r.arm, START, steps=1)
    since = time.time()
    far = START + np.array([0.3, 0, 0, 0, 0, -0.12])
    first, second = drive(r.arm, far, steps=2)
    assert "joint step" in first.clipped
    np.testing.assert_allclose(first.executed[:6] - START, [0.05, 0, 0, 0, 0, -0.05], atol=1e-12)
    np.testing.assert_allclose(second.executed[:6] - START, [0.1, 0, 0, 0, 0, -0.1], atol=1e-12)
    time.sleep(0.1)
    sent = max(c.position for c in r.tap.commands(r.cfg, 0, since))
    assert sent <= START[0] + 0.1 + P_STEP, "the motor never got more than two capped steps"


def test_a_start_far_from_the_measured_pose_is_refused(rig):
    r = rig()
    far = START + np.array([0, 0.5, 0, 0, 0, 0])
    with pytest.raises(StartTooFar, match=r"joint2 is 0\.500 rad from its measured position.*home\(\)"):
        r.arm.step(action(far))
    assert isinstance(StartTooFar("x"), UnsafeCommand), "the node reports it as a refused command"
    time.sleep(0.3)
    assert r.arm._loop.mode is Mode.HOLD
    # 12 bits cannot say 0: v_des and t_ff are half a quantum off zero, which a soft wrist (kp 10,
    # kd 1.5, v quantum 0.015 rad/s on a DM4310) holds about 1 mrad away
    np.testing.assert_allclose(r.sim.positions[:6], START, atol=2e-3)
    # Near the pose it starts, and once moving the same far target is only clipped, step by step.
    drive(r.arm, START + [0, 0.1, 0, 0, 0, 0], steps=1)
    assert "joint step" in r.arm.step(action(far)).clipped


def test_joint_limits_and_gripper_range_are_enforced():
    limits = JointLimits()
    f = JointSafetyFilter(limits, YamConfig().action.names, control_hz=10.0)
    at_top = np.array(limits.high) - 0.01
    t = f.apply(action(at_top + 0.04, gripper=1.7), measured=at_top, previous=at_top)
    np.testing.assert_allclose(t.joints, limits.high)
    assert t.gripper == 1.0 and set(t.clipped) == {"joint limits", "gripper range"}
    # moved by hand past a limit: walks back in at the step limit
    outside = np.array(limits.high) + 0.3
    t = f.apply(action(outside), measured=outside, previous=outside)
    np.testing.assert_allclose(t.joints, outside - 0.05)
    assert "return to joint limits" in t.clipped
    # the target stays near a joint that lags (blocked): kp * 0.2 rad at most
    t = f.apply(action(START + 0.3), measured=START, previous=START + 0.25)
    np.testing.assert_allclose(t.joints, START + limits.max_tracking_error)
    assert "tracking error" in t.clipped
    with pytest.raises(UnsafeCommand, match="NaN/Inf in joint3"):
        f.apply(action([0, 0, np.nan, 0, 0, 0]), measured=START, previous=None)


def test_nan_holds_and_the_estop_latches(rig):
    r = rig()
    drive(r.arm, START, steps=2)
    with pytest.raises(UnsafeCommand):
        r.arm.step(action([np.inf, 0, 0, 0, 0, 0]))
    assert r.arm._loop.mode is Mode.HOLD
    r.arm.estop("test")
    with pytest.raises(EStopEngaged):
        r.arm.step(action(START))
    assert r.arm.state().estop
    r.arm.reset_estop()
    r.arm.step(action(START))


# -- when commands stop --------------------------------------------------------------------------


def test_when_commands_stop_the_driver_holds_and_then_damps(rig):
    r = rig(config(limits={"hold_s": 0.4}))
    target = START + [0.04, 0, 0, 0, 0, 0]
    drive(r.arm, target, steps=3)
    stopped = time.time()
    wait_for(lambda: r.arm.watchdog_stops == 1, 2.0, "the watchdog to stop the arm")
    assert r.arm._loop.mode is Mode.HOLD
    wait_for(lambda: r.arm._loop.mode is Mode.DAMP, 2.0, "the arm to be damped")
    damped = time.time()
    time.sleep(0.1)
    sent = r.tap.commands(r.cfg, 1, stopped)
    holding = [c for c in sent if c.kp > 0]
    damping = [c for c in sent if c.kp == 0]
    assert holding and damping, "first held, then damped"
    assert sent.index(damping[0]) > sent.index(holding[-1]), "damping follows holding, never the reverse"
    assert all(c.position == pytest.approx(target[1], abs=P_STEP) for c in holding)
    assert all(c.kd == pytest.approx(r.cfg.kd[1], abs=0.001) for c in damping), "damped with kd, not limp"
    # the watchdog (3 x 0.1 s, of which drive() slept 0.1 s after the last step), then hold_s
    assert (damped - stopped) == pytest.approx(0.2 + 0.4, abs=0.25)
    assert r.arm.fault is None, "a watchdog stop is not a fault"
    drive(r.arm, r.arm.state().joint_positions, steps=1)  # and it starts again from where it is
    assert r.arm._loop.mode is Mode.TRACK


# -- faults: clear errors, safe stop, recovery ----------------------------------------------------


def test_a_silent_motor_is_a_clear_error_and_a_safe_stop(rig):
    r = rig()
    drive(r.arm, START, steps=2)
    r.sim.silence(2)
    wait_for(lambda: r.arm.fault is not None, 2.0, "the driver to notice the silent motor")
    assert "no feedback from joint3 (CAN id 3, feedback id 0x13)" in r.arm.fault
    with pytest.raises(ArmFault, match=r"no feedback from joint3.*call recover\(\)"):
        r.arm.step(action(START))
    since = time.time()
    wait_for(lambda: all(r.tap.commands(r.cfg, i, since) for i in range(7)), 2.0, "commands to every motor")
    for i in (0, 1, 3, 4, 5, 6):
        assert all(c.kp == 0 and c.kd > 0 for c in r.tap.commands(r.cfg, i, since)), f"motor {i} is damped"
    ticks = r.arm.loop_ticks()[-1]
    wait_for(lambda: r.arm.loop_ticks()[-1] > ticks, 2.0, "the motor loop to keep running")
    assert r.arm.state().joint_positions.shape == (6,)

    with pytest.raises(ArmFault, match="no answer from joint3"):  # still silent: recovery says so
        r.arm.recover()
    r.sim.silence(2, False)
    r.arm.recover()
    assert r.arm.fault is None
    drive(r.arm, r.arm.state().joint_positions, steps=2)


@pytest.mark.parametrize(
    "inject, message",
    [
        (lambda sim: sim.send_error_frame(), r"CAN error frame on yam-test-.*bus off"),
        (lambda sim: sim.fail(4, 0xB), r"joint5 \(CAN id 5, feedback id 0x15\) reports MOS over-temperature"),
    ],
    ids=["error-frame", "motor-error-code"],
)
def test_an_error_frame_or_a_motor_error_damps_and_recovers(rig, inject, message):
    r = rig()
    drive(r.arm, START, steps=2)
    inject(r.sim)
    wait_for(lambda: r.arm.fault is not None, 2.0, "the fault")
    assert r.arm._loop.mode is Mode.DAMP
    with pytest.raises(ArmFault, match=message):
        r.arm.step(action(START))
    r.arm.recover()  # clears the motors' errors and enables them again
    assert r.arm.fault is None and r.arm.motors().errors == (ENABLED,) * 7
    drive(r.arm, r.arm.state().joint_positions, steps=2)


def test_the_motors_own_command_timeout(rig):
    with pytest.raises(ValueError, match="motor_timeout_s"):
        config(motor_timeout_s=0.01)  # shorter than 5 loop periods at 250 Hz
    r = rig(config(motor_timeout_s=0.3, silent_after_s=1.0))
    drive(r.arm, START, steps=2)
    r.arm._loop.stop()  # the loop stalls for longer than the motors wait
    time.sleep(0.8)
    assert r.sim.states == [COMM_LOST] * 7, "the simulated motors timed out and let go"
    r.arm._loop.start()
    wait_for(lambda: r.arm.fault is not None, 2.0, "the driver to report it")
    assert "communication lost" in r.arm.fault and "motor_timeout_s 0.3" in r.arm.fault
    gap = re.search(r"longest gap between this loop's commands was (\d+) ms", r.arm.fault)
    assert gap and int(gap.group(1)) >= 800, r.arm.fault
    r.arm.recover()
    assert r.arm.fault is None


def test_connect_clears_a_stale_communication_lost_but_not_a_real_error(rig):
    r = rig(connect=False)
    r.sim.fail(1, COMM_LOST)  # left over from the last session
    r.arm.connect()
    assert r.arm.motors().errors == (ENABLED,) * 7
    r.arm.close()
    r = rig(config(connect_timeout_s=0.3), connect=False)
    r.sim.fail(3, 0x8)  # the motor keeps answering "over-voltage" until the timeout
    with pytest.raises(ArmFault, match=r"joint4 \(CAN id 4, feedback id 0x14\): over-voltage.*recover\(\)"):
        r.arm.connect()


def test_connect_names_a_motor_that_does_not_answer(rig):
    r = rig(config(connect_timeout_s=0.3), connect=False)
    r.sim.silence(6)
    with pytest.raises(ArmFault, match=r"no answer from gripper \(CAN id 7, feedback id 0x17\)"):
        r.arm.connect()
    with pytest.raises(ArmFault, match="not connected"):
        r.arm.state()


def test_home_moves_slowly_to_the_home_pose_and_opens_the_gripper(rig):
    cfg = config(home_speed=0.5)
    r = rig(cfg, initial=(*(np.array(cfg.home_joints) + [0.1, -0.1, 0.05, 0, 0, 0]), cfg.gripper_closed))
    t0 = time.monotonic()
    r.arm.home()
    took = time.monotonic() - t0
    # 0.1 rad at 0.5 rad/s, then one control period for the loop to reach the last target
    assert 0.2 + 0.1 - 0.02 < took < 2.0, took
    wait_for(lambda: np.allclose(r.arm.state().joint_positions, cfg.home_joints, atol=2e-3)
             and abs(r.arm.state().gripper_width - cfg.gripper_stroke) < 1e-3, 3.0,
             "the arm to settle at home with the gripper open")
    assert r.arm._loop.mode is Mode.HOLD


# -- gravity compensation from a MuJoCo model ------------------------------------------------------

CHAIN = """
<mujoco model="six-joint chain">
  <option timestep="0.0005"/>
  <default><joint type="hinge" armature="0.02" damping="0.05"/><geom type="capsule" size="0.02"/></default>
  <worldbody>
    <body name="link1" pos="0 0 0.1"><joint name="joint1" axis="0 0 1"/>
      <geom fromto="0 0 0 0 0 0.05" mass="0.3"/>
      <body name="link2" pos="0 0 0.05"><joint name="joint2" axis="0 1 0"/>
        <geom fromto="0 0 0 0.25 0 0" mass="1.0"/>
        <body name="link3" pos="0.25 0 0"><joint name="joint3" axis="0 1 0"/>
          <geom fromto="0 0 0 0.22 0 0" mass="0.7"/>
          <body name="link4" pos="0.22 0 0"><joint name="joint4" axis="1 0 0"/>
            <geom fromto="0 0 0 0.05 0 0" mass="0.3"/>
            <body name="link5" pos="0.05 0 0"><joint name="joint5" axis="0 1 0"/>
              <geom fromto="0 0 0 0.06 0 0" mass="0.3"/>
              <body name="link6" pos="0.06 0 0"><joint name="joint6" axis="1 0 0"/>
                <geom fromto="0 0 0 0.03 0 0" mass="0.2"/><site name="ee" pos="0.03 0 0"/>
              </body></body></body></body></body></body>
  </worldbody>
</mujoco>
"""
LEVEL = np.array([0.0, 0.3, -0.4, 0.0, 0.3, 0.0])  # arm stretched out: gravity loads joints 2, 3, 5


@pytest.fixture
def chain(tmp_path):
    path = tmp_path / "chain.xml"
    path.write_text(CHAIN)
    return str(path)


def _bias(path: str, q: np.ndarray) -> np.ndarray:
    """MuJoCo's gravity torques at q, computed here independently of the driver."""
    model = mujoco.MjModel.from_xml_path(path)
    data = mujoco.MjData(model)
    data.qpos[:] = q
    mujoco.mj_forward(model, data)
    return data.qfrc_bias.copy()


def _sag(rig, chain: str, with_model: bool) -> tuple[Rig, float]:
    cfg = config(kp=(20.0,) * 6 + (20.0,), model_path=chain if with_model else "",
                 ee_site="ee" if with_model else "")
    r = rig(cfg, initial=(*LEVEL, 0.0), model_path=chain)  # the simulated arm moves in MuJoCo, with gravity
    held = r.arm.motors().position[:6].copy()  # what the arm holds: the pose at connect
    time.sleep(0.8)
    return r, float(np.max(np.abs(r.sim.positions[:6] - held)))


def test_gravity_compensation_sends_the_models_torques_and_stops_the_sag(rig, chain):
    r, sag_without = _sag(rig, chain, with_model=False)
    r.close()
    r, sag_with = _sag(rig, chain, with_model=True)
    assert sag_without > 0.03, "kp 20 alone sags under gravity (a few tenths of a radian here)"
    assert sag_with < sag_without / 4, (sag_with, sag_without)  # quiet machine: 0.001 vs 0.34 rad

    since = time.time()
    time.sleep(0.05)
    q = r.arm.motors().position[:6]
    expected = _bias(chain, q)
    assert abs(expected[1]) > 1.0, "the test pose loads the shoulder"
    for i in range(6):
        sent = r.tap.commands(r.cfg, i, since)[-1].torque
        quantum = 2 * r.cfg.motor_type(i).t_max / 4095
        assert sent == pytest.approx(expected[i], abs=quantum / 2 + 0.01), f"joint{i + 1} feed-forward"
    # the model also gives the end-effector pose
    state = r.arm.state()
    assert np.all(np.isfinite(state.ee_position)) and state.ee_position[0] > 0.4
    assert np.linalg.norm(state.ee_quaternion) == pytest.approx(1.0)


# -- the shipped config and the node ------------------------------------------------------------


def test_the_shipped_yam_yaml_loads_and_sets_every_limit_explicitly():
    from pld_robot.nodes.arm_node import ArmNodeConfig

    raw = load_node_params(shipped_config("yam.yaml"), "arm_node")
    node = from_dict(ArmNodeConfig, raw, "arm_node")
    assert node.driver == "yam" and isinstance(node.arm, YamConfig)
    assert node.arm.action.names == ("joint1", "joint2", "joint3", "joint4", "joint5", "joint6", "gripper")
    assert node.arm.motors == ("DM4340",) * 3 + ("DM4310",) * 4
    assert node.arm.loop_hz >= 250
    assert set(raw["arm"]["limits"]) == {f.name for f in dataclasses.fields(JointLimits)}
    assert load_yaml(shipped_config("yam.yaml"))["arm_node"]["ros__parameters"]["arm"]["simulated"] is False


@pytest.mark.timeout(60)
def test_arm_node_drives_the_simulated_yam_and_survives_a_silent_motor(monkeypatch):
    """The graph description of config/yam.yaml (its cameras left out), with simulated motors:
    /arm/command moves the arm; a silent motor is an ERROR on /arm/status, the node stays up, and
    /arm/recover brings the arm back."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.node import Node
    from sensor_msgs.msg import JointState
    from std_srvs.srv import Trigger
    from trajectory_msgs.msg import JointTrajectory

    from pld_robot.nodes.action_msgs import chunk_to_msg
    from pld_robot.nodes.runner import GraphRunner

    monkeypatch.setenv("ROS_DOMAIN_ID", str(random.randint(20, 99)))
    channel = f"yam-node-{os.getpid()}"
    overrides = {"arm_node": {"arm": {"interface": "virtual", "simulated": True, "channel": channel,
                                      "silent_after_s": 0.5, "motor_timeout_s": 1.0}}}
    with GraphRunner(shipped_config("yam.yaml"), overrides=overrides, exclude=("camera_front", "camera_wrist")) as runner:
        arm = runner.nodes["arm_node"].arm
        probe = runner.add_node(Node("yam_probe"))
        joints, status, executed = [], [], []
        probe.create_subscription(JointState, "/joint_states", joints.append, 10)
        probe.create_subscription(DiagnosticStatus, "/arm/status", status.append, 10)
        probe.create_subscription(JointTrajectory, "/arm/executed", executed.append, 10)
        command = probe.create_publisher(JointTrajectory, "/arm/command", 10)
        recover = probe.create_client(Trigger, "/arm/recover")
        wait_for(lambda: joints and command.get_subscription_count() > 0, 20.0, "/joint_states and the command subscriber")
        assert joints[-1].name[:6] == [f"yam_joint{i}" for i in range(1, 7)]

        home = np.array(arm.config.home_joints)
        target = home + [0.05, 0, 0, 0, 0, 0]
        for _ in range(5):
            command.publish(chunk_to_msg(action(target), arm.spec.names, 10.0, time.time()))
            time.sleep(0.1)
        wait_for(lambda: executed, 15.0, "/arm/executed")
        wait_for(lambda: abs(arm.state().joint_positions[0] - target[0]) < 5e-3, 15.0, "joint1 at its target")

        arm._sim.silence(0)
        wait_for(lambda: arm.fault is not None, 10.0, "the fault")
        command.publish(chunk_to_msg(action(target), arm.spec.names, 10.0, time.time()))
        wait_for(lambda: any(s.level == DiagnosticStatus.ERROR and "no feedback from joint1" in s.message
                             for s in status), 15.0, "/arm/status to report the silent motor")
        count = len(joints)
        wait_for(lambda: len(joints) > count + 5, 15.0, "/joint_states to keep coming")

        arm._sim.silence(0, False)
        future = recover.call_async(Trigger.Request())
        wait_for(future.done, 20.0, "/arm/recover")
        assert future.result().success, future.result().message
        assert arm.fault is None
    gc.collect()
    assert not rclpy.ok()
