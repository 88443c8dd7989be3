"""`pld-robot pld-sim`: the PLD loop in miniature in the fast sim.

Unit tests of what goes wrong silently (the chunk execution of the PI0 base, the probe prefix, the
steps a hybrid episode records, the config), then one end-to-end run of the command at tiny sizes
whose outcomes are checked on disk: the stores, the students and the result.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pld_robot.config import ConfigError
from pld_robot.data import EpisodeReader, Source
from pld_robot.pld_sim.config import PLDSimConfig, load_pld_sim_config, with_overrides
from pld_robot.pld_sim.episodes import probe_prefix, run_episode
from pld_robot.pld_sim.pi0_base import Pi0ChunkBase
from pld_robot.robots.action_spec import ActionSpec
from pld_robot.sim.fast_env import FastEnvConfig, ImperfectExpert, PickCubeEnv

ROOT = Path(__file__).resolve().parents[1]
SPEC = ActionSpec()


class CountingPolicy:
    """Stands in for Pi0Policy: chunk i holds actions 100 i + 0, 1, ... in every dimension (within the box
    after scaling by 1e-4), and records the state of each query."""

    def __init__(self, chunk_length: int = 8):
        self.spec = SimpleNamespace(chunk_length=chunk_length, action_names=SPEC.names)
        self.layout = SimpleNamespace(chunk_size=chunk_length, max_action_dim=8)
        self.states, self.noises = [], []

    def predict(self, obs):
        self.states.append(obs.state.copy())
        self.noises.append(obs.noise.copy())
        base = 100 * (len(self.states) - 1)
        return np.repeat((base + np.arange(self.spec.chunk_length, dtype=np.float32))[:, None] * 1e-4, SPEC.dim, 1)


def env_obs(x: float) -> dict:
    return {"state": np.full(8, x, np.float32), "cube": np.zeros(7, np.float32)}


def test_pi0_base_executes_each_chunk_open_loop_then_queries_again():
    policy = CountingPolicy(chunk_length=8)
    base = Pi0ChunkBase(policy, execute_steps=3, seed=0)
    base.reset()
    actions = [base.act(env_obs(t))[0] for t in range(7)]
    # steps 0-2 play chunk 0's first three actions, 3-5 chunk 1's, 6 starts chunk 2
    assert np.allclose(np.array(actions) / 1e-4, [0, 1, 2, 100, 101, 102, 200])
    assert [s[0] for s in policy.states] == [0.0, 3.0, 6.0]  # each query saw the observation of its step
    assert policy.states[0].shape == (15,)  # TCP pose and gripper, then the cube's pose
    base.reset()  # a new episode drops what is left of the chunk
    base.act(env_obs(9))
    assert base.queries == 4 and policy.states[-1][0] == 9.0


def test_pi0_base_noise_is_seeded_and_actions_clipped():
    a, b = CountingPolicy(), CountingPolicy()
    for policy in (a, b):
        base = Pi0ChunkBase(policy, execute_steps=8, seed=5)
        base.reset()
        base.act(env_obs(0))
    assert np.array_equal(a.noises[0], b.noises[0]) and a.noises[0].shape == (8, 8)
    big = CountingPolicy()
    big.predict = lambda obs: np.full((8, SPEC.dim), 10.0, np.float32)
    base = Pi0ChunkBase(big, execute_steps=2, seed=0)
    assert np.array_equal(base.act(env_obs(0)), np.asarray(SPEC.high, np.float32))


def test_pi0_base_rejects_chunks_it_cannot_execute():
    with pytest.raises(ValueError, match="execute_steps"):
        Pi0ChunkBase(CountingPolicy(chunk_length=4), execute_steps=5, seed=0)
    other = CountingPolicy()
    other.spec.action_names = ("a",) * SPEC.dim
    with pytest.raises(ValueError, match="actions"):
        Pi0ChunkBase(other, execute_steps=2, seed=0)


def test_probe_prefix_is_uniform_over_zero_to_alpha_t():
    rng = np.random.default_rng(0)
    prefixes = [probe_prefix(rng, 100, 0.6) for _ in range(3000)]
    assert min(prefixes) == 0 and max(prefixes) == 60  # both ends included, as U[0, alpha T]
    assert abs(np.mean(prefixes) - 30) < 1.5
    assert probe_prefix(rng, 100, 0.0) == 0


class ConstantResidual:
    def residual(self, obs, base_action, deterministic=False):
        assert deterministic and obs["state"].shape == (15,)
        return np.full(SPEC.dim, 0.001, np.float32)


def test_hybrid_episode_records_base_prefix_then_residual_steps():
    env = PickCubeEnv(FastEnvConfig(max_steps=12))
    episode = run_episode(env, 3, ImperfectExpert(seed=0), ConstantResidual(), prefix_steps=5)
    steps = episode.steps
    assert episode.length == 12 and not episode.success
    assert list(steps["source"]) == [Source.PROBE] * 5 + [Source.RESIDUAL] * 7
    assert np.all(steps["residual_action"][:5] == 0)
    # every corrected step carries the correction (where the base action is not at a bound already)
    assert np.all(np.any(np.abs(steps["residual_action"][5:]) > 5e-4, axis=1))
    assert np.allclose(steps["action"], np.clip(steps["base_action"] + steps["residual_action"], SPEC.low, SPEC.high))
    assert steps["state"].shape == (12, 15) and steps["blank_rgb"].shape == (12, 32, 32, 3)
    base_only = run_episode(env, 3, ImperfectExpert(seed=0))
    assert np.all(base_only.steps["source"] == Source.PROBE) and np.all(base_only.steps["residual_action"] == 0)
    assert np.allclose(base_only.steps["action"][:5], steps["action"][:5])  # same seeds: same prefix


def test_shipped_config_equals_the_defaults():
    assert load_pld_sim_config(ROOT / "config/pld_sim/pick_cube.yaml") == PLDSimConfig()


def test_config_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(ConfigError, match="no such field"):
        with_overrides(PLDSimConfig(), {"rollouts.n": 3})
    with pytest.raises(ConfigError, match="execute_steps"):
        with_overrides(PLDSimConfig(), {"generalist.execute_steps": 9})
    with pytest.raises(ConfigError, match="held-out|collection seed"):
        with_overrides(PLDSimConfig(), {"eval.seed": 10})
    with pytest.raises(ConfigError, match="rl_changes"):
        with_overrides(PLDSimConfig(), {"probe.rl_changes": {"residual_l2": 1.0}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("pld_sim:\n  rollouts:\n    episodes: 0\n")
    with pytest.raises(ConfigError, match="rollouts.episodes must be positive"):
        load_pld_sim_config(bad)
    assert with_overrides(PLDSimConfig(), {"rollouts.episodes": 3}).rollouts.episodes == 3
    with pytest.raises(ConfigError, match="demos: .*cube_y_range .* within the workspace"):
        with_overrides(PLDSimConfig(), {"demos.cube_y_range": [0.0, 0.5]})
    with pytest.raises(ConfigError, match="demos: .*cube_x_range .* low <= high"):
        with_overrides(PLDSimConfig(), {"demos.cube_x_range": [0.6, 0.5]})


def test_demonstrations_place_the_cube_in_their_range_and_the_result_splits_by_cube_pose(tmp_path):
    from pld_robot.pld_sim import stages
    from pld_robot.pld_sim.pipeline import _by_group

    inside_name, outside_name = "inside the demonstrations' range", "outside the demonstrations' range"
    config = with_overrides(PLDSimConfig(), {"demos.cube_y_range": [0.0, 0.02], "demos.episodes": 2,
                                             "eval.episodes": 100})
    record = stages.record_demos(tmp_path / "demos.zarr", config, lambda line: None)
    demos = EpisodeReader(tmp_path / "demos.zarr")
    assert record["successes"] == demos.num_episodes == 2
    for e in range(demos.num_episodes):
        cube_y = demos.episode(e, ["state"])["state"][0, 9]  # TCP pose, gripper, then the cube's pose
        assert 0.0 <= cube_y <= 0.02
    env = PickCubeEnv(FastEnvConfig(max_steps=config.max_steps))
    try:
        groups = stages.eval_groups(env, config)
        inside = groups[inside_name]
        _, info = env.reset(seed=config.eval.seed + inside.index(False))
        assert outside_name not in stages.eval_groups(env, PLDSimConfig())  # demonstrations everywhere
    finally:
        env.close()
    assert not 0.0 <= info["cube_pose"][1] <= 0.02
    assert 0 < sum(inside) < len(inside) / 4  # a twelfth of the y range, the whole x range
    assert groups[outside_name] == [not flag for flag in inside]
    small, large = groups["|yaw| < 0.25"], groups["|yaw| >= 0.25"]  # the yaw range is +-0.5 rad
    assert small == [not flag for flag in large] and 30 < sum(small) < 70
    outcomes = {"a": "".join("1" if flag else "0" for flag in inside), "b": "1" * len(inside)}
    split = _by_group(outcomes, groups)
    assert split[inside_name] == {"episodes": sum(inside), "a": 1.0, "b": 1.0}
    assert split[outside_name] == {"episodes": len(inside) - sum(inside), "a": 0.0, "b": 1.0}
    assert split["|yaw| < 0.25"]["b"] == 1.0 and split["|yaw| < 0.25"]["episodes"] == sum(small)


def test_the_generalist_init_is_the_config_seed_s(tmp_path):
    from safetensors.torch import load_file

    from pld_robot.data.normalization import NormStats, key_stats
    from pld_robot.pld_sim.episodes import store_schema
    from pld_robot.pld_sim.sft import build_initial_pi0

    env = PickCubeEnv(FastEnvConfig(max_steps=10))
    schema = store_schema(env)
    env.close()
    rng = np.random.default_rng(0)
    stats = NormStats({key: key_stats(rng.normal(size=(50, len(names))), names, 0.01) for key, names in
                       (("state", schema.state_names), ("action", schema.action_names))}, count=50, episodes=1)
    weights = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        torch.manual_seed(100 + len(weights))  # whatever the global generator holds
        weights[name] = load_file(build_initial_pi0(tmp_path / name, schema, PLDSimConfig().generalist, stats,
                                                    seed=seed) / "model.safetensors")
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    assert not all(torch.equal(weights["a"][k], weights["c"][k]) for k in weights["a"])


def test_unknown_rl_change_is_refused_before_any_stage_runs(tmp_path):
    from pld_robot.pld_sim.pipeline import run_pld_sim

    config = with_overrides(PLDSimConfig(), {"probe.rl_changes": {"sac.no_such_field": 1}})
    with pytest.raises(ConfigError, match="no_such_field"):
        run_pld_sim(tmp_path / "run", config)
    assert not (tmp_path / "run").exists()


# The end-to-end run: sizes at which the generalist learns enough to succeed now and then (the
# stores need successes), and everything after it is bookkeeping-sized.
E2E = {"--demos": 20, "--sft-steps": 600, "--probe-steps": 400, "--episodes": 2, "--distill-steps": 20,
       "--eval-episodes": 4}


@pytest.fixture(scope="module")
def pld_run(tmp_path_factory):
    from pld_robot.cli import main

    out = tmp_path_factory.mktemp("pld_sim") / "run"
    args = [str(x) for option, value in E2E.items() for x in (option, value)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: on a busy 2-core machine a second thread only spins
    try:
        assert main(["pld-sim", "--out", str(out), "--quiet", *args]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.slow
def test_pld_sim_stores_hold_n_successes_each(pld_run):
    n = E2E["--episodes"]
    for store, mode in (("pld_episodes.zarr", "hybrid"), ("base_episodes.zarr", "base")):
        reader = EpisodeReader(pld_run / store)
        assert reader.num_episodes == n
        for e in range(n):
            info, steps = reader.info(e), reader.episode(e, ["source", "residual_action", "reward"])
            assert info.outcome == "success" and info.mode == mode
            assert steps["reward"][-1] == 1.0 and np.all(steps["reward"][:-1] == 0)  # lifted on the last step
            prefix = info.extra["probe_steps"]
            if mode == "hybrid":
                assert np.all(steps["source"][:prefix] == Source.PROBE)
                assert np.all(steps["residual_action"][:prefix] == 0)
                assert np.all(steps["source"][prefix:] == Source.RESIDUAL)
                if prefix < info.length:
                    assert np.any(steps["residual_action"][prefix:] != 0)
            else:
                assert np.all(steps["source"] == Source.PROBE) and np.all(steps["residual_action"] == 0)
    demos = EpisodeReader(pld_run / "demos.zarr")
    assert demos.num_episodes == E2E["--demos"]
    assert all(demos.info(e).outcome == "success" for e in range(demos.num_episodes))


@pytest.mark.slow
def test_pld_sim_students_are_servable_checkpoints(pld_run):
    from pld_robot.policy.pi0.backend import Pi0Policy
    from pld_robot.policy.spec import Observation

    obs = Observation(images={"blank": np.zeros((32, 32, 3), np.uint8)},
                      state=np.r_[0.4, 0.0, 0.3, 1, 0, 0, 0, 0.08, 0.5, 0.0, 0.025, 0, 0, 0, 1].astype(np.float32))
    chunks = {}
    for name in ("generalist", "student_pld", "student_base"):
        policy = Pi0Policy(pld_run / name, device="cpu")
        chunk = policy.predict(dataclasses.replace(obs, noise=np.zeros((8, 8), np.float32)))
        assert chunk.shape == (8, 7) and np.all(np.isfinite(chunk))
        chunks[name] = chunk
    # the students were trained (on different data) from the generalist: all three differ
    assert not np.allclose(chunks["student_pld"], chunks["generalist"])
    assert not np.allclose(chunks["student_pld"], chunks["student_base"])
    distill = json.loads((pld_run / "student_pld.run" / "distill.json").read_text())
    assert "generalist" in json.dumps(distill)


@pytest.mark.slow
def test_pld_sim_result_and_rerun(pld_run, capsys):
    from pld_robot.cli import main

    result = json.loads((pld_run / "result.json").read_text())
    rates = result["success_rate"]
    assert set(rates) == {"generalist", "student_pld", "student_base"}
    assert all(0.0 <= r <= 1.0 and r * E2E["--eval-episodes"] == round(r * E2E["--eval-episodes"])
               for r in rates.values())
    assert result["n_episodes"] == {"pld": E2E["--episodes"], "base": E2E["--episodes"]}
    # the students' targets are in the generalist's normalised range: the residual's roll and pitch
    # corrections, which the demonstrations never had, do not explode the loss (generalist.std_floor)
    for student in ("student_pld", "student_base"):
        assert json.loads((pld_run / "stages" / f"{student}.json").read_text())["first_loss"] < 10
    # a second run with the same folder finds every stage done and prints the same result
    args = [str(x) for option, value in E2E.items() for x in (option, value)]
    assert main(["pld-sim", "--out", str(pld_run), "--quiet", *args]) == 0
    printed = capsys.readouterr().out
    assert printed.count("skipped") == len(list((pld_run / "stages").glob("*.json")))
    assert json.loads(printed.strip().splitlines()[-1]) == rates
    # ... and refuses other sizes, which would mix stages of two runs
    assert main(["pld-sim", "--out", str(pld_run), "--episodes", "3"]) == 2
