"""The sim lab's pick-up-the-cube task as a gymnasium env, stepped directly in MuJoCo as fast as the
CPU allows, for residual RL: same scene (franky-sim's FR3 MJCF + scene.py), same action space (the
Franka end-effector deltas of ActionSpec) and the same safety filter and limits as the sim's driver.

    env = PickCubeEnv(FastEnvConfig(observation="image"))
    obs, info = env.reset(seed=0)
    expert = ImperfectExpert()
    obs, reward, terminated, truncated, info = env.step(expert.act(obs))

What differs from the real-time sim lab (lab.py):
- No libfranka protocol, franky motions, threads or wall clock: each step runs one control period
  of 1 kHz physics (`mj_step`) in the caller's thread.
- The arm is moved by fast_control's IK and joint servo, not franky's velocity streaming through
  franky-sim's controllers: it ends each step within ~0.2 mm of the step's target, where the lab's
  arm lags behind its targets (dynamics factor 0.3).
- The driver's safety filter runs (workspace box, per-step caps, slowing near the faces), but there
  is no watchdog, e-stop or homing motion: reset puts the arm at home instantly.
- The observation carries the cube's true pose. Every camera renders once per step, after the
  physics (a camera's fps is ignored); the default images are 64x64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import franky
import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from pld_robot.robots.action_spec import ActionSpec
from pld_robot.robots.franka import FrankaConfig
from pld_robot.robots.safety import EEDeltaSafetyFilter, SafetyLimits
from pld_robot.sim.expert import ExpertConfig, PickUpExpert
from pld_robot.sim.fast_control import PHYSICS_DT, FrankaController, build_model
from pld_robot.sim.lab import SimLabConfig
from pld_robot.sim.scene import CUBE_JOINT, DEFAULT_CAMERAS, SimCameraConfig

# config/sim.yaml arm_node.arm.safety: the sim's driver runs with these (tests check they agree)
SIM_SAFETY = SafetyLimits(workspace_low=(0.25, -0.35, 0.01), workspace_high=(0.75, 0.35, 0.55))
IMAGE_CAMERAS = {name: replace(cam, width=64, height=64) for name, cam in DEFAULT_CAMERAS.items()}
STATE_KEYS = ("state", "cube")


def _range(name: str, value) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"fast env: {name} must be two numbers (low, high), got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"fast env: {name} must be finite with low <= high, got {(lo, hi)}")
    return lo, hi


@dataclass(frozen=True)
class FastEnvConfig:
    cube_size: float = SimLabConfig.cube_size
    cube_x_range: tuple[float, float] = SimLabConfig.cube_x_range
    cube_y_range: tuple[float, float] = SimLabConfig.cube_y_range
    cube_yaw_range: tuple[float, float] = SimLabConfig.cube_yaw_range
    lift_height: float = SimLabConfig.lift_height  # the cube's bottom this far above the table: success
    control_hz: float = 10.0  # one step = round(1 / (control_hz * 1 ms)) physics steps
    max_steps: int = 200  # then truncated
    observation: Literal["state", "image"] = "state"  # "image": also one RGB array per camera
    cameras: dict[str, SimCameraConfig] = field(default_factory=lambda: dict(IMAGE_CAMERAS))
    safety: SafetyLimits = SIM_SAFETY
    home_joints: tuple[float, ...] = FrankaConfig.home_joints
    seed: int = 0  # for the first reset() without a seed

    def __post_init__(self):
        if not (math.isfinite(self.cube_size) and self.cube_size > 0):
            raise ValueError(f"fast env: cube_size must be a positive number of metres, got {self.cube_size}")
        low, high = self.safety.workspace_low, self.safety.workspace_high
        for name, axis in (("cube_x_range", 0), ("cube_y_range", 1), ("cube_yaw_range", None)):
            lo, hi = _range(name, getattr(self, name))
            if axis is not None and not low[axis] <= lo <= hi <= high[axis]:
                raise ValueError(f"fast env: {name} {(lo, hi)} must lie within the workspace box "
                                 f"[{low[axis]}, {high[axis]}] on that axis, or the arm cannot reach the cube")
        if not (math.isfinite(self.lift_height) and self.lift_height > 0):
            raise ValueError(f"fast env: lift_height must be positive, got {self.lift_height}")
        if not (math.isfinite(self.control_hz) and 0 < self.control_hz <= 1 / PHYSICS_DT):
            raise ValueError(f"fast env: control_hz must be in (0, {1 / PHYSICS_DT:.0f}], got {self.control_hz}")
        if not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"fast env: max_steps must be a positive integer, got {self.max_steps!r}")
        if self.observation not in ("state", "image"):
            raise ValueError(f"fast env: observation must be 'state' or 'image', not {self.observation!r}")
        if self.observation == "image" and not self.cameras:
            raise ValueError("fast env: image observations need at least one camera")
        for name, cam in self.cameras.items():
            if name in STATE_KEYS:
                raise ValueError(f"fast env: a camera may not be called {name!r} (an observation key)")
            if not isinstance(cam, SimCameraConfig):
                raise ValueError(f"fast env: camera {name!r} must be a SimCameraConfig, got {type(cam).__name__}")
        if len(self.home_joints) != 7:
            raise ValueError(f"fast env: home_joints needs 7 joint angles, got {len(self.home_joints)}")


class PickCubeEnv(gym.Env):
    """Observation: {"state": x y z qx qy qz qw gripper_width (TCP in the base frame, m),
    "cube": x y z qx qy qz qw, and per camera in image mode an HxWx3 uint8 image}. Reward 1.0 and
    terminated on the step the cube is lifted, else 0.0; truncated after max_steps. info: success,
    cube_pose, and after a step executed_action (the action after the safety filter, in the
    ActionSpec's terms, as the driver records it) and clipped (which limits changed it)."""

    metadata = {"render_modes": []}  # images come in the observation

    def __init__(self, config: FastEnvConfig = FastEnvConfig()):
        self.config = config
        self.action_spec = ActionSpec(control_hz=config.control_hz)
        self.model = build_model(config.cube_size, config.cameras)
        self.data = mujoco.MjData(self.model)
        substeps = max(1, round(1.0 / (config.control_hz * PHYSICS_DT)))
        self.arm = FrankaController(self.model, self.data, config.home_joints, substeps)
        self._filter = EEDeltaSafetyFilter(config.safety, self.action_spec.names, config.control_hz)
        self._close_above = FrankaConfig.gripper_close_threshold  # as the driver: strictly above closes
        cube = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, CUBE_JOINT)
        self._cube = slice(int(self.model.jnt_qposadr[cube]), int(self.model.jnt_qposadr[cube]) + 7)
        self.action_space = spaces.Box(np.array(self.action_spec.low, np.float32),
                                       np.array(self.action_spec.high, np.float32), dtype=np.float32)
        obs_spaces: dict[str, spaces.Space] = {
            "state": spaces.Box(-np.inf, np.inf, (8,), np.float32),
            "cube": spaces.Box(-np.inf, np.inf, (7,), np.float32),
        }
        self._renderers: dict[str, mujoco.Renderer] = {}
        if config.observation == "image":
            for name, cam in config.cameras.items():
                obs_spaces[name] = spaces.Box(0, 255, (cam.height, cam.width, 3), np.uint8)
            self._renderers = _renderers(self.model, config.cameras)
        self.observation_space = spaces.Dict(obs_spaces)
        self._steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if options:
            raise ValueError(f"PickCubeEnv.reset takes no options, got {sorted(options)}")
        if seed is None and self._np_random is None:
            seed = self.config.seed
        super().reset(seed=seed)
        c, d = self.config, self.data
        mujoco.mj_resetData(self.model, d)
        self.arm.reset()
        x, y = self.np_random.uniform(*c.cube_x_range), self.np_random.uniform(*c.cube_y_range)
        yaw = self.np_random.uniform(*c.cube_yaw_range)
        d.qpos[self._cube] = [x, y, c.cube_size / 2, np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        mujoco.mj_forward(self.model, d)
        self._steps = 0
        return self._observation(), {"success": False, "cube_pose": self._cube_pose()}

    def step(self, action):
        action = np.asarray(action, dtype=float)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape} "
                             f"({', '.join(self.action_spec.names)}), got {action.shape}")
        position, rotation = self.arm.tcp_pose()
        # Out-of-space actions are clipped (the gymnasium convention); NaN/Inf raise UnsafeCommand.
        target = self._filter.apply(np.clip(action, self.action_spec.low, self.action_spec.high),
                                    position, rotation)
        self.arm.step(target.position, target.rotation, close=target.gripper > self._close_above)
        mujoco.mj_forward(self.model, self.data)  # the observation shows the state after the period
        self._steps += 1
        cube_pose = self._cube_pose()
        success = bool(cube_pose[2] - self.config.cube_size / 2 > self.config.lift_height)
        truncated = not success and self._steps >= self.config.max_steps
        info = {"success": success, "cube_pose": cube_pose, "executed_action": target.executed,
                "clipped": target.clipped}
        return self._observation(), float(success), success, truncated, info

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers = {}

    def _cube_pose(self) -> np.ndarray:
        """Centre (m) and quaternion [x, y, z, w]; MuJoCo keeps [w, x, y, z]."""
        q = self.data.qpos[self._cube]
        return np.concatenate([q[:3], q[4:7], q[3:4]])

    def _observation(self) -> dict[str, np.ndarray]:
        position, rotation = self.arm.tcp_pose()
        pose = np.eye(4)
        pose[:3, :3] = rotation
        # franky's quaternion, as the driver publishes it: its sign is continuous around the hand
        # pointing down, where transforms.matrix_to_quat (w >= 0) would flip between +x and -x.
        quaternion = franky.Affine(pose).quaternion
        state = np.concatenate([position, quaternion, [self.arm.gripper_width()]])
        obs = {"state": state.astype(np.float32), "cube": self._cube_pose().astype(np.float32)}
        for name, renderer in self._renderers.items():
            renderer.update_scene(self.data, camera=name)
            obs[name] = renderer.render()
        return obs


class ImperfectExpert:
    """The sim lab's scripted expert as a base policy for the fast env, imperfect on purpose: it
    believes the cube is `cube_offset` (m, base frame) from where it is, and adds Gaussian noise of
    std `action_noise` (m) to its translation deltas. Offset 0 and noise 0 is the exact expert.

    With the defaults the fingers close near the cube's edge: it lifted the cube in 51 of 100
    episodes (env seeds 0-99, expert seed 0; 56 % with an 18 mm offset, 34 % with 22 mm), the exact
    expert in 100 of 100. Room for a residual to learn, and for the base to probe. A correction added
    on the way down is kept (the grasp starts at grasp height, wherever the hand is across), so a
    residual can fix the offset; tests/test_fast_env.py shows one that does."""

    def __init__(self, cube_offset: tuple[float, float, float] = (0.02, 0.0, 0.0),
                 action_noise: float = 0.004, seed: int = 0, action_spec: ActionSpec = ActionSpec(),
                 expert: ExpertConfig = ExpertConfig()):
        if not (math.isfinite(action_noise) and action_noise >= 0):
            raise ValueError(f"imperfect expert: action_noise must be >= 0, got {action_noise}")
        if len(cube_offset) != 3 or not all(math.isfinite(v) for v in cube_offset):
            raise ValueError(f"imperfect expert: cube_offset must be 3 finite numbers, got {cube_offset}")
        self.spec = action_spec
        self.cube_offset = np.asarray(cube_offset, dtype=float)
        self.action_noise = action_noise
        self._expert = PickUpExpert(action_spec, expert)
        self._rng = np.random.default_rng(seed)

    @property
    def phase(self) -> str:
        return self._expert.phase

    def reset(self) -> None:
        """Start a new episode (the noise stream goes on: episodes differ)."""
        self._expert.reset()

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        state = np.asarray(obs["state"], dtype=float)
        cube = np.asarray(obs["cube"], dtype=float)
        action = self._expert.act(state[:3], state[3:7], cube[:3] + self.cube_offset, cube[3:7])
        if self.action_noise > 0:
            action[:3] += self._rng.normal(0.0, self.action_noise, 3)
        return np.clip(action, self.spec.low, self.spec.high).astype(np.float32)


def _renderers(model: mujoco.MjModel, cameras: dict[str, SimCameraConfig]) -> dict[str, mujoco.Renderer]:
    renderers = {}
    try:
        for name, cam in cameras.items():
            renderers[name] = mujoco.Renderer(model, height=cam.height, width=cam.width)
    except Exception as exc:  # noqa: BLE001 - no GL backend raises several types: say how to fix it
        for renderer in renderers.values():
            renderer.close()
        raise RuntimeError(f"fast env: cannot create a MuJoCo renderer for image observations ({exc}); "
                           "set MUJOCO_GL=osmesa (with libosmesa6) or egl before importing mujoco") from exc
    return renderers
