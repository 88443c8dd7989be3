"""pld_robot.rl: the residual SAC library (bounds, schedule, replay, routing, Cal-QL, SAC, checkpoints)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from pld_robot.config import ConfigError, from_dict
from pld_robot.data.layout import EpisodeInfo, Source
from pld_robot.reward.augment import random_shift
from pld_robot.rl.buffers import MixedSampler, ReplayBuffer
from pld_robot.rl.calql import calql_regularizer, discounted_returns, pretrain_critic
from pld_robot.rl.checkpoint import (
    RLCheckpointError,
    export_actor,
    latest_actor_version,
    load_agent,
    load_latest_actor,
    save_agent,
)
from pld_robot.rl.config import (
    EncoderConfig,
    NetworkConfig,
    ReplayConfig,
    ResidualSACConfig,
    ResidualScaleConfig,
    SACConfig,
    load_rl_config,
)
from pld_robot.rl.episodes import episode_transitions, route_episode
from pld_robot.rl.sac import ResidualSAC, td_target
from pld_robot.robots.action_spec import ActionSpec

ROOT = Path(__file__).resolve().parents[1]
STATE_ONLY = EncoderConfig(image_encoder="none", cameras=())
UNIT_SPEC = ActionSpec(names=("x", "y"), low=(-1.0, -1.0), high=(1.0, 1.0))

torch.set_num_threads(1)


def make_agent(spec: ActionSpec = UNIT_SPEC, state_dim: int = 3, encoder: EncoderConfig = STATE_ONLY,
               hidden: tuple[int, ...] = (64, 64, 64), **sac) -> ResidualSAC:
    config = ResidualSACConfig(encoder=encoder, networks=NetworkConfig(hidden=hidden), sac=SACConfig(**sac))
    return ResidualSAC(config, spec, state_dim)


def transitions(n: int, state_dim: int = 3, action_dim: int = 2, reward: float = 0.0, seed: int = 0,
                images: dict[str, tuple[int, int]] | None = None, discount: float = 0.99) -> dict:
    rng = np.random.default_rng(seed)

    def obs():
        out = {"state": rng.normal(size=(n, state_dim)).astype(np.float32)}
        for key, (h, w) in (images or {}).items():
            out[key] = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
        return out

    def actions():
        return rng.uniform(-1, 1, (n, action_dim)).astype(np.float32)

    return {"obs": obs(), "next_obs": obs(), "base_action": actions(), "residual_action": actions(),
            "action": actions(), "reward": np.full(n, reward, np.float32), "discount": np.full(n, discount, np.float32),
            "next_base_action": actions(), "mc_return": np.zeros(n, np.float32)}


# -- config -----------------------------------------------------------------------------------

def test_yaml_equals_the_dataclass_defaults():
    assert load_rl_config(ROOT / "config" / "rl" / "residual_sac.yaml") == ResidualSACConfig()


def test_paper_numbers_are_the_defaults():
    c = ResidualSACConfig()
    assert (c.sac.batch_size, c.sac.lr, c.sac.gamma, c.sac.tau, c.sac.critic_actor_ratio) == (256, 3e-4, 0.99, 0.005, 2)
    assert (c.sac.initial_temperature, c.sac.target_entropy, c.networks.hidden) == (1.0, None, (256, 256, 256))
    assert (c.replay.capacity, c.replay.offline_fraction, c.replay.warmup_episodes) == (250_000, 0.5, 100)
    assert c.residual_scale.at(0) == 0.5


def test_a_bad_value_names_its_field():
    with pytest.raises(ConfigError, match=r"sac.*batch_size"):
        from_dict(ResidualSACConfig, {"sac": {"batch_size": 0}}, where="rl")
    with pytest.raises(ConfigError, match="image_encoder"):
        from_dict(ResidualSACConfig, {"encoder": {"image_encoder": "resnet"}}, where="rl")


# -- the residual's bounds and scale ----------------------------------------------------------

@pytest.mark.parametrize("spec", [UNIT_SPEC, ActionSpec()], ids=["unit", "franka"])
def test_residual_and_executed_action_stay_within_bounds(spec):
    agent = make_agent(spec, state_dim=4)
    with torch.no_grad():  # a saturated actor: its means far outside [-1, 1] before the tanh
        agent.policy.actor.net[-1].weight.mul_(1e6)
    rng = np.random.default_rng(0)
    half = (np.array(spec.high) - np.array(spec.low)) / 2
    xi = agent.policy.scale
    for magnitude in (1.0, 1e3, 1e6):
        obs = {"state": (rng.normal(size=(64, 4)) * magnitude).astype(np.float32)}
        base = (rng.normal(size=(64, spec.dim)) * magnitude).astype(np.float32)
        for deterministic in (False, True):
            residual = agent.residual(obs, base, deterministic)
            assert np.isfinite(residual).all()
            assert (np.abs(residual) <= xi * half + 1e-6).all()
            executed = agent.policy.act(obs, base, deterministic)
            assert ((executed >= np.array(spec.low) - 1e-6) & (executed <= np.array(spec.high) + 1e-6)).all()
    one = agent.residual({"state": np.zeros(4, np.float32)}, np.zeros(spec.dim, np.float32))
    assert one.shape == (spec.dim,)


def test_residual_dims_leave_the_other_actions_to_the_base_and_out_of_the_entropy(tmp_path):
    spec = ActionSpec(names=("dx", "dyaw", "gripper"), low=(-1.0, -1.0, 0.0), high=(1.0, 1.0, 1.0))
    config = ResidualSACConfig(encoder=STATE_ONLY, networks=NetworkConfig((16,)),
                               residual_scale=ResidualScaleConfig(dims=("dx", "gripper")))
    agent = ResidualSAC(config, spec, 3)
    with torch.no_grad():  # an actor that wants to move every dimension, yaw included
        agent.policy.actor.net[-1].bias.fill_(0.5)
    obs, base = {"state": np.zeros((32, 3), np.float32)}, np.full((32, 3), 0.5, np.float32)
    for deterministic in (True, False):
        residual = agent.residual(obs, base, deterministic)
        assert (residual[:, 1] == 0).all() and np.abs(residual[:, [0, 2]]).mean() > 0.1
    assert agent.target_entropy == -2.0  # -|A| over the two dimensions it moves
    # the yaw's (ignored) spread does not count: its log std changes nothing in the log-probability
    features = agent.policy.encoder({"state": torch.zeros(4, 3)})
    _, before = agent.policy.actor(features, torch.zeros(4, 3), deterministic=True)
    with torch.no_grad():
        agent.policy.actor.net[-1].bias[3 + 1] += 3.0  # yaw's raw log std
    _, after = agent.policy.actor(features, torch.zeros(4, 3), deterministic=True)
    torch.testing.assert_close(before, after)
    # the exported actor keeps its dimensions
    export_actor(agent, tmp_path)
    loaded = load_latest_actor(tmp_path).policy
    assert (loaded.residual(obs, base, deterministic=True)[:, 1] == 0).all()
    with pytest.raises(ValueError, match=r"\['droll'\], which are not actions of this robot"):
        ResidualSAC(dataclasses.replace(config, residual_scale=ResidualScaleConfig(dims=("dx", "droll"))), spec, 3)
    with pytest.raises(ValueError, match="dims repeat"):
        ResidualScaleConfig(dims=("dx", "dx"))


def test_residual_scale_schedule():
    ramp = ResidualScaleConfig(start=0.1, end=0.5, ramp_steps=100)
    assert [ramp.at(s) for s in (0, 50, 100, 1000)] == pytest.approx([0.1, 0.3, 0.5, 0.5])
    assert ResidualScaleConfig(start=0.1, end=0.3, ramp_steps=0).at(0) == 0.3
    agent = ResidualSAC(ResidualSACConfig(encoder=STATE_ONLY, residual_scale=ramp, networks=NetworkConfig((16,)),
                                          sac=SACConfig(batch_size=8, utd=1)), UNIT_SPEC, 3)
    assert agent.policy.scale == pytest.approx(0.1)
    batch = transitions(8)
    agent.update(lambda: batch, env_steps=50)
    assert agent.policy.scale == pytest.approx(0.3)


# -- replay -----------------------------------------------------------------------------------

def test_ring_buffer_overwrites_the_oldest():
    buffer = ReplayBuffer(5, "online")
    for i in range(7):
        buffer.add(transitions(1, reward=float(i)))
    assert len(buffer) == 5
    assert sorted(buffer.gather(np.arange(5))["reward"]) == [2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="state"):
        buffer.add(transitions(1, state_dim=4))
    with pytest.raises(ValueError, match="mc_return"):
        buffer.add({k: v for k, v in transitions(1).items() if k != "mc_return"})
    with pytest.raises(ValueError, match="lower replay.capacity"):  # at the first add, not when memory runs out
        ReplayBuffer(10**12, "online").add(transitions(1))


def test_symmetric_sampling_is_exact_per_batch():
    offline, online, intervention = ReplayBuffer(100, "offline"), ReplayBuffer(100, "online"), ReplayBuffer(100, "int")
    offline.add(transitions(30, reward=0.0))
    online.add(transitions(7, reward=1.0))
    sampler = MixedSampler(offline, online, intervention, 256, ReplayConfig(intervention_fraction=0.25))
    for _ in range(5):  # no human steps yet: their share goes to the online buffer
        rewards = sampler.sample()["reward"]
        assert len(rewards) == 256 and (rewards == 0).sum() == 128 and (rewards == 1).sum() == 128
    intervention.add(transitions(3, reward=2.0))
    for _ in range(5):
        rewards = sampler.sample()["reward"]
        assert [(rewards == r).sum() for r in (0, 1, 2)] == [128, 64, 64]
    with pytest.raises(ValueError, match="online buffer is empty"):
        MixedSampler(offline, ReplayBuffer(10, "online"), None, 256, ReplayConfig()).sample()


def episode(length: int, sources: list[int]) -> dict:
    t = np.arange(length, dtype=np.float32)
    return {"state": np.stack([t, -t], axis=1), "base_action": np.stack([t, t], axis=1) / 100,
            "residual_action": np.full((length, 2), 0.01, np.float32),
            "action": np.stack([t, t], axis=1) / 100 + 0.5, "source": np.array(sources, np.uint8)}


def test_routing_skips_the_probe_prefix_and_sends_human_steps_to_interventions():
    sources = [Source.PROBE] * 3 + [Source.RESIDUAL] * 2 + [Source.HUMAN] * 2 + [Source.RESIDUAL] * 3
    steps = episode(10, sources)
    steps["action"][5:7] = [[0.9, -0.9], [0.8, -0.8]]  # the person's executed actions
    info = EpisodeInfo(outcome="success", mode="hybrid", extra={"probe_steps": 3})
    online, intervention = ReplayBuffer(100, "online"), ReplayBuffer(100, "intervention")
    counts = route_episode(steps, info, ["state"], online, intervention, SACConfig(gamma=0.9, n_step=1))
    assert counts == {"online": 5, "intervention": 2, "probe": 3}
    on = online.gather(np.arange(len(online)))
    assert sorted(on["obs"]["state"][:, 0]) == [3, 4, 7, 8, 9]
    human = intervention.gather(np.arange(2))
    np.testing.assert_allclose(human["action"], [[0.9, -0.9], [0.8, -0.8]])
    np.testing.assert_allclose(human["next_obs"]["state"][:, 0], [6, 7])
    np.testing.assert_allclose(human["next_base_action"][:, 0], [0.06, 0.07])
    last = on["obs"]["state"][:, 0] == 9  # the successful last step: reward 1, terminal
    assert on["reward"][last] == 1 and on["discount"][last] == 0 and on["reward"][~last].sum() == 0
    np.testing.assert_allclose(on["mc_return"], 0.9 ** (9 - on["obs"]["state"][:, 0]), rtol=1e-6)


def test_a_base_episode_goes_to_the_online_buffer_whole():
    online, intervention = ReplayBuffer(100, "online"), ReplayBuffer(100, "intervention")
    counts = route_episode(episode(4, [Source.PROBE] * 4), EpisodeInfo(outcome="success", mode="base"), ["state"],
                           online, intervention, SACConfig())
    assert counts == {"online": 4, "intervention": 0, "probe": 0} and len(intervention) == 0


def test_an_unsuccessful_episode_drops_its_last_step_instead_of_bootstrapping_it():
    steps = episode(6, [Source.RESIDUAL] * 6)
    data, source = episode_transitions(steps, EpisodeInfo(outcome="timeout"), ["state"], SACConfig(n_step=1))
    assert len(source) == 5 and (data["discount"] > 0).all() and data["reward"].sum() == 0
    np.testing.assert_allclose(data["next_obs"]["state"][:, 0], [1, 2, 3, 4, 5])


def test_n_step_transitions_sum_the_reward_and_bootstrap_n_steps_ahead():
    sac = SACConfig(gamma=0.9, n_step=3)
    won, _ = episode_transitions(episode(10, [Source.RESIDUAL] * 10), EpisodeInfo(outcome="success"), ["state"], sac)
    # steps 7-9 see the success within 3 steps: the discounted reward, and no bootstrap
    np.testing.assert_allclose(won["reward"], [0] * 7 + [0.81, 0.9, 1.0], rtol=1e-6)
    np.testing.assert_allclose(won["discount"], [0.729] * 7 + [0, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(won["next_obs"]["state"][:7, 0], np.arange(3, 10))
    np.testing.assert_allclose(won["next_base_action"][:7, 0], np.arange(3, 10) / 100)
    # a timeout is not terminal: bootstrap from the last recorded observation, over the steps spanned
    lost, _ = episode_transitions(episode(6, [Source.RESIDUAL] * 6), EpisodeInfo(outcome="timeout"), ["state"], sac)
    np.testing.assert_allclose(lost["next_obs"]["state"][:, 0], [3, 4, 5, 5, 5])
    np.testing.assert_allclose(lost["discount"], 0.9 ** np.array([3, 3, 3, 2, 1]), rtol=1e-6)
    assert lost["reward"].sum() == 0


# -- Cal-QL -----------------------------------------------------------------------------------

def test_discounted_returns_of_a_sparse_episode():
    np.testing.assert_allclose(discounted_returns(np.array([0, 0, 1.0]), 0.9), [0.81, 0.9, 1.0])
    np.testing.assert_allclose(discounted_returns(np.zeros(4), 0.9), 0)


def test_calql_bounds_policy_q_values_by_the_monte_carlo_return():
    b, n, m = 4, 3, 5
    q_data = torch.zeros(b, 2)
    q_random = torch.full((b, n, 2), -50.0)  # negligible in the logsumexp
    q_policy = torch.full((b, m, 2), -10.0)  # below the MC return
    log_prob = torch.zeros(b, m)
    mc_return = torch.full((b,), 5.0)
    got = calql_regularizer(q_data, q_random, 0.0, q_policy, log_prob, mc_return)
    as_if_q_were_the_bound = calql_regularizer(q_data, q_random, 0.0, torch.full_like(q_policy, 5.0), log_prob,
                                               mc_return)
    assert got.item() == pytest.approx(as_if_q_were_the_bound.item())
    assert got.item() == pytest.approx(2 * (5.0 + np.log(m)), rel=1e-4)  # summed over the 2 critics
    unbounded = calql_regularizer(q_data, q_random, 0.0, q_policy, log_prob, torch.full((b,), -100.0))
    assert unbounded.item() == pytest.approx(2 * (-10.0 + np.log(m)), rel=1e-4)
    above = torch.full((b, m, 2), 8.0)  # above the bound: left as it is
    assert calql_regularizer(q_data, q_random, 0.0, above, log_prob, mc_return).item() == \
        pytest.approx(2 * (8.0 + np.log(m)), rel=1e-4)


def test_calql_pretraining_runs_and_is_lower_bounded():
    agent = make_agent(batch_size=32)
    data = transitions(32, reward=1.0)
    data["mc_return"][:] = 1.0
    metrics = pretrain_critic(agent, lambda: data, agent.config.calql, updates=4)
    assert {"calql_regularizer", "calql_bound_rate", "critic_loss", "actor_loss"} <= set(metrics)
    assert agent.critic_updates == 4 and agent.actor_updates == 2


# -- SAC --------------------------------------------------------------------------------------

def test_td_target_uses_the_smaller_q():
    next_q = torch.tensor([[1.0, 3.0], [5.0, 2.0]])
    target = td_target(torch.tensor([0.5, 0.0]), torch.tensor([0.9, 0.0]), next_q, torch.tensor([-1.0, -1.0]),
                       temperature=0.1)
    assert target.tolist() == pytest.approx([0.5 + 0.9 * (1.0 + 0.1), 0.0])


@pytest.mark.parametrize("backup", [False, True])
def test_the_entropy_bonus_enters_the_td_target_only_when_backed_up(backup):
    agent = make_agent(batch_size=16, backup_entropy=backup, initial_temperature=5.0)
    # the next action: zero delta with log-probability 3 everywhere, so the bonus is known exactly
    agent.policy.scaled_delta = lambda features, base, deterministic=False: (
        torch.zeros_like(base), torch.full(base.shape[:-1], 3.0))
    batch = agent.to_tensors(transitions(16, reward=1.0, discount=0.9))
    features, next_features = agent.policy.encoder(batch["obs"]), agent.policy.encoder(batch["next_obs"])
    _, metrics = agent.critic_loss(features, next_features, batch)
    with torch.no_grad():
        next_base = agent.policy.scaling.normalize(batch["next_base_action"])
        next_q = agent.critic_target(next_features, next_base).min(dim=-1).values.mean().item()
    bonus = -0.9 * 5.0 * 3.0 if backup else 0.0
    assert metrics["td_target"] == pytest.approx(1.0 + 0.9 * next_q + bonus, abs=1e-4)


def test_residual_l2_holds_the_residual_near_zero_against_a_critic_that_wants_more():
    """A critic whose Q grows with the first action dimension pulls the actor to its bound; the penalty
    stops it where the Q gain (xi per unit of delta) equals the penalty's slope."""
    state = {"state": np.random.default_rng(1).normal(size=(64, 3)).astype(np.float32)}
    results = {}
    for l2 in (0.0, 10.0):
        agent = make_agent(batch_size=32, residual_l2=l2, initial_temperature=1e-4, lr=1e-2)
        agent.critic.forward = lambda features, action: action[..., :1].expand(*action.shape[:-1], 2)
        batch = agent.to_tensors(transitions(32))
        for _ in range(100):
            agent.actor_update(agent.policy.encoder(batch["obs"]).detach(), batch)
        results[l2] = float(agent.policy.residual(state, np.zeros((64, 2)), deterministic=True)[:, 0].mean())
    # without the penalty: most of the way to xi (0.5); with it: the optimum 0.5 * 0.05, near zero
    assert results[0.0] > 0.3 and abs(results[10.0]) < 0.1, results


def test_critic_actor_ratio_and_utd():
    agent = make_agent(batch_size=16, utd=3, critic_actor_ratio=2)
    data = transitions(16)
    agent.update(lambda: data, env_steps=2)
    assert (agent.env_steps, agent.critic_updates, agent.actor_updates) == (2, 6, 3)


@pytest.mark.parametrize("target_entropy, direction", [(50.0, 1), (-50.0, -1)], ids=["raise", "lower"])
def test_temperature_moves_toward_the_target_entropy(target_entropy, direction):
    agent = make_agent(batch_size=32, critic_actor_ratio=1, utd=1, target_entropy=target_entropy)
    data = transitions(32)
    before = agent.temperature.item()
    agent.update(lambda: data, env_steps=20)
    assert (agent.temperature.item() - before) * direction > 0


def test_sac_learns_to_correct_a_biased_base_action():
    """A one-step task whose reward peaks at a* while the base action is 0: the residual must learn the
    correction from experience, starting from offline base-only data (PLD's setting)."""
    target = np.array([0.3, -0.2], np.float32)
    # a low initial temperature: with rewards this small, alpha 1.0 would take thousands of updates to fall
    agent = make_agent(batch_size=128, hidden=(256, 256, 256), initial_temperature=0.05)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)  # exploration noise

    def step(executed: np.ndarray, base: np.ndarray, state: np.ndarray) -> dict:
        n = len(executed)
        return {"obs": {"state": state}, "next_obs": {"state": state}, "base_action": base,
                "residual_action": executed - base, "action": executed,
                "reward": -((executed - target) ** 2).sum(-1), "discount": np.zeros(n, np.float32),
                "next_base_action": base, "mc_return": -((executed - target) ** 2).sum(-1)}

    offline, online = ReplayBuffer(1000, "offline"), ReplayBuffer(1000, "online")
    zeros = np.zeros((200, 2), np.float32)
    offline.add(step(zeros, zeros, rng.normal(size=(200, 3)).astype(np.float32)))
    sampler = MixedSampler(offline, online, None, 128, ReplayConfig())

    def distance() -> float:  # mean distance of the executed action from a*, over states
        obs = {"state": rng.normal(size=(64, 3)).astype(np.float32)}
        executed = agent.policy.act(obs, np.zeros((64, 2), np.float32), deterministic=True)
        return float(np.linalg.norm(executed - target, axis=1).mean())

    before = distance()
    for _ in range(200):
        state = rng.normal(size=(1, 3)).astype(np.float32)
        base = np.zeros((1, 2), np.float32)
        online.add(step(agent.policy.act({"state": state}, base), base, state))
        agent.update(sampler.sample)
    after = distance()
    assert before == pytest.approx(np.linalg.norm(target), abs=0.02)  # a fresh residual leaves the base alone
    assert after < 0.3 * before, (before, after)


def test_cnn_encoder_trains_on_images():
    encoder = EncoderConfig(image_encoder="cnn", cameras=("front",), image_size=32, channels=(8, 8))
    agent = make_agent(encoder=encoder, batch_size=8, critic_actor_ratio=1, utd=1)
    data = transitions(8, images={"front_rgb": (40, 48)})
    before = agent.policy.encoder.trunk[0].weight.clone()
    metrics = agent.update(lambda: data)
    assert np.isfinite(metrics["critic_loss"]) and not torch.equal(before, agent.policy.encoder.trunk[0].weight)
    residual = agent.residual({k: v[0] for k, v in data["obs"].items()}, data["base_action"][0])
    assert residual.shape == (2,)


def test_a_frozen_pretrained_tower_is_neither_trained_nor_exported(tmp_path):
    from safetensors.torch import load_file
    from transformers import SiglipVisionConfig, SiglipVisionModel

    SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, image_size=32, patch_size=8)
                      ).save_pretrained(tmp_path / "siglip")
    encoder = EncoderConfig(image_encoder="pretrained", cameras=("front",), image_size=32,
                            pretrained_path=str(tmp_path / "siglip"))
    agent = make_agent(encoder=encoder, batch_size=8, critic_actor_ratio=1, utd=1)
    tower = agent.policy.encoder.backbone.tower
    before = [p.clone() for p in tower.parameters()]
    data = transitions(8, images={"front_rgb": (32, 32)})
    agent.update(lambda: data)
    assert all(torch.equal(a, b) for a, b in zip(before, tower.parameters()))
    export_actor(agent, tmp_path / "actors")
    loaded = load_latest_actor(tmp_path / "actors")
    assert not any(".tower." in k for k in load_file(loaded.path)), "the tower loads from its own folder"
    np.testing.assert_allclose(loaded.policy.residual(data["obs"], data["base_action"], deterministic=True),
                               agent.residual(data["obs"], data["base_action"], deterministic=True), atol=1e-5)


def test_random_shift_is_a_crop_of_the_padded_image():
    images = torch.rand(6, 3, 16, 16)
    shifted = random_shift(images, 4)
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4), mode="replicate")
    for i in range(6):
        assert any(torch.equal(shifted[i], padded[i, :, dy:dy + 16, dx:dx + 16]) for dy in range(9) for dx in range(9))


# -- checkpoints ------------------------------------------------------------------------------

def test_agent_save_and_load_give_identical_outputs(tmp_path):
    agent = make_agent(batch_size=16)
    data = transitions(16)
    agent.update(lambda: data, env_steps=3)
    with pytest.raises(RLCheckpointError, match="cannot read a saved agent"):
        load_agent(tmp_path / "run")
    save_agent(agent, tmp_path / "run")
    loaded = load_agent(tmp_path / "run")
    assert (loaded.env_steps, loaded.critic_updates, loaded.actor_updates) == (3, 6, 3)
    assert loaded.temperature.item() == agent.temperature.item()
    obs, base = data["obs"], data["base_action"]
    np.testing.assert_array_equal(loaded.residual(obs, base, deterministic=True),
                                  agent.residual(obs, base, deterministic=True))
    features = agent.policy.encoder(agent.to_tensors(data)["obs"])
    action = torch.as_tensor(data["action"])
    for name in ("critic", "critic_target"):
        assert torch.equal(getattr(loaded, name)(features, action), getattr(agent, name)(features, action))
    torch.manual_seed(1)  # and training continues identically: optimizer states came along
    agent.update(lambda: data)
    torch.manual_seed(1)
    loaded.update(lambda: data)
    np.testing.assert_array_equal(loaded.residual(obs, base, deterministic=True),
                                  agent.residual(obs, base, deterministic=True))


def test_actor_export_is_versioned_atomic_and_hot_loadable(tmp_path):
    folder = tmp_path / "actors"
    assert load_latest_actor(folder) is None and latest_actor_version(folder) is None
    agent = make_agent()
    assert export_actor(agent, folder) == 1
    data = transitions(1)
    with torch.no_grad():
        agent.policy.actor.net[-1].bias.add_(0.3)  # the learner moves on
    assert export_actor(agent, folder) == 2
    (folder / ".actor-000003.safetensors.x.tmp").write_bytes(b"half a file")  # an export in progress
    loaded = load_latest_actor(folder)
    assert loaded.version == 2 and loaded.path.name == "actor-000002.safetensors"
    np.testing.assert_allclose(loaded.policy.residual(data["obs"], data["base_action"], deterministic=True),
                               agent.residual(data["obs"], data["base_action"], deterministic=True), atol=1e-6)
    assert loaded.policy.scale == agent.policy.scale
    assert load_latest_actor(folder, newer_than=2) is None
    for _ in range(6):
        export_actor(agent, folder, keep=3)
    assert sorted(p.name for p in folder.glob("actor-*")) == [f"actor-00000{v}.safetensors" for v in (6, 7, 8)]
    assert not [p for p in folder.iterdir() if p.name.startswith(".actor-") and "x.tmp" not in p.name]


def test_an_interrupted_export_leaves_no_actor_behind(tmp_path, monkeypatch):
    from pld_robot.rl import checkpoint

    def crash(weights, path, metadata):
        Path(path).write_bytes(b"the first half")
        raise KeyboardInterrupt

    folder = tmp_path / "actors"
    agent = make_agent()
    export_actor(agent, folder)
    monkeypatch.setattr(checkpoint, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        export_actor(agent, folder)
    assert [p.name for p in folder.iterdir()] == ["actor-000001.safetensors"]
    assert load_latest_actor(folder).version == 1
