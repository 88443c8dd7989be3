"""Writer and reader processes for the crash-safety tests, and the deterministic episodes they share.

    python tests/store_procs.py write STORE --episodes N [--then-hang]
    python tests/store_procs.py follow STORE --timeout S

`write` records N episodes (printing `committed <i>` after each), then with --then-hang starts one more
and keeps adding steps (printing `step <t>`) until it is killed. `follow` tails the store and prints one
JSON line per committed episode it sees, with a digest of its contents.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from pld_robot.data import CameraSpec, EpisodeInfo, EpisodeReader, EpisodeWriter, StoreSchema, WriterConfig  # noqa: E402

SCHEMA = StoreSchema({"front": CameraSpec(48, 64), "wrist": CameraSpec(32, 40, depth=True)},
                     ("x", "y", "z", "gripper"), ("dx", "dy", "dz", "gripper"), 30.0)
KEYS = ("front_rgb", "wrist_rgb", "wrist_depth", "state", "action", "base_action", "source", "success_prob",
        "timestamp")


def episode_length(episode: int) -> int:
    return 23 + 7 * episode  # not a multiple of the image chunk: commits share chunks


def make_step(episode: int, t: int) -> dict:
    """Step t of episode `episode`: the same bytes every time, different for every (episode, t)."""
    rng = np.random.default_rng(episode * 100_003 + t)
    return {
        "front_rgb": rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
        "wrist_rgb": rng.integers(0, 256, (32, 40, 3), dtype=np.uint8),
        "wrist_depth": rng.integers(0, 4000, (32, 40), dtype=np.uint16),
        "state": rng.normal(size=4).astype(np.float32),
        "action": rng.normal(size=4).astype(np.float32),
        "base_action": rng.normal(size=4).astype(np.float32),
        "source": np.uint8(rng.integers(0, 3)),
        "success_prob": np.float32(rng.random()),
        "timestamp": np.float64(1.7e9 + episode * 1000 + t / 30),
    }


def expected_episode(episode: int) -> dict[str, np.ndarray]:
    steps = [make_step(episode, t) for t in range(episode_length(episode))]
    return {key: np.stack([s[key] for s in steps]) for key in KEYS}


def digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in KEYS:
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()


def record(writer: EpisodeWriter, episode: int) -> int:
    writer.begin_episode(EpisodeInfo(prompt=f"episode {episode}", mode="base"))
    for t in range(episode_length(episode)):
        writer.add_step(make_step(episode, t))
    return writer.end_episode("success" if episode % 2 == 0 else "failure").result(60)


def write(store: str, episodes: int, first: int, then_hang: bool, pace_s: float) -> None:
    config = WriterConfig(flush_interval_s=0.05, sync_on_commit=False, on_uncommitted_tail="refuse")
    with EpisodeWriter.open(store, SCHEMA, task="crash test", config=config) as writer:
        for episode in range(first, first + episodes):
            index = record(writer, episode)
            print(f"committed {index}", flush=True)
            time.sleep(pace_s)
        if then_hang:
            episode = first + episodes
            writer.begin_episode(EpisodeInfo(prompt=f"episode {episode}", mode="base"))
            for t in range(10**9):
                writer.add_step(make_step(episode, t % episode_length(episode)))
                print(f"step {t}", flush=True)
                time.sleep(0.01)


def follow(store: str, timeout_s: float) -> None:
    reader = EpisodeReader(store)
    for index in reader.follow(poll_s=0.05, timeout_s=timeout_s):
        arrays = reader.episode(index, KEYS)
        print(json.dumps({"episode": index, "length": len(arrays["action"]), "digest": digest(arrays),
                          "outcome": reader.info(index).outcome}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write")
    w.add_argument("store")
    w.add_argument("--episodes", type=int, required=True)
    w.add_argument("--first", type=int, default=0)
    w.add_argument("--then-hang", action="store_true")
    w.add_argument("--pace", type=float, default=0.0, help="seconds between commits")
    f = sub.add_parser("follow")
    f.add_argument("store")
    f.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    if args.command == "write":
        write(args.store, args.episodes, args.first, args.then_hang, args.pace)
    else:
        follow(args.store, args.timeout)


if __name__ == "__main__":
    main()
