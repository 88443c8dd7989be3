"""Recording at robot rate: what the episode writer costs the control loop, against a naive writer.

Two 640x480 cameras and the low-dimensional data at 30 Hz, for `--duration` s, in episodes of
`--episode-s` s (so commits, with their fsync, happen during the run as on the robot), twice in one run:

  writer  pld_robot.data.writer.EpisodeWriter, default WriterConfig (sync_on_commit=True as shipped):
          cost of `add_step` on the control loop, dropped frames, commit latency, MB/s handed over and
          on disk, compression ratio of the image arrays; the store is then validated and its
          committed steps counted against the ticks
  naive   the same steps, same pacing, appended synchronously in the loop, one `arr.append` per key
          per step, into arrays of the same layout: per-step cost, ticks missed, MB/s

Missed ticks: scheduled ticks not served within one period of their deadline. A loop that falls behind
never catches up on absolute deadlines, so a mode stops 1 s after its schedule ends and the ticks it
never reached count as missed (this bounds the naive mode to about `--duration` too).

Frames are 32 distinct MuJoCo renders per camera (bench/store_layout.py) with Gaussian sensor noise,
cycled: real camera frames are noisy and compress far worse than clean renders, which would flatter
both the disk rate and the writer's CPU. Each tick hands over a fresh copy, as a camera driver hands
over new buffers; only the `add_step` (or the naive appends) is timed. Lateness is how late the loop
woke up for its tick: a writer thread that starves the loop of the GIL or the CPU shows up there.

    python -m bench.recorder [--duration 60] [--episode-s 20] [--out DIR]
    python bench/recorder.py      (same; a table on stderr, the last stdout line is one JSON object)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a file: make `pld_robot` and `bench` importable as `python -m` does
    sys.path.insert(0, str(REPO))

import numpy as np

from bench.store_layout import CAMERAS, FPS, HEIGHT, WIDTH, add_noise, render_frames
from pld_robot.data.layout import (
    CameraSpec,
    EpisodeInfo,
    Outcome,
    StoreSchema,
    committed_ends,
    create_store,
    open_root,
    rgb_key,
)
from pld_robot.data.validate import validate
from pld_robot.data.writer import EpisodeWriter, WriterConfig

N_FRAMES, PERIOD = 32, 1.0 / FPS
TARGET = {"dropped_frames": 0, "p99_ms": 2.0}
SCHEMA = StoreSchema(cameras={c: CameraSpec(HEIGHT, WIDTH) for c in CAMERAS},
                     state_names=tuple(f"s{i}" for i in range(8)), action_names=tuple(f"a{i}" for i in range(7)),
                     control_hz=FPS)


def make_step(frames: dict, i: int, rng: np.random.Generator) -> dict:
    step = {rgb_key(c): f[i % N_FRAMES].copy() for c, f in frames.items()}  # a new buffer, as a driver's
    step["state"] = rng.normal(size=8).astype(np.float32)
    for key in ("action", "base_action", "residual_action", "teleop_action"):
        step[key] = rng.normal(size=7).astype(np.float32)
    step.update(source=np.uint8(i % 3), success_prob=np.float32(rng.random()), reward=np.float32(0.0),
                timestamp=np.float64(time.time()), loop_latency=np.float32(0.002))
    return step


def nbytes(step: dict) -> tuple[int, int]:
    """(image bytes, all bytes) of one step."""
    img = sum(np.asarray(v).nbytes for k, v in step.items() if k.endswith("_rgb"))
    return img, sum(np.asarray(v).nbytes for v in step.values())


def run_loop(frames: dict, ticks: int, per_episode: int, add, end_episode, watch=lambda: None) -> dict:
    """Drive `add(step)` at 30 Hz on absolute deadlines; `end_episode(last)` every `per_episode` ticks.
    Stops 1 s after the schedule ends even if ticks are left: a loop that fell behind never catches up,
    and every tick left counts as missed."""
    rng = np.random.default_rng(0)
    cost, late, raw_img, raw_all = [], [], 0, 0
    t0 = time.perf_counter() + 0.1
    cpu0 = time.process_time()
    for i in range(ticks):
        step = make_step(frames, i, rng)  # before the deadline: the camera's work, not the recorder's
        deadline = t0 + i * PERIOD
        delay = deadline - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        late.append(time.perf_counter() - deadline)
        t = time.perf_counter()
        add(step)
        cost.append(time.perf_counter() - t)
        watch()
        img, total = nbytes(step)
        raw_img, raw_all = raw_img + img, raw_all + total
        last = i + 1 == ticks or time.perf_counter() - t0 > ticks * PERIOD + 1.0
        if (i + 1) % per_episode == 0 or last:
            end_episode(last)
        if last:
            break
    wall = time.perf_counter() - t0
    cost_ms, late_ms = 1000 * np.array(cost), 1000 * np.array(late)
    pct = lambda a, q: round(float(np.percentile(a, q)), 3)
    return {"ticks": len(cost), "wall_s": round(wall, 2), "cpu_pct": round(100 * (time.process_time() - cpu0) / wall),
            "p50_ms": pct(cost_ms, 50), "p99_ms": pct(cost_ms, 99), "max_ms": round(float(cost_ms.max()), 2),
            "late_p50_ms": pct(late_ms, 50), "late_p99_ms": pct(late_ms, 99),
            "missed_ticks": ticks - int((late_ms <= 1000 * PERIOD).sum()),
            "raw_mb_s": round(raw_all / wall / 1e6, 1), "_raw_img": raw_img, "_wall": wall,
            "_cost": cost_ms, "_late": late_ms}


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def on_disk(path: Path, r: dict) -> dict:
    img = sum(du(path / "data" / rgb_key(c)) for c in CAMERAS)
    return {"disk_mb_s": round(du(path) / r.pop("_wall") / 1e6, 1), "ratio": round(r.pop("_raw_img") / img, 2)}


def mode_writer(path: Path, frames: dict, ticks: int, per_episode: int) -> dict:
    writer = EpisodeWriter.open(path, SCHEMA, task="bench", config=WriterConfig())
    commits, queued = [], [0.0]
    info = EpisodeInfo(prompt="bench", mode="base")

    def watch():  # the backlog the writer thread reports, sampled outside the timed call
        queued[0] = max(queued[0], writer.stats.queued_mb)

    def end_episode(last):
        t, future = time.perf_counter(), writer.end_episode(Outcome.SUCCESS)
        # resolved on the writer thread: the latency is measured without blocking the loop on it
        future.add_done_callback(lambda f, t=t: commits.append(time.perf_counter() - t))
        if not last:
            writer.begin_episode(info)

    writer.begin_episode(info)
    r = run_loop(frames, ticks, per_episode, writer.add_step, end_episode, watch)
    t = time.perf_counter()
    writer.close()  # the backlog left when the loop stops
    r["drain_s"] = round(time.perf_counter() - t, 2)
    r.update(dropped_frames=writer.stats.dropped_frames, max_queued_mb=round(queued[0], 1),
             commit_ms=[round(1000 * c) for c in commits])
    r.update(on_disk(path, r))
    problems = validate(path)
    ends = committed_ends(open_root(path)["meta"]["episode_ends"][:])
    r.update(committed_steps=int(ends[-1]) if len(ends) else 0, episodes=len(ends),
             valid=not problems, problems=[str(p) for p in problems[:5]])
    return r


def mode_naive(path: Path, frames: dict, ticks: int, per_episode: int) -> dict:
    path.mkdir(parents=True)
    root = create_store(path, SCHEMA, task="bench")  # the same arrays, chunks and codecs as the writer's
    specs = SCHEMA.arrays()
    arrays = {k: root["data"][k] for k in specs}
    ends = root["meta"]["episode_ends"]
    count = [0]

    def add(step):
        for key, arr in arrays.items():
            arr.append(np.asarray(step.get(key, specs[key].fill), dtype=arr.dtype)[None])
        count[0] += 1

    def end_episode(last):
        ends.append(np.array([count[0]], dtype=np.int64))

    r = run_loop(frames, ticks, per_episode, add, end_episode)
    r.update(on_disk(path, r))
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per mode (default 60)")
    parser.add_argument("--episode-s", type=float, default=20.0, help="episode length, s (default 20)")
    parser.add_argument("--out", type=Path, help="scratch directory (default: a temp dir, removed)")
    args = parser.parse_args()
    ticks, per_episode = round(args.duration * FPS), max(1, round(args.episode_s * FPS))
    out = args.out or Path(tempfile.mkdtemp(prefix="recorder_"))
    try:
        t = time.perf_counter()
        clean = render_frames(N_FRAMES)
        frames = {c: add_noise(f, seed=i + 1) for i, (c, f) in enumerate(clean.items())}
        print(f"rendered {N_FRAMES} noisy frames x {len(CAMERAS)} cameras in {time.perf_counter() - t:.1f} s",
              file=sys.stderr)
        writer = mode_writer(out / "writer.zarr", frames, ticks, per_episode)
        naive = mode_naive(out / "naive.zarr", frames, ticks, per_episode)
        writer, naive = ({k: v for k, v in r.items() if not k.startswith("_")} for r in (writer, naive))
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)

    cols = ("p50_ms", "p99_ms", "max_ms", "late_p50_ms", "late_p99_ms", "missed_ticks", "wall_s", "cpu_pct",
            "raw_mb_s", "disk_mb_s", "ratio")
    print(f"{'mode':<7}" + "".join(f"{c:>13}" for c in cols), file=sys.stderr)
    for name, r in (("writer", writer), ("naive", naive)):
        print(f"{name:<7}" + "".join(f"{r[c]:>13}" for c in cols), file=sys.stderr)
    print(f"writer: dropped_frames {writer['dropped_frames']}, max queued {writer['max_queued_mb']} MB, "
          f"commit ms {writer['commit_ms']}, drain {writer['drain_s']} s, committed {writer['committed_steps']}"
          f"/{ticks} steps in {writer['episodes']} episodes, valid {writer['valid']}", file=sys.stderr)
    met = (writer["dropped_frames"] <= TARGET["dropped_frames"] and writer["p99_ms"] < TARGET["p99_ms"]
           and writer["valid"] and writer["committed_steps"] == ticks)
    print(json.dumps({"duration_s": args.duration, "fps": FPS, "cameras": list(CAMERAS),
                      "frame_shape": [HEIGHT, WIDTH, 3], "writer": writer, "naive": naive, "target": TARGET,
                      "met": met}), flush=True)


if __name__ == "__main__":
    main()
