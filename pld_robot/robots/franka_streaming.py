"""Ways to stream one end-effector target per control tick to franky.

Each streamer turns "be at this pose one control period from now" into a franky motion. Which one
tracks better at 10 and 30 Hz was measured in franky-sim (bench/control_loop.py, BENCHMARKS.md);
the robot YAML picks one by name and the measured winner (velocity) is the default.

`dynamics` is the motion's relative dynamics factor (fraction of the robot's velocity, acceleration
and jerk limits); the driver keeps franky's robot-wide factor at 1 so it is applied once.
"""

from __future__ import annotations

import franky
import numpy as np

from pld_robot.robots.transforms import matrix_to_quat, matrix_to_rotvec


def _affine(position: np.ndarray, rotation: np.ndarray) -> franky.Affine:
    return franky.Affine(np.asarray(position, float), matrix_to_quat(rotation))


def _step_twist(position, rotation, current_position, current_rotation, period: float) -> franky.Twist:
    """The twist that takes the current pose to the target in one period."""
    linear = (np.asarray(position) - current_position) / period
    angular = matrix_to_rotvec(rotation @ current_rotation.T) / period
    return franky.Twist(linear, angular)


class WaypointStreamer:
    """An asynchronous absolute Cartesian motion per tick; each preempts the last (franky's Ruckig
    replans from the current state, so the path stays smooth)."""

    name = "waypoint"

    def __init__(self, robot: franky.Robot, period: float, dynamics: float):
        self._robot = robot
        self._dynamics = dynamics

    def send(self, position, rotation, current_position, current_rotation) -> None:
        motion = franky.CartesianMotion(
            _affine(position, rotation), franky.ReferenceType.Absolute, self._dynamics
        )
        self._robot.move(motion, asynchronous=True)

    def hold(self) -> None:
        self._robot.stop()


class VelocityStreamer:
    """A short Cartesian velocity motion per tick: the twist that covers the step in one period,
    held for `hold_periods` periods. The next tick's command preempts it, so a stream of steps is
    one continuous motion; if commands stop, the last motion ends by itself. Holding longer than a
    period would ride out late ticks, but an isolated step would then overshoot (1.5 periods moved
    a 10 mm step 14.6-15.1 mm)."""

    name = "velocity"

    def __init__(self, robot: franky.Robot, period: float, dynamics: float, hold_periods: float = 1.0):
        self._robot = robot
        self._period = period
        self._dynamics = dynamics
        self._hold_ms = max(1, int(round(1000 * period * hold_periods)))

    def send(self, position, rotation, current_position, current_rotation) -> None:
        twist = _step_twist(position, rotation, current_position, current_rotation, self._period)
        motion = franky.CartesianVelocityMotion(twist, franky.Duration(self._hold_ms), self._dynamics)
        self._robot.move(motion, asynchronous=True)

    def hold(self) -> None:
        self._robot.stop()


class ImpedanceStreamer:
    """franky's Cartesian impedance tracker with the target moved every tick and the step's twist as
    feed-forward. Compliant, but it holds the last target rather than stopping by itself."""

    name = "impedance"

    def __init__(self, robot: franky.Robot, period: float, dynamics: float,
                 translational_stiffness: float = 2000.0, rotational_stiffness: float = 150.0):
        self._robot = robot
        self._period = period
        self._stiffness = (translational_stiffness, rotational_stiffness)
        self._tracker: franky.CartesianImpedanceTracker | None = None

    def send(self, position, rotation, current_position, current_rotation) -> None:
        if self._tracker is None or not self._robot.is_in_control:
            self._tracker = franky.CartesianImpedanceTracker(
                self._robot,
                translational_stiffness=self._stiffness[0],
                rotational_stiffness=self._stiffness[1],
            )
        twist = _step_twist(position, rotation, current_position, current_rotation, self._period)
        self._tracker.set_target(_affine(position, rotation), twist)

    def hold(self) -> None:
        if self._tracker is not None:
            self._tracker.stop()
            self._tracker = None
        else:
            self._robot.stop()


STREAMERS = {cls.name: cls for cls in (WaypointStreamer, VelocityStreamer, ImpedanceStreamer)}
