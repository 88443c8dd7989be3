"""What a policy expects and returns, and the check every observation passes before it reaches one.

The server sends its PolicySpec to every client on connect (openpi's "metadata"), so the robot side
knows the cameras, image size, state and action layout, chunk length and control rate before it asks
for anything, and can refuse to start against a policy that does not fit its robot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class InvalidObservation(ValueError):
    """An observation the policy cannot use; the message says what is wrong with it."""


@dataclass(frozen=True)
class PolicySpec:
    cameras: dict[str, tuple[int, int]]  # name -> (height, width) of the images the policy is sent
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    chunk_length: int
    control_hz: float
    backend: str = ""
    version: str = ""  # of the weights: recorded with every episode as policy_version

    def __post_init__(self):
        if self.chunk_length < 1:
            raise ValueError(f"chunk_length must be at least 1, got {self.chunk_length}")
        if not (math.isfinite(self.control_hz) and self.control_hz > 0):
            raise ValueError(f"control_hz must be positive, got {self.control_hz}")
        if not self.action_names:
            raise ValueError("a policy needs at least one action dimension")

    def to_json(self) -> dict:
        return {"cameras": {n: list(hw) for n, hw in self.cameras.items()}, "state_names": list(self.state_names),
                "action_names": list(self.action_names), "chunk_length": self.chunk_length,
                "control_hz": self.control_hz, "backend": self.backend, "version": self.version}

    @classmethod
    def from_json(cls, data: dict) -> "PolicySpec":
        return cls(cameras={n: (int(hw[0]), int(hw[1])) for n, hw in data["cameras"].items()},
                   state_names=tuple(data["state_names"]), action_names=tuple(data["action_names"]),
                   chunk_length=int(data["chunk_length"]), control_hz=float(data["control_hz"]),
                   backend=data.get("backend", ""), version=data.get("version", ""))


@dataclass
class Observation:
    images: dict[str, np.ndarray]  # camera name -> (H, W, 3) uint8 RGB
    state: np.ndarray  # (S,) float32
    prompt: str = ""
    noise: np.ndarray | None = None  # (chunk, max action dim) for a reproducible sample (tests, benchmarks)
    extra: dict = field(default_factory=dict)  # backend-specific inputs, e.g. the sim's ground truth


class Policy(Protocol):
    spec: PolicySpec

    def predict(self, obs: Observation) -> np.ndarray:
        """The next `spec.chunk_length` actions, (chunk_length, len(action_names)) float32."""


def check_observation(spec: PolicySpec, obs: Observation) -> None:
    """Raise InvalidObservation naming the first thing wrong with `obs` for a policy of `spec`."""
    if not isinstance(obs.images, dict):
        raise InvalidObservation("images must be a mapping of camera name to image")
    missing = [c for c in spec.cameras if c not in obs.images]
    if missing:
        raise InvalidObservation(f"missing camera(s) {missing}; the policy needs {sorted(spec.cameras)}")
    unknown = [c for c in obs.images if c not in spec.cameras]
    if unknown:
        raise InvalidObservation(f"unknown camera(s) {unknown}; the policy needs {sorted(spec.cameras)}")
    for name, (height, width) in spec.cameras.items():
        image = obs.images[name]
        if not isinstance(image, np.ndarray):
            raise InvalidObservation(f"image {name!r} is a {type(image).__name__}, not an array")
        if image.dtype != np.uint8:
            raise InvalidObservation(f"image {name!r} has dtype {image.dtype}, expected uint8 RGB")
        if image.shape != (height, width, 3):
            raise InvalidObservation(f"image {name!r} has shape {image.shape}, expected {(height, width, 3)}")
    state = obs.state
    if not isinstance(state, np.ndarray) or state.ndim != 1:
        raise InvalidObservation("state must be a 1-D array")
    if len(state) != len(spec.state_names):
        raise InvalidObservation(f"state has {len(state)} values, expected {len(spec.state_names)} "
                                 f"({', '.join(spec.state_names)})")
    if state.dtype.kind not in "fiu" or not np.all(np.isfinite(state)):
        raise InvalidObservation(f"state must be finite numbers, got {state}")
    if not isinstance(obs.prompt, str):
        raise InvalidObservation(f"prompt must be a string, got {type(obs.prompt).__name__}")
    if obs.noise is not None and (not isinstance(obs.noise, np.ndarray) or not np.all(np.isfinite(obs.noise))):
        raise InvalidObservation("noise must be a finite array")
