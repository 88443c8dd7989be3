"""Gamepad state (a sensor_msgs/Joy-shaped axes/buttons pair) -> teleop action and events.

Pure logic: no ROS, no SDL. Indices are those of the ROS `joy` package's `game_controller_node`
(SDL GameController order), which `sdl_gamepad.py` reproduces, so one mapping serves both sources:

    axes     0 LEFTX  1 LEFTY  2 RIGHTX  3 RIGHTY  4 TRIGGERLEFT  5 TRIGGERRIGHT
             sticks: left = +1, up = +1; triggers: 0 released .. -1 fully pressed
    buttons  0 A  1 B  2 X  3 Y  4 BACK  5 GUIDE  6 START  7 LEFTSTICK  8 RIGHTSTICK
             9 LEFTSHOULDER (LB)  10 RIGHTSHOULDER (RB)  11 DPAD_UP  12 DPAD_DOWN
             13 DPAD_LEFT  14 DPAD_RIGHT  15 MISC1  16-19 PADDLE1-4  20 TOUCHPAD

The default layout (docs/teleop.md has the picture): LB held = dead-man; left stick = x/y;
RT/LT = z up/down; right stick = yaw (left/right) and pitch (up/down); d-pad left/right = roll;
RB = gripper toggle; A = success, X = failure, START = start (scene reset done), B = e-stop.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Action layout: [dx, dy, dz, droll, dpitch, dyaw, gripper].
MOTION_DIMS = ("x", "y", "z", "roll", "pitch", "yaw")
ACTION_DIM = len(MOTION_DIMS) + 1


class TeleopEvent(enum.Enum):
    INTERVENE_START = "intervene_start"
    INTERVENE_END = "intervene_end"
    SUCCESS = "success"
    FAILURE = "failure"
    START = "start"
    ESTOP = "estop"


class JoyLayoutError(ValueError):
    """The joy input has fewer axes or buttons than the mapping refers to."""


@dataclass(frozen=True)
class Binding:
    """One motion dimension in [-1, 1]: the sum of sign * axis value and sign * button state.

    Several terms let a pair of controls drive one dimension both ways (two triggers, two d-pad
    buttons); a sign may be any scale, e.g. -1 to flip a stick.
    """

    axes: tuple[int, ...] = ()
    axis_signs: tuple[float, ...] = ()
    buttons: tuple[int, ...] = ()
    button_signs: tuple[float, ...] = ()

    def __post_init__(self):
        if len(self.axes) != len(self.axis_signs):
            raise ValueError(f"{len(self.axes)} axes but {len(self.axis_signs)} axis_signs")
        if len(self.buttons) != len(self.button_signs):
            raise ValueError(
                f"{len(self.buttons)} buttons but {len(self.button_signs)} button_signs"
            )
        if any(i < 0 for i in self.axes + self.buttons):
            raise ValueError("axis and button indices must be >= 0")


@dataclass(frozen=True)
class TeleopConfig:
    x: Binding = Binding(axes=(1,), axis_signs=(1.0,))  # left stick up = forward
    y: Binding = Binding(axes=(0,), axis_signs=(1.0,))  # left stick left = left
    z: Binding = Binding(axes=(5, 4), axis_signs=(-1.0, 1.0))  # RT up, LT down
    roll: Binding = Binding(buttons=(14, 13), button_signs=(1.0, -1.0))  # d-pad right / left
    pitch: Binding = Binding(axes=(3,), axis_signs=(1.0,))  # right stick up
    yaw: Binding = Binding(axes=(2,), axis_signs=(1.0,))  # right stick left = counter-clockwise
    # Per-axis and rescaled, so output ramps from 0 at the edge instead of jumping to `deadzone`.
    deadzone: float = 0.1
    max_translation_m: float = 0.01  # per control step, norm of (dx, dy, dz)
    max_rotation_rad: float = 0.05  # per control step, norm of (droll, dpitch, dyaw)
    control_hz: float = 10.0  # must match the arm's: the deltas are per step of this rate
    deadman_button: int = 9  # LB
    gripper_button: int = 10  # RB
    success_button: int = 0  # A
    failure_button: int = 2  # X
    start_button: int = 6  # START
    estop_button: int = 1  # B
    success_label_button: int = 3  # Y, hold: the task is visibly done now (per-frame success label)

    def __post_init__(self):
        if not 0.0 <= self.deadzone < 1.0:
            raise ValueError(f"deadzone must be in [0, 1), got {self.deadzone}")
        for name in ("max_translation_m", "max_rotation_rad", "control_hz"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        owners: dict[int, str] = {}
        for role, index in self.button_roles().items():
            if index < 0:
                raise ValueError(f"{role}: button index must be >= 0, got {index}")
            if index in owners:
                raise ValueError(f"button {index} is bound to both {owners[index]} and {role}")
            owners[index] = role
        for dim in MOTION_DIMS:
            for index in getattr(self, dim).buttons:
                if index in owners:
                    raise ValueError(f"button {index} is bound to both {owners[index]} and {dim}")

    def button_roles(self) -> dict[str, int]:
        return {
            "deadman_button": self.deadman_button,
            "gripper_button": self.gripper_button,
            "success_button": self.success_button,
            "failure_button": self.failure_button,
            "start_button": self.start_button,
            "estop_button": self.estop_button,
            "success_label_button": self.success_label_button,
        }


@dataclass(frozen=True)
class TeleopOutput:
    action: np.ndarray | None  # [dx, dy, dz, droll, dpitch, dyaw, gripper]; None while released
    deadman: bool
    events: tuple[TeleopEvent, ...]
    stamp: float
    success_label: bool = False  # the success-label button is held


class JoyMapper:
    """Stateful: buttons fire on their press edge, and the gripper command is a toggled state."""

    def __init__(self, config: TeleopConfig):
        self.config = config
        self._axis_uses = _uses(config, "axes")
        self._button_uses = _uses(config, "buttons")
        for role, index in config.button_roles().items():
            self._button_uses.setdefault(index, role)
        self._held: dict[int, bool] = {}
        self._gripper = 0.0

    @property
    def deadman(self) -> bool:
        return self._held.get(self.config.deadman_button, False)

    def sync_gripper(self, command: float) -> None:
        """Adopt the gripper state the arm last executed, so taking over never drops a held object.

        Ignored while the dead-man is held: then the executed command is our own.
        """
        if not self.deadman:
            self._gripper = 1.0 if command >= 0.5 else 0.0

    def update(self, axes: Sequence[float], buttons: Sequence[int], stamp: float) -> TeleopOutput:
        self._check_layout(len(axes), len(buttons))
        pressed = {i: bool(buttons[i]) for i in self._button_uses}
        return self._step(np.asarray(axes, dtype=float), pressed, stamp)

    def release(self, stamp: float) -> TeleopOutput:
        """The input is gone (unplugged, stale): act as if every button were let go."""
        return self._step(None, {i: False for i in self._button_uses}, stamp)

    def _step(
        self, axes: np.ndarray | None, pressed: dict[int, bool], stamp: float
    ) -> TeleopOutput:
        cfg = self.config
        rose = {i for i, down in pressed.items() if down and not self._held.get(i, False)}
        was_deadman = self.deadman
        self._held = pressed
        deadman = self.deadman

        # Within one update the e-stop goes first: it is the one that must not wait.
        events = [TeleopEvent.ESTOP] if cfg.estop_button in rose else []
        if deadman != was_deadman:
            events.append(TeleopEvent.INTERVENE_START if deadman else TeleopEvent.INTERVENE_END)
        labels = (
            (TeleopEvent.SUCCESS, cfg.success_button),
            (TeleopEvent.FAILURE, cfg.failure_button),
            (TeleopEvent.START, cfg.start_button),
        )
        events += [event for event, button in labels if button in rose]

        label = pressed.get(cfg.success_label_button, False)
        if not deadman:
            return TeleopOutput(None, False, tuple(events), stamp, label)
        # Toggling only counts under the dead-man: otherwise it would change nothing visible now
        # and surprise the operator at the next takeover.
        if cfg.gripper_button in rose:
            self._gripper = 1.0 - self._gripper
        motion = np.array([self._dimension(getattr(cfg, d), axes, pressed) for d in MOTION_DIMS])
        action = np.concatenate(
            [
                _cap_norm(motion[:3] * cfg.max_translation_m, cfg.max_translation_m),
                _cap_norm(motion[3:] * cfg.max_rotation_rad, cfg.max_rotation_rad),
                [self._gripper],
            ]
        )
        return TeleopOutput(action, True, tuple(events), stamp, label)

    def _dimension(self, binding: Binding, axes: np.ndarray, pressed: dict[int, bool]) -> float:
        dz = self.config.deadzone
        value = sum(s * _deadzone(axes[i], dz) for i, s in zip(binding.axes, binding.axis_signs))
        value += sum(s * pressed[i] for i, s in zip(binding.buttons, binding.button_signs))
        return float(np.clip(value, -1.0, 1.0))

    def _check_layout(self, n_axes: int, n_buttons: int) -> None:
        missing = [f"axis {i} ({use})" for i, use in sorted(self._axis_uses.items()) if i >= n_axes]
        missing += [
            f"button {i} ({use})" for i, use in sorted(self._button_uses.items()) if i >= n_buttons
        ]
        if missing:
            raise JoyLayoutError(
                f"joy input has {n_axes} axes and {n_buttons} buttons, but the teleop mapping uses "
                f"{', '.join(missing)}; use the joy package's game_controller_node (6 axes, "
                "21 buttons) or remap in the teleop config"
            )


def _uses(config: TeleopConfig, kind: str) -> dict[int, str]:
    uses: dict[int, str] = {}
    for dim in MOTION_DIMS:
        for index in getattr(getattr(config, dim), kind):
            uses.setdefault(index, dim)
    return uses


def _deadzone(value: float, deadzone: float) -> float:
    magnitude = abs(value)
    if magnitude <= deadzone:
        return 0.0
    return float(np.sign(value)) * (magnitude - deadzone) / (1.0 - deadzone)


def _cap_norm(vector: np.ndarray, limit: float) -> np.ndarray:
    # Diagonal deflection must not exceed the per-step limit either.
    norm = float(np.linalg.norm(vector))
    return vector * (limit / norm) if norm > limit else vector
