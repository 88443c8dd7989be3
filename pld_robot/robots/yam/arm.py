"""I2RT YAM driver over CAN: one safe joint-target step per control tick, the same interface as
the Franka driver, so arm_node drives either.

    arm = YamArm(YamConfig(channel="can0"))
    arm.connect(); arm.home()
    arm.step(np.array([0.0, 0.8, 0.8, 0.0, 0.0, 0.0, 1.0]))   # six joint targets, gripper open
    arm.recover()                                               # after an ArmFault

The safety filter, the e-stop latch and (inside the motor loop) the watchdog live here, below
every command source. The driver never re-zeros a motor.
"""

from __future__ import annotations

import logging
import threading
import time

import can
import numpy as np

from pld_robot.robots.arm import ArmFault, ArmState
from pld_robot.robots.safety import EStopLatch, UnsafeCommand
from pld_robot.robots.yam.config import JOINTS, YamConfig
from pld_robot.robots.yam.joint_filter import JointSafetyFilter, JointTarget
from pld_robot.robots.yam.model import ArmModel
from pld_robot.robots.yam.motor_loop import MotorLoop, MotorReadings
from pld_robot.robots.yam.sim import SimMotors

log = logging.getLogger(__name__)

NO_POSE = (np.full(3, np.nan), np.full(4, np.nan))


class YamArm:
    def __init__(self, config: YamConfig, bus: can.BusABC | None = None):
        """`bus`: an open python-can bus to use (and leave open); by default `connect()` opens
        the configured one."""
        self.config = config
        self.spec = config.action
        self._filter = JointSafetyFilter(config.limits, config.action.names, config.action.control_hz)
        self._model = ArmModel(config.model_path, config.model_joints, config.ee_site) if config.model_path else None
        self._estop = EStopLatch()
        self._lock = threading.RLock()  # one command at a time (tick, homing, recovery)
        self._bus = bus
        self._owns_bus = bus is None
        self._sim: SimMotors | None = None
        self._loop: MotorLoop | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def connect(self) -> None:
        """Enable the motors and hold the pose they are in. Raises ArmFault naming each motor that
        does not answer or reports an error."""
        c = self.config
        if c.simulated:
            self._sim = SimMotors(c, initial=(*c.home_joints, c.gripper_closed)).start()
        if self._bus is None:
            try:
                self._bus = can.Bus(interface=c.interface, channel=c.channel, bitrate=c.bitrate)
            except (can.CanError, OSError, ValueError) as exc:
                self._stop_sim()
                raise ArmFault(
                    f"cannot open CAN channel {c.channel} ({c.interface}): {exc}; for SocketCAN bring it "
                    f"up first: ip link set {c.channel} up type can bitrate {c.bitrate}"
                ) from exc
        loop = MotorLoop(self._bus, c, self._model)
        try:
            loop.bring_up(clear_errors=False)
        except ArmFault:
            loop.disable()
            self._release_bus()
            raise
        loop.start()
        self._loop = loop
        log.info("YAM on %s: motors enabled, motor loop at %.0f Hz", c.channel, c.loop_hz)

    def close(self) -> None:
        """Damp, then disable the motors: the arm goes limp, so park it (home() to a resting pose
        in the config) before closing."""
        if self._loop is not None:
            self._loop.damp()
            time.sleep(0.1)  # a few damped ticks slow a moving arm before the torque goes
            self._loop.stop()
            self._loop.disable()
            self._loop = None
        self._release_bus()

    # -- reading ---------------------------------------------------------------------------
    def state(self) -> ArmState:
        r = self.motors()
        position, quaternion = r.ee_pose or NO_POSE
        return ArmState(
            stamp=r.stamp,
            joint_positions=r.position[:JOINTS].copy(),
            joint_velocities=r.velocity[:JOINTS].copy(),
            ee_position=position,
            ee_quaternion=quaternion,
            gripper_width=self._opening(r.position[JOINTS]) * self.config.gripper_stroke,
            estop=self._estop.engaged,
        )

    def motors(self) -> MotorReadings:
        """Every motor's latest feedback: positions, velocities, torques, temperatures, status codes."""
        return self._require().readings

    @property
    def fault(self) -> str | None:
        return None if self._loop is None else self._loop.fault

    @property
    def estop_reason(self) -> str | None:
        return self._estop.reason

    @property
    def watchdog_stops(self) -> int:
        return 0 if self._loop is None else self._loop.watchdog_stops

    def loop_ticks(self) -> np.ndarray:
        """Start times (monotonic, s) of the motor loop's recent ticks: its rate and jitter."""
        return self._require().tick_times()

    # -- commanding ------------------------------------------------------------------------
    def step(self, action: np.ndarray) -> JointTarget:
        """Execute one control step: six absolute joint targets (rad) and the gripper (0 closed,
        1 open). Raises UnsafeCommand (NaN/Inf, wrong shape, or StartTooFar; the arm holds),
        EStopEngaged, or ArmFault (a motor or the bus failed; the arm is damped; call recover())."""
        loop = self._require()
        self._estop.check()
        self._check_fault(loop)
        with self._lock:
            measured = loop.readings.position[:JOINTS]
            try:
                target = self._filter.apply(action, measured, loop.moving_target())
            except UnsafeCommand:
                loop.hold()
                raise
            loop.track(np.append(target.joints, self._gripper_position(target.gripper)))
        return target

    def hold(self) -> None:
        """Hold the current setpoint, indefinitely (a watchdog stop damps after `hold_s`)."""
        self._require().hold()

    def home(self) -> None:
        """Move slowly (home_speed) to home_joints and open the gripper; blocks until there."""
        loop = self._require()
        self._estop.check()
        self._check_fault(loop)
        with self._lock:
            start = loop.readings.position.copy()
            goal = np.append(self.config.home_joints, self._gripper_position(1.0))
            duration = max(float(np.max(np.abs(goal[:JOINTS] - start[:JOINTS]))) / self.config.home_speed,
                           self.spec.period)
            t0 = time.monotonic()
            while True:
                alpha = min((time.monotonic() - t0) / duration, 1.0)
                if self._estop.engaged:
                    loop.hold()
                    self._estop.check()
                self._check_fault(loop)
                loop.track(start + alpha * (goal - start))
                if alpha >= 1.0:
                    break
                time.sleep(self.spec.period)
            time.sleep(self.spec.period)  # the loop reaches the last target one control period later
            loop.hold()

    def recover(self) -> None:
        """Clear the motors' errors and enable them again; then hold the pose they are in. Raises
        ArmFault (and stays damped) when a motor still does not answer or still reports an error."""
        loop = self._require()
        with self._lock:
            loop.stop()
            try:
                loop.bring_up(clear_errors=True)
            except ArmFault as exc:
                loop.fail(str(exc))
                raise
            finally:
                loop.start()

    def estop(self, reason: str) -> None:
        self._estop.trigger(reason)
        if self._loop is not None:
            self._loop.hold()
        log.error("e-stop: %s", reason)

    def reset_estop(self) -> None:
        self._estop.reset()

    # -- internals -------------------------------------------------------------------------
    def _gripper_position(self, opening: float) -> float:
        c = self.config
        return c.gripper_closed + opening * (c.gripper_open - c.gripper_closed)

    def _opening(self, position: float) -> float:
        c = self.config
        return float(np.clip((position - c.gripper_closed) / (c.gripper_open - c.gripper_closed), 0.0, 1.0))

    def _check_fault(self, loop: MotorLoop) -> None:
        if loop.fault is not None:
            raise ArmFault(f"{loop.fault}; the arm is damped; call recover() once the cause is gone")

    def _require(self) -> MotorLoop:
        if self._loop is None:
            raise ArmFault("the arm is not connected; call connect() first")
        return self._loop

    def _release_bus(self) -> None:
        if self._owns_bus and self._bus is not None:
            self._bus.shutdown()
            self._bus = None
        self._stop_sim()

    def _stop_sim(self) -> None:
        if self._sim is not None:
            self._sim.stop()
            self._sim = None
