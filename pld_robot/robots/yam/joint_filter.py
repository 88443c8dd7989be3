"""The YAM's safety filter: requested joint targets in, safe joint targets out.

The same contract as the Franka's end-effector filter (robots/safety.py): non-finite or misshapen
input is refused with UnsafeCommand (the arm holds), every limit that bit is named in `clipped`, and
`executed` is what the arm was sent, in the ActionSpec's terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pld_robot.robots.safety import UnsafeCommand
from pld_robot.robots.yam.config import JointLimits


class StartTooFar(UnsafeCommand):
    """The first target after a stop is far from where the arm is: refused, the arm holds."""


@dataclass(frozen=True)
class JointTarget:
    joints: np.ndarray  # rad
    gripper: float  # 0 closed .. 1 open
    executed: np.ndarray  # the action actually executed, in the ActionSpec's terms
    clipped: tuple[str, ...]


class JointSafetyFilter:
    """Order matters: refuse non-finite input; when starting, refuse a target far from the measured
    pose; cap the step from the reference (the last target while moving, the measured pose when
    starting); clamp into the joint limits and cap the step again, so a joint outside its limits
    (moved by hand) walks back in at the step limit; keep the target near the measured pose."""

    def __init__(self, limits: JointLimits, names: tuple[str, ...], control_hz: float):
        self.limits = limits
        self.names = names
        self._low = np.asarray(limits.low, dtype=float)
        self._high = np.asarray(limits.high, dtype=float)
        self._max_step = min(limits.max_step, limits.max_speed / control_hz)

    def check_finite(self, action: np.ndarray) -> np.ndarray:
        action = np.asarray(action, dtype=float)
        if action.shape != (len(self.names),):
            raise UnsafeCommand(f"action has shape {action.shape}, expected ({len(self.names)},) for {self.names}")
        bad = [n for n, v in zip(self.names, action) if not np.isfinite(v)]
        if bad:
            raise UnsafeCommand(f"non-finite action refused (NaN/Inf in {', '.join(bad)}); holding")
        return action

    def apply(self, action: np.ndarray, measured: np.ndarray, previous: np.ndarray | None) -> JointTarget:
        """`previous`: the last target while the arm is moving; None when it starts from a stop."""
        action = self.check_finite(action)
        requested = action[:-1]
        clipped: list[str] = []
        if previous is None:
            self._check_start(requested, measured)
            reference = measured
        else:
            reference = previous
        target = reference + self._cap(requested - reference, "joint step", clipped)
        limited = np.clip(target, self._low, self._high)
        if not np.array_equal(limited, target):
            clipped.append("joint limits")
        target = reference + self._cap(limited - reference, "return to joint limits", clipped)
        near = np.clip(target, measured - self.limits.max_tracking_error, measured + self.limits.max_tracking_error)
        if not np.allclose(near, target, rtol=0.0, atol=1e-12):
            clipped.append("tracking error")
        gripper = float(np.clip(action[-1], 0.0, 1.0))
        if gripper != action[-1]:
            clipped.append("gripper range")
        return JointTarget(near, gripper, np.append(near, gripper), tuple(clipped))

    def _check_start(self, requested: np.ndarray, measured: np.ndarray) -> None:
        error = np.abs(requested - measured)
        worst = int(np.argmax(error))
        if error[worst] > self.limits.max_start_error:
            raise StartTooFar(
                f"refusing to start: the first target of {self.names[worst]} is {error[worst]:.3f} rad "
                f"from its measured position ({measured[worst]:.3f} rad; max_start_error "
                f"{self.limits.max_start_error} rad); home() the arm or start from a target near its pose"
            )

    def _cap(self, step: np.ndarray, what: str, clipped: list[str]) -> np.ndarray:
        capped = np.clip(step, -self._max_step, self._max_step)
        # a step capped once must not count as capped again by rounding
        if np.any(np.abs(step) > self._max_step * (1 + 1e-9)):
            clipped.append(what)
        return capped
