"""The whole reward path in the sim lab, as a user runs it: `pld-robot sim` records episodes with
ground-truth success labels, `pld-robot train-reward` learns from them, and `pld-robot sim --reward`
lets only the classifier end new episodes, which are then judged against the ground truth recorded
beside it. (bench/reward_episodes.py runs the same at full size: 30 + 20 episodes, BENCHMARKS.md.)"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from pld_robot.data import EpisodeReader
from pld_robot.paths import shipped_config
from pld_robot.reward.evaluate import episode_endings, summarize

pytestmark = pytest.mark.slow

HOST = "127.0.0.66"  # franky-sim binds fixed ports: an address of this module's own


def pld_robot(*args: str, env: dict, timeout: float) -> str:
    done = subprocess.run([sys.executable, "-m", "pld_robot.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    return done.stdout


@pytest.mark.timeout(1200)  # 17 sim episodes and a training run: about 7 minutes alone on 2 cores
def test_the_classifier_trained_on_sim_episodes_ends_new_ones(tmp_path):
    config = tmp_path / "sim.yaml"
    config.write_text(shipped_config("sim.yaml").read_text().replace('"127.0.0.1"', f'"{HOST}"'))
    env = dict(os.environ, ROS_DOMAIN_ID=str(random.randint(2, 230)))
    exact = tmp_path / "exact_policy.yaml"  # enough successes to learn from, and to judge in 5 episodes
    exact.write_text("chunk_length: 10\nmiss_probability: 0.0\n")
    train_store, eval_store, checkpoint = tmp_path / "train.zarr", tmp_path / "eval.zarr", tmp_path / "reward"
    pld_robot("sim", "--episodes", "12", "--max-steps", "150", "--config", str(config), "--policy-config", str(exact),
              "--store", str(train_store), env=env, timeout=900)
    reader = EpisodeReader(train_store)
    successes = reader.select(outcome="success")
    assert len(successes) >= 3, "the scripted policy succeeds often enough to learn from"
    labels = [reader.episode(i, ["success_label"])["success_label"] for i in successes]
    assert all(l[-5:].all() and not l[0] for l in labels), "ground truth: success frames at the end only"

    out = pld_robot("train-reward", str(train_store), "--out", str(checkpoint), "--steps", "600", "--quiet",
                    env=env, timeout=900)
    metrics = json.loads((checkpoint / "metrics.json").read_text())
    assert metrics["held_out"]["accuracy"] >= 0.95, (out, metrics["held_out"])

    # The exact expert lifts the cube in about two episodes of three (docs/rollouts.md): 5 episodes of 200
    # steps make "no success to judge" rare (a CI run once drew 0 of 4 at 150 steps).
    pld_robot("sim", "--reward", str(checkpoint), "--episodes", "5", "--max-steps", "200", "--seed", "1",
              "--config", str(config), "--policy-config", str(exact), "--store", str(eval_store), env=env, timeout=900)
    summary = summarize(episode_endings(EpisodeReader(eval_store)), max_delay_s=1.0)
    assert summary["true_successes"] >= 1, summary
    assert summary["missed_successes"] == 0 and summary["late_successes"] == 0, summary
    # No false success is asserted at this scale: a classifier from 12 episodes and 600 steps ended one
    # of 4 episodes early in a CI run. bench/reward_episodes.py shows it at full scale (BENCHMARKS.md 8).
