"""The sim lab's pick-up expert as a base policy, imperfect on purpose, so that PLD has something to
improve: a systematic offset in where it thinks the cube is, noise on its actions, and a chance per
episode to close the hand too high and miss the grasp.

It needs the sim's ground truth: the request's `extra` carries `cube_position` (3) and
`cube_quaternion` (4, xyzw), and `episode` (any id; a new id draws a new miss decision). State is
EE_STATE_NAMES. A chunk is the expert rolled forward on a kinematic model of the arm (each delta is
reached, the hand closes over `close_ticks`), re-planned from the real state at every request. The arm lags
that model, so a chunk can close the hand before the arm is down: the exact expert lifts the cube in
about two episodes out of three in the full sim graph (docs/rollouts.md).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from pld_robot.policy.spec import InvalidObservation, Observation, PolicySpec, check_observation
from pld_robot.robots.action_spec import ActionSpec
from pld_robot.sim.expert import ExpertConfig, PickUpExpert

_NO_EPISODE_YET = object()
STATE_NAMES = ("x", "y", "z", "qx", "qy", "qz", "qw", "gripper_width")  # nodes.observation.EE_STATE_NAMES


@dataclass(frozen=True)
class ScriptedPolicyConfig:
    action: ActionSpec = field(default_factory=ActionSpec)
    chunk_length: int = 10
    cube_size: float = 0.04
    cube_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)  # m, added to the true cube position
    action_noise: float = 0.0  # std of Gaussian noise on the translation deltas, m
    miss_probability: float = 0.0  # per episode: close the hand `miss_height` above the grasp
    miss_height: float = 0.03
    close_ticks: int = 8  # how long the hand takes to close, in the kinematic model
    open_width: float = 0.08
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.miss_probability <= 1.0:
            raise ValueError(f"miss_probability must be in [0, 1], got {self.miss_probability}")
        if self.action_noise < 0 or self.chunk_length < 1:
            raise ValueError("action_noise must be >= 0 and chunk_length >= 1")


class ScriptedPolicy:
    def __init__(self, config: ScriptedPolicyConfig = ScriptedPolicyConfig()):
        self.config = config
        self.spec = PolicySpec(cameras={}, state_names=STATE_NAMES, action_names=config.action.names,
                               chunk_length=config.chunk_length, control_hz=config.action.control_hz,
                               backend="scripted", version=_version(config))
        self._rng = np.random.default_rng(config.seed)
        self._lock = threading.Lock()
        self._episode: object = _NO_EPISODE_YET
        self._misses = False

    def predict(self, obs: Observation) -> np.ndarray:
        check_observation(self.spec, obs)
        cube_position, cube_quaternion = _cube(obs.extra)
        c = self.config
        with self._lock:
            if obs.extra.get("episode") != self._episode:
                self._episode = obs.extra.get("episode")
                self._misses = bool(self._rng.random() < c.miss_probability)
            misses = self._misses
            noise = self._rng.normal(0.0, c.action_noise, (c.chunk_length, 3))
        believed = cube_position + np.asarray(c.cube_offset)
        expert = PickUpExpert(c.action, ExpertConfig(grasp_depth=c.miss_height if misses else 0.0,
                                                     grasp_ticks=c.close_ticks))
        position, quaternion = obs.state[:3].astype(float), obs.state[3:7].astype(float)
        width = float(obs.state[7])
        phase, grasp_ticks, grasp_z = _phase(position, width, believed, c, misses)
        expert.resume(phase, grasp_z, grasp_ticks)
        chunk = np.zeros((c.chunk_length, c.action.dim), dtype=np.float32)
        for i in range(c.chunk_length):
            action = expert.act(position, quaternion, believed, cube_quaternion)
            action[:3] += noise[i]
            action = np.clip(action, c.action.low, c.action.high)
            chunk[i] = action
            position = position + action[:3]  # the kinematic model: the arm reaches each delta
        return chunk


def _phase(position: np.ndarray, width: float, cube: np.ndarray, c: ScriptedPolicyConfig,
           misses: bool) -> tuple[str, int, float]:
    """Where the expert is, judged from the state alone: a closed hand near the grasp height lifts,
    a closing one keeps closing, an arm above the cube descends, anything else approaches."""
    grasp_z = cube[2] + (c.miss_height if misses else 0.0)
    near = np.linalg.norm(position[:2] - cube[:2]) < 0.02 and position[2] < grasp_z + 0.03
    closing = width < c.open_width - 0.005
    if near and closing:
        closed = width <= c.cube_size + 0.004 or (misses and width < 0.01)
        return ("lift", c.close_ticks, grasp_z) if closed else ("grasp", 0, grasp_z)
    above = np.linalg.norm(position[:2] - cube[:2]) < 0.01 and position[2] < cube[2] + 0.12
    return ("descend" if above else "approach"), 0, 0.0


def _cube(extra: dict) -> tuple[np.ndarray, np.ndarray]:
    try:
        position = np.asarray(extra["cube_position"], dtype=float).reshape(3)
        quaternion = np.asarray(extra["cube_quaternion"], dtype=float).reshape(4)
    except (KeyError, ValueError, TypeError) as exc:
        raise InvalidObservation("the scripted policy needs extra.cube_position (3) and extra.cube_quaternion "
                                 f"(4, xyzw) from the sim's ground truth: {exc}") from exc
    if not (np.all(np.isfinite(position)) and np.all(np.isfinite(quaternion))):
        raise InvalidObservation("extra.cube_position / cube_quaternion must be finite")
    return position, quaternion


def _version(c: ScriptedPolicyConfig) -> str:
    return (f"scripted(offset={list(c.cube_offset)},noise={c.action_noise},miss={c.miss_probability},"
            f"seed={c.seed})")
