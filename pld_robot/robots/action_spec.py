"""ActionSpec: the contract between every command source (policy, residual, teleop) and the arm."""

from __future__ import annotations

from dataclasses import dataclass


FRANKA_EE_DELTA_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")


@dataclass(frozen=True)
class ActionSpec:
    """Ordered dimension names, per-dimension bounds, and the control rate the action is meant for.

    Franka default: end-effector deltas per control step in the base frame (m, rad as a rotation
    vector) and an absolute gripper command in [0 open, 1 closed].
    """

    names: tuple[str, ...] = FRANKA_EE_DELTA_NAMES
    low: tuple[float, ...] = (-0.02, -0.02, -0.02, -0.1, -0.1, -0.1, 0.0)
    high: tuple[float, ...] = (0.02, 0.02, 0.02, 0.1, 0.1, 0.1, 1.0)
    control_hz: float = 10.0

    def __post_init__(self):
        if not (len(self.names) == len(self.low) == len(self.high)):
            raise ValueError(
                f"action spec: {len(self.names)} names but {len(self.low)} low and "
                f"{len(self.high)} high bounds"
            )
        if any(lo > hi for lo, hi in zip(self.low, self.high)):
            raise ValueError("action spec: a low bound exceeds its high bound")
        if self.control_hz <= 0:
            raise ValueError("action spec: control_hz must be positive")

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def period(self) -> float:
        return 1.0 / self.control_hz
