"""Who acts on a tick: the base policy alone, base + residual, PLD's hybrid probing, or the person.

Hybrid probing (PLD): the base acts alone for the first T_base ~ U[0, alpha * T] steps, then base +
residual take over, so the residual learns to recover from the states the base leads into. While the
dead-man is held, the teleop action replaces the policy's and the step is `human` (HIL-SERL).
"""

from __future__ import annotations

import enum

import numpy as np

from pld_robot.data.layout import Source


class Mode(str, enum.Enum):
    BASE = "base"
    RESIDUAL = "residual"
    HYBRID = "hybrid"
    TELEOP = "teleop"


def sample_probe_steps(rng: np.random.Generator, alpha: float, max_steps: int) -> int:
    """T_base ~ U[0, alpha * T], in whole steps."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return int(rng.integers(0, int(alpha * max_steps) + 1))


def residual_acts(mode: Mode, step: int, probe_steps: int) -> bool:
    """Whether base + residual act on `step` (when the person is not driving and the base has an action)."""
    return mode is Mode.RESIDUAL or (mode is Mode.HYBRID and step >= probe_steps)


def compose(mode: Mode, step: int, probe_steps: int, base: np.ndarray | None, residual: np.ndarray | None,
            teleop: np.ndarray | None, hold: np.ndarray) -> tuple[np.ndarray, Source, bool]:
    """The action to send, whose it is, and whether the policy starved (had no action for this tick).

    `teleop` is the person's action while the dead-man is held, else None; `hold` keeps the arm where
    it is (zero motion, the gripper as it was): what a starved tick sends, and what a teleop episode
    sends while nobody drives, still the person's step."""
    if teleop is not None:
        return teleop, Source.HUMAN, False
    if mode is Mode.TELEOP:
        return hold, Source.HUMAN, False
    if base is None:
        return hold, Source.PROBE, True
    if not residual_acts(mode, step, probe_steps):
        return base, Source.PROBE, False
    correction = residual if residual is not None else np.zeros_like(base)
    return base + correction, Source.RESIDUAL, False
