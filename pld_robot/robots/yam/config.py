"""The YAM's configuration: its motors on the bus, the joint-space safety limits, the motor loop.

Seven motors in a fixed order, six joints then the gripper, each described by parallel arrays
(ROS parameters cannot hold lists of mappings). Defaults are I2RT's published YAM: DM4340 on
joints 1-3, DM4310 on joints 4-6 and the gripper, CAN ids 1-7 answering on 0x11-0x17, the
vendor's gains, and the joint ranges of the vendor's MuJoCo model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pld_robot.robots.action_spec import ActionSpec
from pld_robot.robots.yam.protocol import KD_MAX, KP_MAX, MotorType

JOINTS = 6
MOTORS = JOINTS + 1  # the gripper is the last motor
JOINT_NAMES = tuple(f"joint{i}" for i in range(1, JOINTS + 1))

Six = tuple[float, float, float, float, float, float]
Seven = tuple[float, float, float, float, float, float, float]

YAM_JOINT_LOW: Six = (-2.618, 0.0, 0.0, -1.693, -1.571, -2.094)
YAM_JOINT_HIGH: Six = (3.142, 3.665, 3.142, 1.571, 1.571, 2.094)


def yam_action() -> ActionSpec:
    """Six absolute joint targets (rad) and the gripper, 0 closed to 1 open."""
    return ActionSpec(names=(*JOINT_NAMES, "gripper"), low=(*YAM_JOINT_LOW, 0.0),
                      high=(*YAM_JOINT_HIGH, 1.0), control_hz=10.0)


def _motor_types() -> dict[str, MotorType]:
    # DM4340: some firmwares map velocity onto +-10 rad/s; read VMAX off the motor with Damiao's tool.
    return {"DM4340": MotorType(p_max=12.5, v_max=8.0, t_max=28.0),
            "DM4310": MotorType(p_max=12.5, v_max=30.0, t_max=10.0)}


@dataclass(frozen=True)
class JointLimits:
    low: Six = YAM_JOINT_LOW  # rad
    high: Six = YAM_JOINT_HIGH
    max_step: float = 0.05  # rad per control step, every joint
    max_speed: float = 1.5  # rad/s: caps the per-step change at the control rate
    # The first target after a stop may be at most this far from the measured pose; farther, the
    # command is refused instead of dragging the arm there (home() first).
    max_start_error: float = 0.2
    # A target stays this close to the measured pose, so a blocked joint pushes with at most
    # kp * max_tracking_error instead of a force that grows with every step.
    max_tracking_error: float = 0.2
    watchdog_periods: float = 3.0  # no fresh command for this many control periods -> hold
    hold_s: float = 1.0  # then hold this long, then damp (kp 0)

    def __post_init__(self):
        if not all(math.isfinite(v) for v in (*self.low, *self.high)):
            raise ValueError("joint limits must be finite")
        if any(lo >= hi for lo, hi in zip(self.low, self.high)):
            raise ValueError("joint limits: every low must be below its high")
        for name in ("max_step", "max_speed", "max_start_error", "max_tracking_error",
                     "watchdog_periods", "hold_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"joint limits: {name} must be a positive number, got {value}")


@dataclass(frozen=True)
class YamConfig:
    interface: str = "socketcan"  # python-can interface; "virtual" with simulated: true
    channel: str = "can0"
    bitrate: int = 1_000_000  # socketcan takes it from `ip link`; other interfaces from here
    simulated: bool = False  # simulated motors on a python-can virtual channel, in this process
    action: ActionSpec = field(default_factory=yam_action)
    limits: JointLimits = field(default_factory=JointLimits)
    motor_types: dict[str, MotorType] = field(default_factory=_motor_types)
    motors: tuple[str, str, str, str, str, str, str] = ("DM4340",) * 3 + ("DM4310",) * 4
    can_ids: tuple[int, int, int, int, int, int, int] = (1, 2, 3, 4, 5, 6, 7)
    feedback_ids: tuple[int, int, int, int, int, int, int] = (17, 18, 19, 20, 21, 22, 23)  # 0x11-0x17
    kp: Seven = (80.0, 80.0, 80.0, 40.0, 10.0, 10.0, 20.0)
    kd: Seven = (5.0, 5.0, 5.0, 1.5, 1.5, 1.5, 0.5)  # also the damping once the arm is damped
    loop_hz: float = 250.0
    # What the motors' own CAN timeout register is set to (0: off). A motor that hears nothing for
    # that long disables itself and reports "communication lost"; the loop must beat it comfortably.
    motor_timeout_s: float = 0.1
    silent_after_s: float = 0.05  # no feedback from a motor for this long: a fault
    connect_timeout_s: float = 1.0  # waiting for every motor to answer the enable frame
    # MuJoCo model of the arm (MJCF): gravity feed-forward and the end-effector pose. "" = none.
    model_path: str = ""
    model_joints: tuple[str, str, str, str, str, str] = JOINT_NAMES
    ee_site: str = ""  # site of the model that is the end effector; "" = no /arm/ee_pose
    gravity_scale: Six = (1.0,) * JOINTS  # per joint, on the model's gravity torques
    gripper_closed: float = 0.0  # gripper motor position, rad, fully closed
    gripper_open: float = 6.5  # ... and fully open: calibrate on your gripper
    gripper_stroke: float = 0.096  # m between the fingers when fully open
    home_joints: Six = (0.0, 0.8, 0.8, 0.0, 0.0, 0.0)
    home_speed: float = 0.3  # rad/s: homing is slow on purpose

    def __post_init__(self):
        if len(self.action.names) != MOTORS:
            raise ValueError(f"the YAM's action has {MOTORS} dimensions (6 joints + gripper), "
                             f"got {len(self.action.names)}")
        unknown = sorted(set(self.motors) - set(self.motor_types))
        if unknown:
            raise ValueError(f"motors: unknown motor type(s) {unknown}; known: {sorted(self.motor_types)}")
        ids = (*self.can_ids, *self.feedback_ids)
        if len(set(ids)) != len(ids) or not all(0 < i < 0x800 for i in ids):
            raise ValueError("can_ids and feedback_ids must be distinct 11-bit CAN ids")
        if not all(0 <= k <= KP_MAX for k in self.kp) or not all(0 < k <= KD_MAX for k in self.kd):
            raise ValueError(f"kp must be in [0, {KP_MAX}] and kd in (0, {KD_MAX}]: damping needs kd > 0")
        period = 1.0 / self.loop_hz if self.loop_hz > 0 else math.inf
        if self.action.control_hz * 2 > self.loop_hz:
            raise ValueError(f"loop_hz ({self.loop_hz}) must be at least twice action.control_hz "
                             f"({self.action.control_hz}): the loop interpolates between targets")
        if self.motor_timeout_s < 0 or (self.motor_timeout_s and self.motor_timeout_s < 5 * period):
            raise ValueError(f"motor_timeout_s ({self.motor_timeout_s}) must be 0 (off) or at least 5 "
                             f"loop periods ({5 * period:.3f} s), or the motors time out between commands")
        if self.silent_after_s < 2 * period:
            raise ValueError(f"silent_after_s must cover at least 2 loop periods ({2 * period:.3f} s)")
        if self.simulated and self.interface != "virtual":
            raise ValueError("simulated motors live on python-can's virtual interface: set interface: virtual")
        if self.gripper_open == self.gripper_closed or not self.gripper_stroke > 0:
            raise ValueError("gripper_open must differ from gripper_closed, and gripper_stroke be positive")
        if any(not lo <= h <= hi for h, lo, hi in zip(self.home_joints, self.limits.low, self.limits.high)):
            raise ValueError(f"home_joints {self.home_joints} lie outside the joint limits")
        if not self.home_speed > 0 or not self.connect_timeout_s > 0:
            raise ValueError("home_speed and connect_timeout_s must be positive")
        if self.ee_site and not self.model_path:
            raise ValueError("ee_site needs model_path")

    def motor_type(self, index: int) -> MotorType:
        return self.motor_types[self.motors[index]]
