"""A scripted pick-up expert for the sim lab: above the cube, align, descend, grasp, lift.

It reads the cube pose from ground truth and emits actions in the Franka ActionSpec, capped to the
spec's bounds, so it exercises exactly the path a policy's actions take."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pld_robot.robots.action_spec import ActionSpec
from pld_robot.robots.transforms import matrix_to_rotvec, quat_to_matrix


@dataclass(frozen=True)
class ExpertConfig:
    approach_height: float = 0.10  # above the cube centre before descending
    grasp_depth: float = 0.0  # TCP height relative to the cube centre when grasping
    lift_height: float = 0.15  # TCP height above the grasp height at the end
    position_tolerance: float = 0.006
    yaw_tolerance: float = 0.05
    grasp_ticks: int = 8  # ticks to wait for the hand to close
    gain: float = 0.6  # fraction of the remaining error corrected per tick


class PickUpExpert:
    """`phase` goes approach -> descend -> grasp -> lift -> done."""

    def __init__(self, spec: ActionSpec, config: ExpertConfig = ExpertConfig()):
        self.spec = spec
        self.config = config
        self.reset()

    def reset(self) -> None:
        self.resume("approach")

    def resume(self, phase: str, grasp_z: float = 0.0, grasp_ticks: int = 0) -> None:
        """Continue from `phase` (a planner that re-plans from the state sets where it is)."""
        self.phase = phase
        self._grasp_z = grasp_z
        self._grasp_ticks = grasp_ticks

    def act(self, ee_position: np.ndarray, ee_quaternion: np.ndarray,
            cube_position: np.ndarray, cube_quaternion: np.ndarray) -> np.ndarray:
        c = self.config
        ee_rot = quat_to_matrix(ee_quaternion)
        yaw_error = _yaw_error(ee_rot, quat_to_matrix(cube_quaternion))
        gripper = 0.0
        if self.phase == "approach":
            target = cube_position + [0.0, 0.0, c.approach_height]
            if _reached(ee_position, target, c.position_tolerance) and abs(yaw_error) < c.yaw_tolerance:
                self.phase = "descend"
        if self.phase == "descend":
            target = cube_position + [0.0, 0.0, c.grasp_depth]
            # the grasp starts at grasp height wherever the hand is across: a correction that someone
            # else adds on the way down (a residual, a person) is kept, not waited out
            if abs(ee_position[2] - target[2]) < c.position_tolerance / 2:
                self.phase = "grasp"
                self._grasp_z = ee_position[2]
        if self.phase == "grasp":
            target, gripper = ee_position.copy(), 1.0
            self._grasp_ticks += 1
            if self._grasp_ticks >= c.grasp_ticks:
                self.phase = "lift"
        if self.phase in ("lift", "done"):
            target = np.array([ee_position[0], ee_position[1], self._grasp_z + c.lift_height])
            gripper = 1.0
            if _reached(ee_position, target, c.position_tolerance):
                self.phase = "done"
        action = np.zeros(self.spec.dim)
        action[:3] = c.gain * (np.asarray(target) - ee_position)
        action[5] = c.gain * yaw_error if self.phase in ("approach", "descend") else 0.0
        action[6] = gripper
        return np.clip(action, self.spec.low, self.spec.high)


def _reached(position, target, tolerance) -> bool:
    return bool(np.linalg.norm(np.asarray(target) - position) < tolerance)


def _yaw_error(ee_rot: np.ndarray, cube_rot: np.ndarray) -> float:
    """Yaw (about world z) that lines the fingers up with a cube face; a cube repeats every 90 deg."""
    relative = matrix_to_rotvec(cube_rot @ ee_rot.T)
    yaw = relative[2]
    return float((yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4)
