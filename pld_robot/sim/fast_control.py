"""The sim lab's FR3 in plain MuJoCo, for the fast env: the same MJCF as franky-sim's (built the way
SimLab builds it), and a controller that turns one end-effector target per control period into
joint motion, without franky-sim's server, protocol or threads.

The arm: damped-least-squares IK on the TCP (franky's default F_T_EE, 10.34 cm along the hand's z)
gives the period's joint goal; the joint command moves there at constant velocity over the period's
1 kHz physics steps, tracked by the model's joint position servos (franky-sim's damping, a stiffer
spring) with velocity, gravity and Coriolis feed-forward. The hand: franky-sim's finger PD with its
speed and force limits, commanded as the Franka driver commands it (grasp at width 0 with 40 N, or
open to 8 cm).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import mujoco
import numpy as np
from franky_sim.mujoco_simulator import MUJOCO_DEFAULT_KP, MUJOCO_DEFAULT_KV, MujocoSimulator

from pld_robot.robots.transforms import matrix_to_rotvec
from pld_robot.sim.scene import ROBOT_PREFIX, SimCameraConfig, add_lab_scene

PHYSICS_DT = 0.001  # franky-sim's 1 kHz
TCP_OFFSET = 0.1034  # m along the hand's z: franky's default F_T_EE (the hand body has its -45 deg yaw)
# franky-sim's kp with its kv leaves a slow 10/s pole: a change of direction would still show as
# 1-3 mm of lag at the end of the period. Four times the stiffness brings that under 0.3 mm.
SERVO_STIFFNESS = 4.0
IK_DAMPING = 0.01
IK_ITERATIONS = 3
NULLSPACE_GAIN = 0.05  # per control period: pulls the redundant elbow back toward home, away from limits
# franky-sim's FrankaMujocoRobot hand controller, and what the Franka driver asks of it
FINGER_KP, FINGER_KV = 1000.0, 50.0
FINGER_SPEED = 0.05  # m/s per finger: franky-sim's cap (the driver asks for 0.1)
GRASP_FORCE, MOVE_FORCE = 40.0, 70.0  # N: the driver's grasp force; franky-sim's force for a move
OPEN_WIDTH = 0.08


def build_model(cube_size: float, cameras: dict[str, SimCameraConfig]) -> mujoco.MjModel:
    """The sim lab's scene compiled as franky-sim compiles it, with actuators set up for
    `FrankaController` (franky-sim zeroes them and writes torques itself)."""
    sim = MujocoSimulator()
    sim.init()
    sim.add_robot()
    add_lab_scene(sim.scene, sim.worldbody, cube_size, cameras)
    model = mujoco.MjModel.from_xml_string(ET.tostring(sim.scene, encoding="unicode"))
    model.opt.timestep = PHYSICS_DT
    for i, (kp, kv) in enumerate(zip(MUJOCO_DEFAULT_KP, MUJOCO_DEFAULT_KV), start=1):
        act = _id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, f"fr3_joint{i}")
        kp = kp * SERVO_STIFFNESS
        model.actuator_gainprm[act, 0] = kp
        model.actuator_biasprm[act, :3] = (0.0, -kp, -kv)
    hand = _id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, "hand")
    model.actuator_gainprm[hand, :] = 0.0  # the fingers get franky-sim's PD through qfrc_applied
    model.actuator_biasprm[hand, :] = 0.0
    return model


class FrankaController:
    """Moves the arm to an absolute TCP pose (base frame = world) over one control period."""

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, home_joints, substeps: int):
        self.model, self.data, self.substeps = model, data, substeps
        joints = [_id(model, mujoco.mjtObj.mjOBJ_JOINT, f"fr3_joint{i}") for i in range(1, 8)]
        acts = [_id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, f"fr3_joint{i}") for i in range(1, 8)]
        fingers = [_id(model, mujoco.mjtObj.mjOBJ_JOINT, f"finger_joint{i}") for i in (1, 2)]
        # Slices, not index lists: the 1 kHz loop touches these a hundred times per step.
        self._q = _contiguous(model.jnt_qposadr[joints], "arm joint positions")
        self._dq = _contiguous(model.jnt_dofadr[joints], "arm joint velocities")
        self._ctrl = _contiguous(np.array(acts), "arm actuators")
        self._finger_q = [int(a) for a in model.jnt_qposadr[fingers]]
        self._finger_dq = [int(a) for a in model.jnt_dofadr[fingers]]
        self._lead = model.actuator_biasprm[acts, 2] / model.actuator_biasprm[acts, 1]  # kv / kp
        self._low, self._high = model.jnt_range[joints].T
        self._hand = _id(model, mujoco.mjtObj.mjOBJ_BODY, "hand")
        self._home = np.asarray(home_joints, dtype=float)
        self._ik = mujoco.MjData(model)  # kinematics scratch: IK never touches the simulated state
        self._jacp, self._jacr = np.zeros((3, model.nv)), np.zeros((3, model.nv))
        self._ramp = (np.arange(1, substeps + 1) / substeps)[:, None]
        self._hand_goal = (OPEN_WIDTH, MOVE_FORCE)

    def reset(self) -> None:
        """Home pose, hand open, at rest (the caller runs mj_forward)."""
        d = self.data
        d.qpos[self._q] = self._home
        d.ctrl[self._ctrl] = self._home
        for a in self._finger_q:
            d.qpos[a] = OPEN_WIDTH / 2
        self._hand_goal = (OPEN_WIDTH, MOVE_FORCE)

    def tcp_pose(self, data: mujoco.MjData | None = None) -> tuple[np.ndarray, np.ndarray]:
        """TCP position and rotation matrix, from the data's last kinematics pass."""
        d = self.data if data is None else data
        rotation = d.xmat[self._hand].reshape(3, 3)
        return d.xpos[self._hand] + TCP_OFFSET * rotation[:, 2], rotation.copy()

    def gripper_width(self) -> float:
        return float(sum(self.data.qpos[a] for a in self._finger_q))

    def step(self, position: np.ndarray, rotation: np.ndarray, close: bool) -> None:
        """One control period toward the TCP target, with the hand closing or opening."""
        d = self.data
        goal = self.solve_ik(position, rotation)
        start = d.ctrl[self._ctrl].copy()  # the last command, so the command path stays continuous
        velocity = (goal - start) / (self.substeps * PHYSICS_DT)
        # The servo's force is kp (ctrl - q) - kv dq: leading the path by kv/kp * velocity makes it
        # kp (path - q) + kv (velocity - dq), a PD with velocity feed-forward, all inside the
        # actuator so that the joint's torque limit caps the whole of it.
        commands = start + self._ramp * (goal - start) + self._lead * velocity
        self._hand_goal = (0.0, GRASP_FORCE) if close else (OPEN_WIDTH, MOVE_FORCE)
        for command in commands:
            d.ctrl[self._ctrl] = command
            d.qfrc_applied[self._dq] = d.qfrc_bias[self._dq]  # gravity and Coriolis, as franky-sim
            self._finger_forces()
            mujoco.mj_step(self.model, d)
        d.ctrl[self._ctrl] = goal  # between periods the servo holds the goal

    def solve_ik(self, position: np.ndarray, rotation: np.ndarray) -> np.ndarray:
        """Joint goal reaching the TCP pose, from the measured joints (damped least squares, with a
        small null-space pull toward home)."""
        m, ik = self.model, self._ik
        ik.qpos[:] = self.data.qpos
        q = ik.qpos[self._q].copy()
        eye = np.eye(7)
        for _ in range(IK_ITERATIONS):
            mujoco.mj_kinematics(m, ik)
            mujoco.mj_comPos(m, ik)
            tcp, current = self.tcp_pose(ik)
            error = np.concatenate([position - tcp, matrix_to_rotvec(rotation @ current.T)])
            mujoco.mj_jac(m, ik, self._jacp, self._jacr, tcp, self._hand)
            jac = np.vstack([self._jacp[:, self._dq], self._jacr[:, self._dq]])
            pinv = jac.T @ np.linalg.inv(jac @ jac.T + IK_DAMPING**2 * np.eye(6))
            null = (eye - pinv @ jac) @ (NULLSPACE_GAIN / IK_ITERATIONS * (self._home - q))
            q = np.clip(q + pinv @ error + null, self._low, self._high)
            ik.qpos[self._q] = q
        return q

    def _finger_forces(self) -> None:
        # franky-sim's FrankaMujocoRobot._pre_step: PD to half the goal width per finger, coasting
        # (damping only) above the speed limit, force-capped.
        d = self.data
        width, force = self._hand_goal
        for qa, da in zip(self._finger_q, self._finger_dq):
            dq = d.qvel[da]
            tau = FINGER_KP * (width / 2 - d.qpos[qa]) - FINGER_KV * dq
            if abs(dq) > FINGER_SPEED and dq * tau > 0:
                tau = -FINGER_KV * dq
            d.qfrc_applied[da] = min(max(tau, -force), force)


def _id(model: mujoco.MjModel, kind: mujoco.mjtObj, name: str) -> int:
    index = mujoco.mj_name2id(model, kind, ROBOT_PREFIX + name)
    if index < 0:
        raise ValueError(f"franky-sim's model has no {kind.name[6:].lower()} '{ROBOT_PREFIX + name}'")
    return index


def _contiguous(addresses, what: str) -> slice:
    addresses = [int(a) for a in addresses]
    if addresses != list(range(addresses[0], addresses[0] + len(addresses))):
        raise ValueError(f"franky-sim's model layout changed: {what} are not contiguous ({addresses})")
    return slice(addresses[0], addresses[-1] + 1)
