"""Success-classifier inference latency on this CPU: what reward_node spends per tick.

For each frame size (128x128, 224x224; the model's image_size set to match, so no resize) and one or
two cameras, the default classifier (config/reward/train.yaml's small CNN, untrained: latency does not
depend on the weights) judges one set of frames, exactly as reward_node does (`predict`: uint8 frames
-> preprocessing -> CNN -> sigmoid), `--reps` times after 20 warm-up calls, on one torch thread (the
node's default, torch_threads: 1) and on all of this machine's cores. The cases interleave round by
round, so a noisy neighbour hits them all alike.

    python bench/reward.py [--reps 300]      (a table on stderr, one JSON object on stdout)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pld_robot.reward.cli import load_training_config  # noqa: E402
from pld_robot.reward.model import RewardClassifier  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=300)
    args = parser.parse_args()
    base = load_training_config(None).model
    rng = np.random.default_rng(0)
    cases = {}
    for size in (128, 224):
        for cameras in (("front",), ("front", "wrist")):
            model = RewardClassifier(base.__class__(**{**base.__dict__, "cameras": cameras, "image_size": size})).eval()
            frames = {c: rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for c in cameras}
            for threads in (1, os.cpu_count()):
                cases[f"{size}x{size}_{len(cameras)}cam_{threads}thread"] = (model, frames, threads, [])
    for model, frames, threads, _ in cases.values():
        torch.set_num_threads(threads)
        for _ in range(20):
            model.predict(frames)
    for _ in range(args.reps):
        for model, frames, threads, times in cases.values():
            torch.set_num_threads(threads)
            start = time.perf_counter()
            model.predict(frames)
            times.append((time.perf_counter() - start) * 1e3)
    result = {"bench": "reward", "reps": args.reps, "cpu_count": os.cpu_count(), "torch": torch.__version__,
              "model": {"encoder": base.encoder, "channels": list(base.channels)},
              "latency_ms": {}}
    print(f"{'case':28s} {'p50 ms':>8s} {'p99 ms':>8s}", file=sys.stderr)
    for name, (_, _, _, times) in cases.items():
        p50, p99 = (round(float(np.percentile(times, q)), 2) for q in (50, 99))
        result["latency_ms"][name] = {"p50": p50, "p99": p99}
        print(f"{name:28s} {p50:8.2f} {p99:8.2f}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
