"""What every arm driver offers the rest of the stack (Franka via franky, YAM over CAN)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pld_robot.robots.action_spec import ActionSpec
from pld_robot.robots.safety import SafeTarget


@dataclass(frozen=True)
class ArmState:
    stamp: float  # wall-clock seconds of the reading
    joint_positions: np.ndarray
    joint_velocities: np.ndarray
    ee_position: np.ndarray  # base frame, m
    ee_quaternion: np.ndarray  # [x, y, z, w]
    gripper_width: float  # m, cached by the gripper thread
    estop: bool = False


class ArmFault(RuntimeError):
    """The arm refused or aborted a motion (e.g. a Franka reflex). The arm is stopped; call
    `recover()` once the cause is gone, then continue."""


class Arm(Protocol):
    spec: ActionSpec

    def connect(self) -> None: ...

    def state(self) -> ArmState: ...

    def step(self, action: np.ndarray) -> SafeTarget: ...

    def hold(self) -> None: ...

    def home(self) -> None: ...

    def recover(self) -> None: ...

    def estop(self, reason: str) -> None: ...

    def reset_estop(self) -> None: ...

    def close(self) -> None: ...
