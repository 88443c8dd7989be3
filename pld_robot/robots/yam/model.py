"""The arm's MuJoCo model, evaluated at the measured joint positions: the torques that hold the arm
against gravity (MuJoCo's bias forces at zero velocity) and the end-effector pose."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import mujoco
import numpy as np


class ArmModel:
    def __init__(self, path: str | Path, joints: Sequence[str], ee_site: str = ""):
        try:
            self.model = mujoco.MjModel.from_xml_path(str(path))
        except Exception as exc:  # noqa: BLE001 - MuJoCo raises ValueError or its own FatalError
            raise ValueError(f"cannot load the arm model {path}: {exc}") from exc
        # Contacts and constraints play no part in gravity torques; skipping them keeps a tick cheap.
        self.model.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_CONTACT | mujoco.mjtDisableBit.mjDSBL_CONSTRAINT)
        self.data = mujoco.MjData(self.model)
        ids = [mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, name) for name in joints]
        missing = [name for name, i in zip(joints, ids) if i < 0]
        if missing:
            raise ValueError(f"the arm model {path} has no joint(s) {missing}")
        self._qpos = np.array([self.model.jnt_qposadr[i] for i in ids])
        self._dof = np.array([self.model.jnt_dofadr[i] for i in ids])
        self._site = -1
        if ee_site:
            self._site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, ee_site)
            if self._site < 0:
                raise ValueError(f"the arm model {path} has no site '{ee_site}'")
        self._quat = np.zeros(4)

    def update(self, q: np.ndarray) -> None:
        self.data.qpos[self._qpos] = q
        self.data.qvel[:] = 0.0  # bias forces at rest: gravity alone
        mujoco.mj_forward(self.model, self.data)

    def gravity(self) -> np.ndarray:
        """Joint torques that hold the arm at the pose of the last `update`."""
        return self.data.qfrc_bias[self._dof].copy()

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(position, quaternion [x, y, z, w]) of the end-effector site, or None without one."""
        if self._site < 0:
            return None
        mujoco.mju_mat2Quat(self._quat, self.data.site_xmat[self._site])
        w, x, y, z = self._quat
        return self.data.site_xpos[self._site].copy(), np.array([x, y, z, w])
