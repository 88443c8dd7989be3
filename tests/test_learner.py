"""pld-robot learn: the residual learner tailing real episode stores (EpisodeWriter) while it trains."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from waiting import wait_for

from pld_robot.cli import main as cli
from pld_robot.config import ConfigError, from_dict
from pld_robot.data import (
    EpisodeInfo,
    EpisodeWriter,
    Source,
    StoreError,
    StoreSchema,
    WriterConfig,
)
from pld_robot.rl.checkpoint import latest_actor_version, load_latest_actor
from pld_robot.rl.config import (
    CalQLConfig,
    EncoderConfig,
    NetworkConfig,
    ReplayConfig,
    ResidualSACConfig,
    SACConfig,
)
from pld_robot.rl.learner import Learner, LearnerConfig, load_learner_config
from pld_robot.rl.metrics import COLUMNS
from pld_robot.robots.action_spec import ActionSpec

ROOT = Path(__file__).resolve().parents[1]
SPEC = ActionSpec(names=("x", "y"), low=(-1.0, -1.0), high=(1.0, 1.0), control_hz=10.0)
SCHEMA = StoreSchema({}, ("t", "episode", "bias"), ("x", "y"), 10.0)
LENGTH = 10
PRETRAIN = 20
UTD = 2
RL = ResidualSACConfig(encoder=EncoderConfig(image_encoder="none", cameras=()), networks=NetworkConfig(hidden=(32, 32)),
                       sac=SACConfig(batch_size=32, utd=UTD),
                       calql=CalQLConfig(offline_episodes=5, pretrain_updates=PRETRAIN, sampled_actions=4),
                       replay=ReplayConfig(capacity=10_000, warmup_episodes=3))
FAST = LearnerConfig(poll_s=0.02, export_every_s=0.0, save_every_s=3600.0, keep_actors=100)

torch.set_num_threads(1)


def open_writer(path: Path) -> EpisodeWriter:
    return EpisodeWriter.open(path, SCHEMA, task="reach", config=WriterConfig(sync_on_commit=False))


def record(writer: EpisodeWriter, mode: str, outcome: str, probe_steps: int = 0, human: tuple[int, ...] = (),
           episode: int = 0, length: int = LENGTH, residual: float = 0.1) -> None:
    """One episode: the base acts alone in `base` mode and for the first `probe_steps` steps of a hybrid
    one, the residual (`residual` in every dimension) after that; steps in `human` are the person's."""
    writer.begin_episode(EpisodeInfo(mode=mode, extra={"probe_steps": probe_steps}))
    for t in range(length):
        source = Source.HUMAN if t in human else Source.PROBE if mode == "base" or t < probe_steps else Source.RESIDUAL
        base = np.array([0.01 * t, -0.01 * t], np.float32)
        res = np.full(2, residual if source == Source.RESIDUAL else 0.0, np.float32)
        action = np.array([0.5, -0.5], np.float32) if source == Source.HUMAN else base + res
        writer.add_step({"state": np.array([t, episode, 1.0], np.float32), "base_action": base,
                         "residual_action": res, "action": action, "source": np.uint8(source)})
    writer.end_episode(outcome).result(30)


@contextlib.contextmanager
def running(learner: Learner):
    """The learner's run() in a thread; stopped (as SIGINT would) when the block ends."""
    stop, outcome = threading.Event(), {}

    def run():
        try:
            outcome["summary"] = learner.run(stop)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(30)
        if "error" in outcome:  # the learner's own failure explains a test's timeout: it comes first
            raise outcome["error"]
    assert not thread.is_alive(), "the learner did not stop within 30 s of being asked"


def metrics_rows(out: Path) -> list[dict[str, float]]:
    with open(out / "metrics.csv", newline="") as f:
        return [{k: float(v) if v else float("nan") for k, v in row.items()} for row in csv.DictReader(f)]


# -- config -----------------------------------------------------------------------------------

def test_the_shipped_learner_config_is_the_default_and_bad_values_are_named(tmp_path):
    assert load_learner_config(ROOT / "config" / "rl" / "learner.yaml") == LearnerConfig()
    with pytest.raises(ConfigError, match="keep_actors"):
        from_dict(LearnerConfig, {"keep_actors": 0}, where="learner")
    with pytest.raises(ConfigError, match="device"):
        from_dict(LearnerConfig, {"device": "gpu"}, where="learner")
    (tmp_path / "l.yaml").write_text("learner:\n  poll_s: 1.0\nsac:\n  utd: 2\n")
    with pytest.raises(ConfigError, match="one section, 'learner:'"):
        load_learner_config(tmp_path / "l.yaml")


# -- the learner while a robot records --------------------------------------------------------

def test_warm_up_then_pre_training_then_a_version_per_episode_paced_by_the_recorded_steps(tmp_path):
    store, out = tmp_path / "robot.zarr", tmp_path / "run"
    with open_writer(store) as writer:
        record(writer, "base", "success", episode=0)
        record(writer, "base", "success", episode=1)
        learner = Learner([store], out, RL, FAST, SPEC)
        with running(learner):
            wait_for(lambda: learner.episodes == 2, 10, "the two recorded episodes")
            time.sleep(0.3)
            assert learner.agent.critic_updates == 0 and latest_actor_version(out) is None, "trained during warm-up"
            record(writer, "base", "failure", episode=2)
            wait_for(lambda: latest_actor_version(out) == 1, 20, "actor version 1 after warm-up")
            time.sleep(0.3)  # no new steps: no more updates than the pre-training's
            assert (learner.agent.critic_updates, learner.agent.env_steps) == (PRETRAIN, 0)
            assert learner.offline_episodes == 2  # the failure is not Cal-QL's
            for k in range(2):
                record(writer, "hybrid", "success", probe_steps=3, episode=3 + k)
                wait_for(lambda k=k: learner.version == 2 + k, 20, f"actor version {2 + k}")
            wait_for(lambda: learner.agent.env_steps == 2 * LENGTH, 10, "the updates of both hybrid episodes")
            time.sleep(0.3)
            assert learner.agent.critic_updates == PRETRAIN + UTD * 2 * LENGTH
            assert learner.version == 3
    actor = load_latest_actor(out)
    assert actor.version == 3 and actor.policy.residual({"state": np.zeros(3, np.float32)}, np.zeros(2)).shape == (2,)
    assert (out / "agent.pt").is_file()

    rows = metrics_rows(out)
    assert tuple(rows[0]) == COLUMNS
    assert [r["actor_version"] for r in rows] == [1, 2, 3]
    assert [r["critic_updates"] for r in rows] == [PRETRAIN, PRETRAIN + UTD * LENGTH, PRETRAIN + 2 * UTD * LENGTH]
    assert [r["episodes"] for r in rows] == [3, 4, 5]
    assert np.isfinite(rows[0]["calql_regularizer"]) and np.isnan(rows[1]["calql_regularizer"])  # pre-training's
    last = rows[-1]
    assert last["success_rate"] == pytest.approx(4 / 5)
    assert last["mean_return"] == pytest.approx(4 * 0.99 ** (LENGTH - 1) / 5, rel=1e-4)
    assert last["residual_magnitude"] == pytest.approx(0.1, rel=1e-4)  # |0.1| of a half range of 1
    assert np.isfinite([last["q"], last["td_target"], last["critic_loss"], last["temperature"]]).all()
    assert (out / "learning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_stores_feed_one_learner_and_a_missing_store_is_waited_for(tmp_path, caplog):
    a, b, out = tmp_path / "a.zarr", tmp_path / "b.zarr", tmp_path / "run"
    caplog.set_level(logging.INFO, logger="pld_robot.rl")
    with open_writer(a) as writer_a:
        record(writer_a, "base", "success", episode=0)
        record(writer_a, "base", "success", episode=1)
        learner = Learner([a, b], out, RL, FAST, SPEC)
        with running(learner):
            wait_for(lambda: learner.episodes == 2, 10, "store a's episodes")
            assert f"waiting for the episode store {b}" in caplog.text
            with open_writer(b) as writer_b:
                record(writer_b, "base", "success", episode=10)  # the third warm-up episode, from the other robot
                wait_for(lambda: learner.version == 1, 20, "actor version 1")
                record(writer_a, "hybrid", "success", probe_steps=2, episode=2)
                wait_for(lambda: learner.version == 2, 20, "a version from store a's episode")
                record(writer_b, "hybrid", "failure", probe_steps=2, episode=11)
                wait_for(lambda: learner.version == 3, 20, "a version from store b's episode")
    assert learner.episodes == 5 and learner.offline_episodes == 3
    assert learner.agent.env_steps == 2 * LENGTH
    online = learner.online.gather(np.arange(len(learner.online)))["obs"]["state"]
    assert set(np.unique(online[:, 1]).astype(int)) == {0, 1, 2, 10, 11}  # both robots' episodes


def test_the_probe_prefix_is_left_out_and_human_steps_go_to_the_intervention_buffer(tmp_path):
    store = tmp_path / "robot.zarr"
    with open_writer(store) as writer:
        record(writer, "base", "success", episode=0)  # offline (and online)
        record(writer, "base", "success", human=(5,), episode=1)  # a takeover: not a base rollout for Cal-QL
        record(writer, "base", "success", episode=2)  # offline: the second and last of the quota below
        record(writer, "base", "success", episode=5)  # online only: over the quota
        record(writer, "hybrid", "success", probe_steps=4, human=(6, 7), episode=3)
        record(writer, "hybrid", "failure", probe_steps=3, human=(1,), episode=4)  # last step dropped
    config = dataclasses.replace(RL, calql=dataclasses.replace(RL.calql, offline_episodes=2))
    learner = Learner([store], tmp_path / "run", config, FAST, SPEC)
    assert learner.poll() == 6 and learner.poll() == 0
    # online: 10 + 9 + 10 + 10 + (10 - 4 - 2) + (9 - 2 probe - 1 human); probe: 4 + 2 (the person's step 1 is kept)
    assert learner.counts == {"offline": 20, "online": 49, "intervention": 4, "probe": 6}
    assert (len(learner.offline), len(learner.online), len(learner.intervention)) == (20, 49, 4)
    online = learner.online.gather(np.arange(49))["obs"]["state"]
    pairs = {(int(e), int(t)) for t, e, _ in online}
    assert not pairs & {(3, t) for t in range(4)} and not pairs & {(4, 0), (4, 2)}, "probe steps in the buffer"
    assert (3, 4) in pairs and (4, 3) in pairs and (4, 9) not in pairs
    human = learner.intervention.gather(np.arange(4))
    assert sorted((int(e), int(t)) for t, e, _ in human["obs"]["state"]) == [(1, 5), (3, 6), (3, 7), (4, 1)]
    np.testing.assert_allclose(human["action"], np.tile([0.5, -0.5], (4, 1)))  # the person's action
    assert set(np.unique(learner.offline.gather(np.arange(20))["obs"]["state"][:, 1])) == {0, 2}


def test_an_unreadable_episode_is_reported_and_skipped(tmp_path, caplog):
    store = tmp_path / "robot.zarr"
    with open_writer(store) as writer:  # low-dimensional chunks hold 1024 steps: episodes 0 and 1 share chunk 0
        for e in range(3):
            record(writer, "base", "success", episode=e, length=600)
    (store / "data" / "action" / "c" / "0" / "0").write_bytes(b"not a chunk")  # checksummed: a read error
    learner = Learner([store], tmp_path / "run", RL, FAST, SPEC)
    assert learner.poll() == 1 and learner.skipped == 2
    assert "episode 0 cannot be read" in caplog.text and "episode 1 cannot be read" in caplog.text
    assert set(learner.online.gather(np.arange(len(learner.online)))["obs"]["state"][:, 1]) == {2}


def test_resume_continues_the_counters_versions_and_metrics(tmp_path):
    store, out = tmp_path / "robot.zarr", tmp_path / "run"
    first_budget = PRETRAIN + UTD * LENGTH
    with open_writer(store) as writer:
        for e in range(3):
            record(writer, "base", "success" if e else "failure", episode=e)
        learner = Learner([store], out, RL, dataclasses.replace(FAST, max_updates=first_budget), SPEC)
        with running(learner) as thread:
            wait_for(lambda: learner.version == 1, 20, "actor version 1")
            record(writer, "hybrid", "success", probe_steps=3, episode=3)
            thread.join(20)
            assert not thread.is_alive(), "the learner did not stop at max_updates"
        assert (learner.agent.critic_updates, learner.agent.env_steps, learner.version) == (first_budget, LENGTH, 2)

        resumed = Learner([store], out, RL, dataclasses.replace(FAST, max_updates=first_budget + UTD * LENGTH),
                          resume=True)
        assert resumed.action_spec == SPEC  # from agent.pt
        assert (resumed.agent.critic_updates, resumed.agent.actor_updates, resumed.agent.env_steps, resumed.version) \
            == (first_budget, learner.agent.actor_updates, LENGTH, 2)
        with running(resumed) as thread:
            wait_for(lambda: resumed.episodes == 4, 10, "the stores re-read")
            time.sleep(0.3)
            assert resumed.agent.critic_updates == first_budget, "no pre-training again, no updates for old steps"
            assert resumed.counts == learner.counts
            record(writer, "hybrid", "success", probe_steps=3, episode=4)
            thread.join(20)
            assert not thread.is_alive()
    assert (resumed.agent.critic_updates, resumed.agent.env_steps, resumed.version) == \
        (first_budget + UTD * LENGTH, 2 * LENGTH, 3)
    rows = metrics_rows(out)
    assert [r["actor_version"] for r in rows] == [1, 2, 3]
    assert [r["critic_updates"] for r in rows] == [PRETRAIN, first_budget, first_budget + UTD * LENGTH]

    idle = Learner([store], out, RL, FAST, resume=True)  # nothing new recorded: nothing learned, nothing exported
    with running(idle):
        wait_for(lambda: idle.episodes == 5, 10, "the stores re-read")
    assert idle.agent.critic_updates == first_budget + UTD * LENGTH and latest_actor_version(out) == 3


# -- the command ------------------------------------------------------------------------------

def write_configs(tmp_path: Path, **learner) -> list[str]:
    """--config, --learner-config and --robot-config files for the tiny test setup."""
    rl = tmp_path / "rl.yaml"
    rl.write_text(yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(RL)))))
    lc = tmp_path / "learner.yaml"
    lc.write_text(yaml.safe_dump({"learner": {**json.loads(json.dumps(dataclasses.asdict(FAST))), **learner}}))
    robot = tmp_path / "robot.yaml"
    robot.write_text(yaml.safe_dump({"arm_node": {"ros__parameters": {"arm": {"action": {
        "names": list(SPEC.names), "low": list(SPEC.low), "high": list(SPEC.high), "control_hz": SPEC.control_hz}}}}}))
    return ["--config", str(rl), "--learner-config", str(lc), "--robot-config", str(robot)]


def test_bad_input_is_refused_with_a_message_that_says_what(tmp_path, capsys):
    store = tmp_path / "robot.zarr"
    with open_writer(store) as writer:
        record(writer, "base", "success")
    configs = write_configs(tmp_path)

    not_a_store = tmp_path / "notes"
    not_a_store.mkdir()
    (not_a_store / "todo.txt").write_text("buy cubes")
    assert cli(["learn", str(not_a_store), "--out", str(tmp_path / "r1"), *configs]) == 1
    assert "not an episode store (it holds todo.txt)" in capsys.readouterr().err

    # the default robot config is the Franka's 7 end-effector dimensions; this store has 2
    assert cli(["learn", str(store), "--out", str(tmp_path / "r2"), *configs[:4], "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "records actions ['x', 'y']" in err and "'dx', 'dy', 'dz'" in err

    assert cli(["learn", str(store), "--out", str(not_a_store), *configs]) == 2
    assert "exists and is not a learner folder" in capsys.readouterr().err
    assert cli(["learn", str(store), "--out", str(tmp_path / "r3"), "--resume", *configs]) == 2
    assert "no agent.pt to resume from" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    assert cli(["learn", str(store), "--out", str(tmp_path / "r4"), *write_configs(tmp_path / "bad", poll_s=0.0)]) == 2
    assert "poll_s" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli(["learn", str(store), "--out", str(tmp_path / "r5"), *configs, "--device", "cuda"]) == 2
        assert "no CUDA device" in capsys.readouterr().err
    assert not any((tmp_path / f"r{i}").exists() for i in (1, 3, 4, 5))
    with pytest.raises(StoreError, match="a file"):
        Learner([tmp_path / "rl.yaml"], tmp_path / "r6", RL, FAST, SPEC)

    other = tmp_path / "other.zarr"  # another robot recording one more state dimension
    EpisodeWriter.open(other, dataclasses.replace(SCHEMA, state_names=("t", "episode", "bias", "extra")),
                       config=WriterConfig(sync_on_commit=False)).close()
    learner = Learner([store, other], tmp_path / "r7", RL, FAST, SPEC)
    for _ in range(2):  # and it stays refused: never read as if it fitted
        with pytest.raises(StoreError, match=r"other.zarr: records state size .* \{'state': 4\}.* \{'state': 3\}"):
            learner.poll()
    assert learner.episodes == 1


def test_the_command_saves_and_exports_on_sigterm_and_refuses_to_overwrite_the_run(tmp_path, capsys):
    store, out = tmp_path / "robot.zarr", tmp_path / "run"
    with open_writer(store) as writer:
        for e in range(3):
            record(writer, "base", "success", episode=e)
    configs = write_configs(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "pld_robot.cli", "learn", str(store), "--out", str(out), *configs,
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for(lambda: latest_actor_version(out) == 1 or proc.poll() is not None, 60, "actor version 1")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "actor version 1" in stdout and "30 steps" in stdout, stdout
    assert (out / "agent.pt").is_file() and (out / "metrics.csv").is_file()
    assert cli(["learn", str(store), "--out", str(out), *configs]) == 2
    assert "holds a learner run (agent.pt); pass --resume" in capsys.readouterr().err
