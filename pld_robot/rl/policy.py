"""The residual policy: observation + base action -> the correction to add, xi * delta.

This is what the robot runs (the learner exports it, `checkpoint.load_latest_actor` loads it) and
what the learner's SAC trains: encoder, tanh-Gaussian actor, action scaling and the residual scale xi.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from pld_robot.rl.actions import ActionScaling
from pld_robot.rl.config import EncoderConfig, NetworkConfig
from pld_robot.rl.encoders import ObservationEncoder
from pld_robot.rl.networks import TanhGaussianActor
from pld_robot.robots.action_spec import ActionSpec


class ResidualPolicy(nn.Module):
    def __init__(self, encoder: ObservationEncoder, actor: TanhGaussianActor, scaling: ActionScaling, scale: float):
        super().__init__()
        if actor.action_dim != scaling.dim:
            raise ValueError(f"residual policy: the actor has {actor.action_dim} action dimensions, "
                             f"the action bounds {scaling.dim}")
        self.encoder, self.actor, self.scaling = encoder, actor, scaling
        self.scale = scale  # xi: the learner sets it from its schedule; an export records it

    def scaled_delta(self, features: torch.Tensor, base_normalized: torch.Tensor,
                     deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """xi * delta (normalized units) and the log-probability of delta (what SAC's entropy is about)."""
        delta, log_prob = self.actor(features, base_normalized, deterministic)
        return self.scale * delta, log_prob

    @torch.no_grad()
    def residual(self, obs: Mapping[str, np.ndarray], base_action: np.ndarray,
                 deterministic: bool = False) -> np.ndarray:
        """The correction to add to `base_action`, in the action's physical units; each dimension within
        xi times its half range. One step (`base_action` of shape (A,)) or a batch ((B, A))."""
        device = self.scaling.center.device
        base = torch.as_tensor(np.asarray(base_action, dtype=np.float32), device=device)
        tensors = {k: torch.as_tensor(np.asarray(obs[k]), device=device) for k in self.encoder.obs_keys if k in obs}
        single = base.ndim == 1
        if single:
            base, tensors = base[None], {k: v[None] for k, v in tensors.items()}
        scaled, _ = self.scaled_delta(self.encoder(tensors), self.scaling.normalize(base), deterministic)
        residual = self.scaling.residual_to_physical(scaled).cpu().numpy()
        return residual[0] if single else residual

    def act(self, obs: Mapping[str, np.ndarray], base_action: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """The action to execute: base + residual, clipped to the action bounds (physical units)."""
        center, half = self.scaling.center.cpu().numpy(), self.scaling.half_range.cpu().numpy()
        return np.clip(np.asarray(base_action, dtype=np.float32) + self.residual(obs, base_action, deterministic),
                       center - half, center + half)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Everything a checkpoint stores: all but a frozen pretrained tower (loaded from its folder)."""
        return {k: v for k, v in self.state_dict().items() if ".tower." not in k}


def build_policy(encoder: EncoderConfig, networks: NetworkConfig, action_spec: ActionSpec, state_dim: int,
                 scale: float, residual_dims: Sequence[str] = ()) -> ResidualPolicy:
    """`residual_dims`: the action names the residual may change (empty: all)."""
    observation_encoder = ObservationEncoder(encoder, state_dim)
    actor = TanhGaussianActor(observation_encoder.out_dim, action_spec.dim, networks,
                              active_dims(action_spec, residual_dims))
    return ResidualPolicy(observation_encoder, actor, ActionScaling(action_spec), scale)


def active_dims(action_spec: ActionSpec, residual_dims: Sequence[str]) -> list[bool]:
    unknown = sorted(set(residual_dims) - set(action_spec.names))
    if unknown:
        raise ValueError(f"residual_scale.dims names {unknown}, which are not actions of this robot "
                         f"({', '.join(action_spec.names)})")
    return [not residual_dims or name in residual_dims for name in action_spec.names]
