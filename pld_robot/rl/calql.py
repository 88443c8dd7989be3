"""Cal-QL critic pre-training (Nakamoto et al. 2023) on successful base rollouts, before online RL.

CQL adds to the TD loss a regularizer that pushes Q down on actions the data did not take (uniform
random ones and the policy's) and up on the data's. Cal-QL calibrates it: the Q-values of policy
actions are lower-bounded by the Monte-Carlo return of the data, max(Q(s, a_pi), V_mc(s)), so the
critic is never pushed below what the base policy is known to achieve and online fine-tuning does
not start by unlearning an over-pessimistic Q.

As in Cal-QL's reference code: importance-sampled logsumexp over `sampled_actions` uniform actions
(over the whole action box), policy actions at s and policy actions at s' (each evaluated at s), both
policy sources bounded; the actor and temperature train alongside, as in Cal-QL.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from pld_robot.rl.actions import executed_normalized
from pld_robot.rl.config import CalQLConfig

if TYPE_CHECKING:
    from pld_robot.rl.sac import ResidualSAC


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """Return-to-go of every step of one episode, sum_k gamma^k r_{t+k}. For PLD's sparse reward (1 on
    the successful last step) that is gamma^(T-1-t), and 0 throughout a failed episode."""
    returns = np.zeros(len(rewards), dtype=np.float32)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = float(rewards[t]) + gamma * running
        returns[t] = running
    return returns


def calql_regularizer(q_data: torch.Tensor, q_random: torch.Tensor, log_density_random: float,
                      q_policy: torch.Tensor, log_prob_policy: torch.Tensor, mc_return: torch.Tensor,
                      temperature: float = 1.0) -> torch.Tensor:
    """The calibrated conservative term, summed over the critics and averaged over the batch.

    q_data (B, K): Q of the data's actions; q_random (B, N, K): Q of uniform actions, whose log density
    is `log_density_random`; q_policy (B, M, K): Q of policy actions with log-probabilities
    log_prob_policy (B, M); mc_return (B,): the data's return-to-go, the lower bound on q_policy.
    """
    bounded = torch.maximum(q_policy, mc_return[:, None, None])
    candidates = torch.cat([q_random - log_density_random, bounded - log_prob_policy[..., None]], dim=1)
    pushed_down = temperature * torch.logsumexp(candidates / temperature, dim=1)
    return (pushed_down - q_data).mean(dim=0).sum()


def calql_penalty(config: CalQLConfig) -> Callable:
    """The regularizer as a `sac.CriticPenalty`, for `ResidualSAC.update_on`."""

    def penalty(agent: ResidualSAC, features: torch.Tensor, next_features: torch.Tensor,
                batch: dict) -> tuple[torch.Tensor, dict]:
        n, scaling = config.sampled_actions, agent.policy.scaling
        b, a = features.shape[0], scaling.dim
        repeated = features[:, None].expand(-1, n, -1)
        policy_actions, log_probs = [], []
        with torch.no_grad():  # the regularizer trains the critic, not the actor
            for feats, base_key in ((features, "base_action"), (next_features, "next_base_action")):
                base = scaling.normalize(batch[base_key])[:, None].expand(-1, n, -1)
                scaled, log_prob = agent.policy.scaled_delta(feats.detach()[:, None].expand(-1, n, -1), base)
                policy_actions.append(executed_normalized(base, scaled))
                log_probs.append(log_prob)
        random_actions = torch.rand(b, n, a, device=features.device) * 2 - 1
        q_data = agent.critic(features, scaling.normalize(batch["action"]))
        q_random = agent.critic(repeated, random_actions)
        q_policy = agent.critic(features[:, None].expand(-1, 2 * n, -1), torch.cat(policy_actions, dim=1))
        regularizer = calql_regularizer(q_data, q_random, -a * math.log(2.0), q_policy, torch.cat(log_probs, dim=1),
                                        batch["mc_return"], config.temperature)
        bound_rate = (q_policy < batch["mc_return"][:, None, None]).float().mean()
        return config.weight * regularizer, {"calql_regularizer": regularizer.item(),
                                             "calql_bound_rate": bound_rate.item()}

    return penalty


def pretrain_critic(agent: ResidualSAC, sample: Callable[[], dict], config: CalQLConfig,
                    updates: int | None = None) -> dict[str, float]:
    """`updates` (default config.pretrain_updates) Cal-QL updates on batches from `sample` (offline data)."""
    penalty = calql_penalty(config)
    metrics: dict[str, float] = {}
    for _ in range(config.pretrain_updates if updates is None else updates):
        metrics.update(agent.update_on(agent.to_tensors(sample()), critic_penalty=penalty))
    return metrics
