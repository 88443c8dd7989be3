"""Franka FR3/Panda driver over franky: one safe end-effector-delta step per control tick.

    arm = FrankaArm(FrankaConfig(host="172.16.0.2"))
    arm.connect(); arm.home()
    arm.step(np.array([0.01, 0, 0, 0, 0, 0, 0]))   # 1 cm along +x of the base frame
    arm.recover()                                   # after an ArmFault (e.g. a reflex)

The safety filter, watchdog and e-stop latch live here, below every command source.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

import franky
import numpy as np

from pld_robot.robots.action_spec import ActionSpec
from pld_robot.robots.arm import ArmFault, ArmState
from pld_robot.robots.franka_gripper import GripperWorker
from pld_robot.robots.franka_streaming import STREAMERS
from pld_robot.robots.safety import (
    EEDeltaSafetyFilter,
    EStopEngaged,
    EStopLatch,
    SafeTarget,
    SafetyLimits,
    UnsafeCommand,
    Watchdog,
)
from pld_robot.robots.transforms import quat_to_matrix

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrankaConfig:
    host: str = "172.16.0.2"
    action: ActionSpec = field(default_factory=ActionSpec)
    safety: SafetyLimits = field(default_factory=SafetyLimits)
    streaming: Literal["velocity", "waypoint", "impedance"] = "velocity"  # measured: BENCHMARKS.md
    dynamics_factor: float = 0.3  # fraction of the robot's velocity/acceleration/jerk limits per step
    home_joints: tuple[float, float, float, float, float, float, float] = (
        0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785,
    )
    home_dynamics_factor: float = 0.1  # homing is slow on purpose: a person may be near the arm
    gripper_open_width: float = 0.08
    gripper_speed: float = 0.1
    gripper_force: float = 40.0
    gripper_close_threshold: float = 0.5  # action gripper value above which the hand closes
    realtime: bool = True  # False only for franky-sim or a kernel without PREEMPT_RT
    connect_timeout_s: float = 15.0  # keep retrying: under `ros2 launch` the robot may come up later

    def __post_init__(self):
        if not 0 < self.dynamics_factor <= 1 or not 0 < self.home_dynamics_factor <= 1:
            raise ValueError("dynamics factors must be in (0, 1]")


class FrankaArm:
    def __init__(self, config: FrankaConfig):
        self.config = config
        self.spec = config.action
        self._filter = EEDeltaSafetyFilter(config.safety, config.action.names, config.action.control_hz)
        self._watchdog = Watchdog(config.safety.watchdog_periods * config.action.period)
        self._estop = EStopLatch()
        self._lock = threading.RLock()  # one motion command at a time (tick vs watchdog thread)
        self._robot: franky.Robot | None = None
        self._gripper: GripperWorker | None = None
        self._streamer = None
        self._watchdog_thread: threading.Thread | None = None
        self._closing = threading.Event()
        self.watchdog_stops = 0

    # -- lifecycle -------------------------------------------------------------------------
    def connect(self) -> None:
        rt = franky.RealtimeConfig.Enforce if self.config.realtime else franky.RealtimeConfig.Ignore
        deadline = time.monotonic() + self.config.connect_timeout_s
        while True:
            try:
                with _keep_scheduling_policy():
                    self._robot = franky.Robot(self.config.host, realtime_config=rt)
                    gripper = franky.Gripper(self.config.host)
                break
            except Exception as exc:  # noqa: BLE001 - libfranka raises several types here
                if time.monotonic() > deadline:
                    raise ArmFault(
                        f"cannot connect to the Franka at {self.config.host} within "
                        f"{self.config.connect_timeout_s:.0f} s: {exc}"
                    ) from exc
                time.sleep(0.5)
        # franky multiplies the robot-wide factor with each motion's own: keep the robot-wide one at
        # 1 and give every motion its factor explicitly, so a factor is applied exactly once.
        self._robot.relative_dynamics_factor = 1.0
        self._robot.recover_from_errors()
        self._streamer = STREAMERS[self.config.streaming](
            self._robot, self.spec.period, self.config.dynamics_factor
        )
        self._gripper = GripperWorker(
            gripper,
            open_width=self.config.gripper_open_width,
            speed=self.config.gripper_speed,
            force=self.config.gripper_force,
        )
        self._watchdog_thread = threading.Thread(target=self._watch, name="franka-watchdog", daemon=True)
        self._watchdog_thread.start()

    def close(self) -> None:
        self._closing.set()
        if self._watchdog_thread is not None:
            self._watchdog_thread.join(timeout=1.0)
        if self._robot is not None:
            self.hold()
        if self._gripper is not None:
            self._gripper.close()

    # -- reading ---------------------------------------------------------------------------
    def state(self) -> ArmState:
        robot = self._require()
        joints = robot.current_joint_state
        pose = robot.current_pose.end_effector_pose
        return ArmState(
            stamp=time.time(),
            joint_positions=np.array(joints.position),
            joint_velocities=np.array(joints.velocity),
            ee_position=np.array(pose.translation),
            ee_quaternion=np.array(pose.quaternion),
            gripper_width=self._gripper.width,
            estop=self._estop.engaged,
        )

    @property
    def estop_reason(self) -> str | None:
        return self._estop.reason

    # -- commanding ------------------------------------------------------------------------
    def step(self, action: np.ndarray) -> SafeTarget:
        """Execute one control step. Raises UnsafeCommand (NaN/Inf; the arm holds), EStopEngaged,
        or ArmFault (the arm stopped; call recover())."""
        robot = self._require()
        self._estop.check()
        with self._lock:
            pose = robot.current_pose.end_effector_pose
            position = np.array(pose.translation)
            rotation = quat_to_matrix(pose.quaternion)
            try:
                target = self._filter.apply(action, position, rotation)
            except UnsafeCommand:
                self.hold()
                raise
            try:
                _retry_preempted(self._streamer.send, target.position, target.rotation, position, rotation)
            except Exception as exc:  # noqa: BLE001 - franky raises ControlException, planner
                # RuntimeErrors and InvalidMotionTypeException: to the caller all are one fault.
                self._watchdog.disarm()
                raise ArmFault(f"Franka refused the motion: {exc}; call recover() to continue") from exc
            self._watchdog.feed()
        self._gripper.command(target.gripper > self.config.gripper_close_threshold)
        return target

    def hold(self) -> None:
        """Stop the current motion and hold the pose; returns once the arm has stopped."""
        robot = self._require()
        with self._lock:
            self._watchdog.disarm()
            try:
                self._streamer.hold()
                _wait_for_motion(robot, stop_on_estop=None)
            except Exception as exc:  # noqa: BLE001 - stopping must not fail the caller (or the watchdog)
                log.warning("stopping the Franka raised %s (it is stopped either way)", exc)

    def home(self) -> None:
        """Move slowly to the home joint configuration and open the hand (blocking)."""
        robot = self._require()
        self._estop.check()
        self.hold()
        motion = franky.JointMotion(
            list(self.config.home_joints), franky.ReferenceType.Absolute, self.config.home_dynamics_factor
        )
        try:
            with self._lock:
                _retry_preempted(lambda: robot.move(motion, asynchronous=True))
            _wait_for_motion(robot, stop_on_estop=self._estop)
            # An e-stop may have ended the motion between two polls: never open the hand under it.
            self._estop.check()
        except EStopEngaged:
            raise
        except Exception as exc:  # noqa: BLE001 - any franky failure: the same recovery path
            raise ArmFault(f"homing failed: {exc}; call recover() and home again") from exc
        self._gripper.command(False)

    def recover(self) -> None:
        robot = self._require()
        with self._lock:
            self._watchdog.disarm()
            if not robot.recover_from_errors():
                raise ArmFault("the Franka did not recover from its error state; check the robot's Desk")

    def estop(self, reason: str) -> None:
        self._estop.trigger(reason)
        self.hold()
        log.error("e-stop: %s", reason)

    def reset_estop(self) -> None:
        self._estop.reset()

    # -- internals -------------------------------------------------------------------------
    def _watch(self) -> None:
        period = self.spec.period / 2
        while not self._closing.wait(period):
            if self._watchdog.expired():
                log.warning("no command for %.0f ms: stopping the arm", 1000 * self._watchdog.timeout)
                self.watchdog_stops += 1
                self.hold()

    def _require(self) -> franky.Robot:
        if self._robot is None:
            raise ArmFault("the arm is not connected; call connect() first")
        return self._robot


@contextlib.contextmanager
def _keep_scheduling_policy():
    """franky's Robot constructor moves the *calling* thread to SCHED_FIFO 99 when it may (root, or
    an rtprio limit), even with RealtimeConfig.Ignore, and every thread started from it afterwards
    inherits that: ROS executor threads spinning at FIFO 99 starve the simulator on a small machine
    and compete with libfranka's own control thread on a real one. libfranka raises the priority of
    its control thread itself when it should, so the caller gets its own policy back."""
    if not hasattr(os, "sched_getscheduler"):
        yield
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        if os.sched_getscheduler(0) != policy:
            os.sched_setscheduler(0, policy, param)


def _preempted(exc: franky.ControlException) -> bool:
    return "Move command preempted" in str(exc)


def _retry_preempted(command, *args) -> None:
    """libfranka reports a motion we stopped or replaced on purpose ("Move command preempted") as an
    error of the *next* command; that one is not a fault, so the command is sent again once."""
    try:
        command(*args)
    except franky.ControlException as exc:
        if not _preempted(exc):
            raise
        command(*args)


def _wait_for_motion(robot: franky.Robot, stop_on_estop: EStopLatch | None) -> None:
    """Poll until the motion ends. Blocking inside franky (a synchronous move or join_motion) holds
    the GIL for long stretches and starves every other thread of the process, ROS callbacks included.
    `poll_motion` is True once no motion is running; a motion we stopped on purpose ends with a
    "preempted" error, which is the expected way for it to end."""
    while True:
        try:
            if robot.poll_motion():
                return
        except franky.ControlException as exc:
            if not _preempted(exc):
                raise
            return
        if stop_on_estop is not None and stop_on_estop.engaged:
            robot.stop()
            stop_on_estop.check()
        time.sleep(0.005)
