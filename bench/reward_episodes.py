"""The success classifier ending sim-lab episodes: trained on rendered frames with ground-truth labels,
then judging new episodes on its own.

1. `pld-robot sim --episodes N_train` records base rollouts of the scripted policy; the simulated
   operator holds the success label while the cube is up (ground truth) and declares success after it
   has been up for 1 s (config/sim.yaml: sim_operator.success_ticks), so successes leave frames to
   learn from.
2. `pld-robot train-reward` trains the classifier (config/reward/train.yaml, or --train-config),
   holding out episodes; its held-out accuracy, precision and recall are reported.
3. `pld-robot sim --reward CKPT --episodes N_eval --seed 1` records new episodes (other cube poses
   and policy imperfections than the training run's seed 0) in which only the classifier
   (reward_node) can declare success; the ground-truth labels are still recorded beside it.
4. Each new episode is judged against its labels (pld_robot/reward/evaluate.py): every true success
   must end as a success within `--max-delay` s of the first labelled frame, and no episode may end
   as a success unless its last frame is labelled.

Everything runs in a private DDS domain (231) on the shipped sim config; about 15 s per episode here.

    python bench/reward_episodes.py [--train-episodes 30] [--eval-episodes 20] [--keep DIR]
                                    [--collected STORE]   (skip step 1: train on this store)
      (progress on stderr, one JSON object on stdout)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))

from pld_robot.data import EpisodeReader  # noqa: E402
from pld_robot.reward.evaluate import episode_endings, summarize  # noqa: E402


def run(args: list[str], env: dict) -> float:
    print("+ pld-robot " + " ".join(args), file=sys.stderr, flush=True)
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pld_robot.cli", *args], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    lines = [l for l in done.stdout.splitlines() if l.startswith(("episode ", "session:", "held-out", "threshold",
                                                                  "average", "pld-robot"))]
    print("\n".join(lines), file=sys.stderr, flush=True)
    if done.returncode != 0:
        raise SystemExit(f"pld-robot {args[0]} failed ({done.returncode}):\n{done.stdout[-4000:]}")
    return round(time.monotonic() - start, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-episodes", type=int, default=30)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--train-config", help="train-reward YAML (default: the shipped one)")
    parser.add_argument("--max-delay", type=float, default=1.0, help="seconds from true success to the end")
    parser.add_argument("--keep", help="keep the stores and the checkpoint in this folder")
    parser.add_argument("--collected", help="train on this store instead of recording a new one (step 1)")
    args = parser.parse_args()
    env = dict(os.environ, ROS_DOMAIN_ID="231", ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               MUJOCO_GL=os.environ.get("MUJOCO_GL", "osmesa"))
    with tempfile.TemporaryDirectory(prefix="pld-reward-bench-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        train_store, eval_store, checkpoint = work / "train.zarr", work / "eval.zarr", work / "reward"
        seconds = {}
        if args.collected:
            train_store = Path(args.collected)
        else:
            seconds["collect"] = run(["sim", "--episodes", str(args.train_episodes), "--store", str(train_store)], env)
        train = ["train-reward", str(train_store), "--out", str(checkpoint), "--quiet"]
        seconds["train"] = run(train + (["--config", args.train_config] if args.train_config else []), env)
        metrics = json.loads((checkpoint / "metrics.json").read_text())
        seconds["evaluate"] = run(["sim", "--reward", str(checkpoint), "--episodes", str(args.eval_episodes),
                                   "--seed", "1", "--store", str(eval_store)], env)
        collected = EpisodeReader(train_store)
        summary = summarize(episode_endings(EpisodeReader(eval_store)), args.max_delay)
    result = {
        "bench": "reward_episodes",
        "train": {"store": str(args.collected or "recorded by this run"), "episodes": collected.num_episodes,
                  "successes": len(collected.select(outcome="success")),
                  "classifier": {k: metrics[k] for k in ("episodes", "frames", "threshold", "held_out",
                                                         "average_precision", "train_seconds")},
                  "model": {k: metrics["config"]["model"][k] for k in ("cameras", "image_size", "encoder")}},
        "eval": summary,
        "seconds": seconds,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
