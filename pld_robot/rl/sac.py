"""Residual SAC (PLD's probe stage): learns delta in a = a_base + xi * delta, clipped to the bounds.

The SAC policy's action is delta (pre-scaling): its entropy is what the learned temperature targets
(-|A|). The critics judge the executed action, base + xi * delta, since that is what the arm did and
what a person's intervention replaces; the next state's executed action is rebuilt from the base
action recorded for that state. Everything inside is in normalized action units (`actions.py`).

Images: one encoder (DrQ-v2 practice), trained by the critic loss only; the actor sees its features
detached, and the target critics reuse it (with no gradient) rather than keeping a target copy.

    agent = ResidualSAC(config, action_spec, state_dim)
    agent.update(sampler.sample, env_steps=1)     # utd critic updates, an actor update every 2nd
    agent.residual(obs, base_action)              # the correction to add, physical units
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping

import numpy as np
import torch

from pld_robot.rl.actions import executed_normalized
from pld_robot.rl.buffers import OBS_FIELDS
from pld_robot.rl.config import ResidualSACConfig
from pld_robot.rl.networks import DoubleQCritic, polyak_update
from pld_robot.rl.policy import build_policy
from pld_robot.robots.action_spec import ActionSpec

# (agent, features, next_features, batch) -> (extra critic loss, metrics); Cal-QL's regularizer is one
CriticPenalty = Callable[["ResidualSAC", torch.Tensor, torch.Tensor, dict], tuple[torch.Tensor, dict]]


def td_target(reward: torch.Tensor, discount: torch.Tensor, next_q: torch.Tensor, next_log_prob: torch.Tensor,
              temperature: torch.Tensor | float) -> torch.Tensor:
    """Soft clipped double-Q target: r + discount (min(Q1', Q2') - alpha log pi'). next_q: (B, 2).
    `reward` and `discount` are the transition's n-step sum and gamma^n (0 past a terminal step)."""
    return reward + discount * (next_q.min(dim=-1).values - temperature * next_log_prob)


class ResidualSAC:
    def __init__(self, config: ResidualSACConfig, action_spec: ActionSpec, state_dim: int,
                 device: str | torch.device = "cpu"):
        self.config, self.action_spec, self.state_dim = config, action_spec, state_dim
        self.device = torch.device(device)
        a = action_spec.dim
        with torch.random.fork_rng(devices=[]):  # reproducible initialisation, the caller's RNG untouched
            torch.manual_seed(config.seed)
            self.policy = build_policy(config.encoder, config.networks, action_spec, state_dim,
                                       config.residual_scale.at(0), config.residual_scale.dims).to(self.device)
            self.critic = DoubleQCritic(self.policy.encoder.out_dim, a, config.networks).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_temperature = torch.tensor(math.log(config.sac.initial_temperature), device=self.device,
                                            requires_grad=True)
        moved = float(self.policy.actor.active.sum())  # -|A| over the dimensions the residual may move
        self.target_entropy = -moved if config.sac.target_entropy is None else config.sac.target_entropy
        lr = config.sac.lr
        trainable_encoder = [p for p in self.policy.encoder.parameters() if p.requires_grad]
        self.critic_optimizer = torch.optim.Adam([*self.critic.parameters(), *trainable_encoder], lr=lr)
        self.actor_optimizer = torch.optim.Adam(self.policy.actor.parameters(), lr=lr)
        self.temperature_optimizer = torch.optim.Adam([self.log_temperature], lr=lr)
        self.env_steps = 0
        self.critic_updates = 0
        self.actor_updates = 0

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def residual(self, obs: Mapping[str, np.ndarray], base_action: np.ndarray,
                 deterministic: bool = False) -> np.ndarray:
        return self.policy.residual(obs, base_action, deterministic)

    def update(self, sample: Callable[[], dict], env_steps: int = 1) -> dict[str, float]:
        """Account for `env_steps` new environment steps (they advance the xi schedule) and run
        utd x env_steps critic updates, each on a fresh batch from `sample`, and the actor updates due."""
        self.env_steps += env_steps
        self.policy.scale = self.config.residual_scale.at(self.env_steps)
        metrics: dict[str, float] = {}
        for _ in range(self.config.sac.utd * env_steps):
            metrics.update(self.update_on(self.to_tensors(sample())))
        return metrics

    def update_on(self, batch: dict, critic_penalty: CriticPenalty | None = None) -> dict[str, float]:
        """One critic update on `batch` (tensors), then an actor and temperature update if one is due
        (every critic_actor_ratio-th critic update)."""
        features = self.policy.encoder(batch["obs"], augment_images=True)
        with torch.no_grad():
            next_features = self.policy.encoder(batch["next_obs"], augment_images=True)
        loss, metrics = self.critic_loss(features, next_features, batch)
        if critic_penalty is not None:
            penalty, penalty_metrics = critic_penalty(self, features, next_features, batch)
            loss = loss + penalty
            metrics.update(penalty_metrics)
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimizer.step()
        polyak_update(self.critic_target, self.critic, self.config.sac.tau)
        self.critic_updates += 1
        if self.critic_updates % self.config.sac.critic_actor_ratio == 0:
            metrics.update(self.actor_update(features.detach(), batch))
        return metrics

    def critic_loss(self, features: torch.Tensor, next_features: torch.Tensor,
                    batch: dict) -> tuple[torch.Tensor, dict]:
        scaling = self.policy.scaling
        with torch.no_grad():
            next_base = scaling.normalize(batch["next_base_action"])
            next_scaled, next_log_prob = self.policy.scaled_delta(next_features, next_base)
            next_q = self.critic_target(next_features, executed_normalized(next_base, next_scaled))
            temperature = self.temperature if self.config.sac.backup_entropy else 0.0
            target = td_target(batch["reward"], batch["discount"], next_q, next_log_prob, temperature)
        q = self.critic(features, scaling.normalize(batch["action"]))
        loss = ((q - target[:, None]) ** 2).mean(dim=0).sum()  # both critics regress to the one target
        return loss, {"critic_loss": loss.item(), "q": q.mean().item(), "td_target": target.mean().item()}

    def actor_update(self, features: torch.Tensor, batch: dict) -> dict[str, float]:
        base = self.policy.scaling.normalize(batch["base_action"])
        scaled, log_prob = self.policy.scaled_delta(features, base)
        q = self.critic(features, executed_normalized(base, scaled)).min(dim=-1).values
        actor_loss = (self.temperature.detach() * log_prob - q).mean()
        if self.config.sac.residual_l2:
            actor_loss = actor_loss + self.config.sac.residual_l2 * (scaled / self.policy.scale).pow(2).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        # raise the temperature while the entropy is below its target, lower it while above
        temperature_loss = -(self.log_temperature * (log_prob.detach() + self.target_entropy)).mean()
        self.temperature_optimizer.zero_grad(set_to_none=True)
        temperature_loss.backward()
        self.temperature_optimizer.step()
        self.actor_updates += 1
        return {"actor_loss": actor_loss.item(), "entropy": -log_prob.mean().item(),
                "temperature": self.temperature.item()}

    def to_tensors(self, batch: dict) -> dict:
        """A sampled batch (numpy, see buffers.py) on this agent's device; images stay uint8."""
        return {f: ({k: torch.as_tensor(v, device=self.device) for k, v in value.items()} if f in OBS_FIELDS
                    else torch.as_tensor(value, device=self.device)) for f, value in batch.items()}
