"""The in-process sim RL loop (rl/sim_loop.py): what it records, what it learns from, what it counts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pld_robot.data.layout import Source
from pld_robot.rl.config import ResidualSACConfig
from pld_robot.rl.sac import ResidualSAC
from pld_robot.rl.sim_loop import SimRLConfig, from_scratch, run_episode, train_in_sim
from pld_robot.sim.fast_env import FastEnvConfig, ImperfectExpert, PickCubeEnv


def tiny_config(warmup: int = 3, pretrain: int = 4) -> ResidualSACConfig:
    c = ResidualSACConfig()
    return dataclasses.replace(
        c, encoder=dataclasses.replace(c.encoder, image_encoder="none"),
        networks=dataclasses.replace(c.networks, hidden=(32, 32)),
        sac=dataclasses.replace(c.sac, batch_size=16, utd=1),
        calql=dataclasses.replace(c.calql, pretrain_updates=pretrain, sampled_actions=2),
        replay=dataclasses.replace(c.replay, warmup_episodes=warmup))


@pytest.fixture(scope="module")
def env():
    env = PickCubeEnv(FastEnvConfig(max_steps=60))
    yield env
    env.close()


def test_an_episode_records_what_was_commanded_within_the_residual_bound(env):
    agent = ResidualSAC(tiny_config(), env.action_spec, 15)
    episode = run_episode(env, 3, ImperfectExpert(seed=0), agent.policy, ())
    steps = episode.steps
    low, high = np.array(env.action_spec.low), np.array(env.action_spec.high)
    assert steps["state"].shape == (episode.length, 15)  # TCP pose, gripper, and the cube's pose
    np.testing.assert_allclose(steps["action"], np.clip(steps["base_action"] + steps["residual_action"], low, high),
                               atol=1e-6)
    assert np.all(np.abs(steps["residual_action"]) <= agent.policy.scale * (high - low) / 2 + 1e-6)
    assert set(steps["source"].tolist()) == {Source.RESIDUAL}
    assert np.abs(steps["residual_action"]).max() > 0  # a fresh actor's noise acts
    base_only = run_episode(env, 3, ImperfectExpert(seed=0), None, ())
    assert set(base_only.steps["source"].tolist()) == {Source.PROBE}
    np.testing.assert_array_equal(base_only.steps["residual_action"], 0)


def test_the_budget_counts_warm_up_and_pre_training_uses_only_successes(env):
    config = SimRLConfig(env_steps=400, eval_every=10_000, eval_episodes=2, final_eval_episodes=2)
    result = train_in_sim(env, config, tiny_config(warmup=3), lambda s: ImperfectExpert(seed=s))
    warmup, last = result.curve[0], result.curve[-1]
    assert warmup["phase"] == "warmup" and warmup["episodes"] == 3
    assert 400 <= last["env_steps"] < 400 + env.config.max_steps  # stops at the first episode past the budget
    assert result.agent.env_steps == last["env_steps"]
    # utd 1: one critic update per env step after warm-up, plus Cal-QL's pre-training updates when the
    # warm-up had a success to pre-train on
    online_steps = last["env_steps"] - warmup["env_steps"]
    assert result.agent.critic_updates == online_steps + (4 if warmup["offline_episodes"] else 0)


def test_from_scratch_acts_over_the_whole_box_with_no_offline_half():
    c = from_scratch(ResidualSACConfig())
    assert c.residual_scale.at(0) == 1.0 and c.residual_scale.at(10**6) == 1.0
    assert c.replay.offline_fraction == 0.0
