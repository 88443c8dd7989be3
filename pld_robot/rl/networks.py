"""The residual actor (tanh-Gaussian) and the clipped double-Q critic: LayerNorm MLPs (PLD: 3 x 256).

Both work on features (from `encoders.ObservationEncoder`) and normalized actions (`actions.py`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from pld_robot.rl.config import NetworkConfig


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    layers, width = [], in_dim
    for size in hidden:
        layers += [nn.Linear(width, size), nn.LayerNorm(size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class TanhGaussianActor(nn.Module):
    """(features, base action) -> delta in [-1, 1]^A and its log-probability (SAC's squashed Gaussian).

    `active` (A bools, default all) says which dimensions the actor may move: the others' delta is 0
    and their density is left out of the log-probability, so SAC's entropy is about real choices."""

    def __init__(self, feature_dim: int, action_dim: int, config: NetworkConfig,
                 active: Sequence[bool] | None = None):
        super().__init__()
        self.action_dim = action_dim
        active = [True] * action_dim if active is None else list(active)
        if len(active) != action_dim or not any(active):
            raise ValueError(f"active must be {action_dim} flags with at least one set, got {active}")
        self.register_buffer("active", torch.tensor(active, dtype=torch.float32), persistent=False)
        self.log_std_min, self.log_std_max = config.log_std_min, config.log_std_max
        self.net = mlp(feature_dim + action_dim, config.hidden, 2 * action_dim)
        # A fresh actor should leave the base policy alone: mean ~ 0, and a moderate spread
        # (log std mid-range, std ~ 0.2) rather than full-range noise on a real arm.
        out = self.net[-1]
        nn.init.uniform_(out.weight, -1e-3, 1e-3)
        nn.init.zeros_(out.bias)

    def forward(self, features: torch.Tensor, base: torch.Tensor,
                deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw_log_std = self.net(torch.cat([features, base], dim=-1)).chunk(2, dim=-1)
        # DrQ's soft bounds on log std: smooth, unlike a clamp, so the gradient never vanishes
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(raw_log_std) + 1)
        std = log_std.exp()
        u = mean if deterministic else mean + std * torch.randn_like(mean)
        gaussian = (-0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)) @ self.active
        # change of variables through tanh, in the numerically stable form log(1 - tanh(u)^2)
        squash = (2 * (math.log(2) - u - F.softplus(-2 * u))) @ self.active
        return torch.tanh(u) * self.active, gaussian - squash


class DoubleQCritic(nn.Module):
    """Two independent Q networks on (features, executed action); targets use their minimum."""

    def __init__(self, feature_dim: int, action_dim: int, config: NetworkConfig):
        super().__init__()
        self.q1 = mlp(feature_dim + action_dim, config.hidden, 1)
        self.q2 = mlp(feature_dim + action_dim, config.hidden, 1)

    def forward(self, features: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """(..., 2): both Q values. Leading dims of features and action must broadcast-match."""
        x = torch.cat([features, action], dim=-1)
        return torch.cat([self.q1(x), self.q2(x)], dim=-1)


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    for t, s in zip(target.parameters(), source.parameters()):
        t.lerp_(s, tau)
