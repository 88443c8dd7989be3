"""The safety layer that sits in the arm driver, below every command source.

Pure logic (no franky, no ROS): the driver feeds it the measured pose and the requested action and
sends only what comes out. Each limit is a value in the robot YAML; none is optional.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from pld_robot.robots.transforms import matrix_to_rotvec, rotvec_to_matrix


@dataclass(frozen=True)
class SafetyLimits:
    # Box the end-effector (TCP) target must stay in, base frame, metres.
    workspace_low: tuple[float, float, float] = (0.25, -0.35, 0.02)
    workspace_high: tuple[float, float, float] = (0.75, 0.35, 0.55)
    max_translation_per_step: float = 0.02  # m
    max_rotation_per_step: float = 0.1  # rad
    max_linear_speed: float = 0.25  # m/s: caps the per-step translation at the control rate
    # rad/s; below franky's 2.5 rad/s times the driver's dynamics factor (0.3), or a capped step
    # would still be more than the arm turns in one period
    max_angular_speed: float = 0.7
    watchdog_periods: float = 3.0  # no fresh command for this many control periods -> stop
    # A step toward a workspace face may cover at most this fraction of the distance left to it: the
    # arm slows to a stop at the face instead of arriving at full speed and braking past it.
    approach_gain: float = 0.5

    def __post_init__(self):
        for name in ("workspace_low", "workspace_high"):
            if not all(math.isfinite(v) for v in getattr(self, name)):
                raise ValueError(f"safety: {name} must be finite numbers, got {getattr(self, name)}")
        if any(lo >= hi for lo, hi in zip(self.workspace_low, self.workspace_high)):
            raise ValueError("safety: workspace_low must be below workspace_high on every axis")
        for name in _POSITIVE:
            value = getattr(self, name)
            if name == "approach_gain":
                if not 0 < value <= 1:  # also false for NaN
                    raise ValueError(f"safety: approach_gain must be in (0, 1], got {value}")
            elif not (math.isfinite(value) and value > 0):
                raise ValueError(f"safety: {name} must be a positive finite number, got {value}")


_POSITIVE = (
    "max_translation_per_step",
    "max_rotation_per_step",
    "max_linear_speed",
    "max_angular_speed",
    "watchdog_periods",
    "approach_gain",
)


class UnsafeCommand(ValueError):
    """A command was refused outright (not clipped); the arm holds its pose."""


class EStopEngaged(RuntimeError):
    """The e-stop is latched: nothing moves until `reset_estop()` is called explicitly."""


@dataclass(frozen=True)
class SafeTarget:
    """What the driver may send: an absolute pose target, the gripper command, and what was clipped."""

    position: np.ndarray
    rotation: np.ndarray  # 3x3
    gripper: float
    executed: np.ndarray  # the action actually executed, in the ActionSpec's terms
    clipped: tuple[str, ...]


class EEDeltaSafetyFilter:
    """Turns a requested end-effector delta into a safe absolute target.

    Order matters: reject non-finite input, cap the step (translation and rotation, the tighter of
    the per-step and speed limits), clamp the target into the workspace box, slow down near its faces,
    and cap the step again, so an arm that finds itself outside the box (moved by hand) walks back in
    at the step limit instead of jumping.
    """

    def __init__(self, limits: SafetyLimits, names: tuple[str, ...], control_hz: float):
        self.limits = limits
        self.names = names
        self.dt = 1.0 / control_hz
        self._low = np.asarray(limits.workspace_low, dtype=float)
        self._high = np.asarray(limits.workspace_high, dtype=float)
        self._max_step = min(limits.max_translation_per_step, limits.max_linear_speed * self.dt)
        self._max_rot = min(limits.max_rotation_per_step, limits.max_angular_speed * self.dt)

    def check_finite(self, action: np.ndarray) -> np.ndarray:
        action = np.asarray(action, dtype=float)
        if action.shape != (len(self.names),):
            raise UnsafeCommand(
                f"action has shape {action.shape}, expected ({len(self.names)},) for {self.names}"
            )
        bad = [n for n, v in zip(self.names, action) if not np.isfinite(v)]
        if bad:
            raise UnsafeCommand(f"non-finite action refused (NaN/Inf in {', '.join(bad)}); holding")
        return action

    def apply(self, action: np.ndarray, position: np.ndarray, rotation: np.ndarray) -> SafeTarget:
        action = self.check_finite(action)
        clipped: list[str] = []
        delta = _cap_norm(action[:3], self._max_step, "translation step", clipped)
        rotvec = _cap_norm(action[3:6], self._max_rot, "rotation step", clipped)

        target = position + delta
        boxed = np.clip(target, self._low, self._high)
        if not np.allclose(boxed, target):
            clipped.append("workspace box")
        delta = self._slow_near_faces(boxed - position, position, clipped)
        delta = _cap_norm(delta, self._max_step, "return to workspace", clipped)

        gripper = float(np.clip(action[6], 0.0, 1.0))
        target_rot = rotvec_to_matrix(rotvec) @ rotation
        executed = np.concatenate([delta, matrix_to_rotvec(target_rot @ rotation.T), [gripper]])
        return SafeTarget(position + delta, target_rot, gripper, executed, tuple(clipped))

    def _slow_near_faces(self, delta: np.ndarray, position: np.ndarray, clipped: list[str]) -> np.ndarray:
        gain = self.limits.approach_gain
        up = gain * np.maximum(self._high - position, 0.0)
        down = gain * np.maximum(position - self._low, 0.0)
        slowed = np.clip(delta, -down, up)
        # Moving away from a face, or back into the box from outside, is never slowed.
        returning = ((delta < 0) & (position > self._high)) | ((delta > 0) & (position < self._low))
        slowed = np.where(returning, delta, slowed)
        if not np.allclose(slowed, delta, rtol=0.0, atol=1e-12):
            clipped.append("approaching workspace face")
        return slowed


def _cap_norm(v: np.ndarray, limit: float, what: str, clipped: list[str]) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    if norm > limit * (1 + 1e-9):  # a step capped once must not count as capped again by rounding
        clipped.append(what)
        return v * (limit / norm)
    return v


class Watchdog:
    """Expires when `feed` has not been called for `timeout` seconds (monotonic clock)."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self._last = None
        self._lock = threading.Lock()

    def feed(self, now: float | None = None) -> None:
        with self._lock:
            self._last = time.monotonic() if now is None else now

    def disarm(self) -> None:
        with self._lock:
            self._last = None

    def expired(self, now: float | None = None) -> bool:
        with self._lock:
            if self._last is None:
                return False
            now = time.monotonic() if now is None else now
            return now - self._last > self.timeout


class EStopLatch:
    """Once triggered, stays engaged until `reset` is called; remembers why."""

    def __init__(self):
        self._reason: str | None = None
        self._lock = threading.Lock()

    @property
    def engaged(self) -> bool:
        return self._reason is not None

    @property
    def reason(self) -> str | None:
        return self._reason

    def trigger(self, reason: str) -> None:
        with self._lock:
            if self._reason is None:
                self._reason = reason

    def reset(self) -> None:
        with self._lock:
            self._reason = None

    def check(self) -> None:
        if self._reason is not None:
            raise EStopEngaged(f"e-stop engaged ({self._reason}); reset it explicitly to move again")
