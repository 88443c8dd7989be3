"""The residual's action space: the robot's action bounds mapped to [-1, 1] per dimension.

PLD's residual scale xi is a fraction of a normalized action range (xi 0.5: up to half of it). The
robot's ActionSpec is in physical units (metres, radians, gripper 0..1), so the networks work on
normalized actions and `ActionScaling` converts at the edges.
"""

from __future__ import annotations

import torch
from torch import nn

from pld_robot.robots.action_spec import ActionSpec


class ActionScaling(nn.Module):
    def __init__(self, spec: ActionSpec):
        super().__init__()
        low = torch.tensor(spec.low, dtype=torch.float32)
        high = torch.tensor(spec.high, dtype=torch.float32)
        flat = [name for name, lo, hi in zip(spec.names, spec.low, spec.high) if not hi > lo]
        if flat:
            raise ValueError(f"action spec: dimension(s) {flat} have high <= low; a residual needs a range")
        # buffers: they follow the module to its device and into its state_dict
        self.register_buffer("center", (high + low) / 2)
        self.register_buffer("half_range", (high - low) / 2)

    @property
    def dim(self) -> int:
        return self.center.numel()

    def normalize(self, action: torch.Tensor) -> torch.Tensor:
        """Physical -> [-1, 1]. Clamped: the arm executes nothing outside its bounds, so the networks
        never see anything outside them either (this also keeps absurd inputs finite and bounded)."""
        return ((action - self.center) / self.half_range).clamp(-1.0, 1.0)

    def residual_to_physical(self, scaled_delta: torch.Tensor) -> torch.Tensor:
        """xi * delta (normalized) -> the correction to add to a physical base action."""
        return scaled_delta * self.half_range


def executed_normalized(base: torch.Tensor, scaled_delta: torch.Tensor) -> torch.Tensor:
    """a = a_base + xi * delta, clipped to the bounds; everything normalized."""
    return (base + scaled_delta).clamp(-1.0, 1.0)
