"""Is the PLD loop's comparison (bench/pld_loop.py) more than which N episodes it happened to draw?

One `pld-robot pld-sim` run that collects K x N successful episodes of each kind (its own two
students are distilled on all of them), then a pair of students on each of K disjoint draws of N
episodes: draw k is episodes kN .. kN + N - 1 of each store, so draw 0 is what a run with N would
have collected. Every student starts from the same generalist with the same config and budget and
is evaluated on the same held-out seeds. Reported: each draw's two success rates, the mean
difference (PLD minus base-only) and its standard error.

    python bench/pld_draws.py [--out bench/out/pld_draws] [--n 10] [--draws 4]
(progress on stderr, one JSON object on stdout and in OUT/pld_draws.json; about 35 minutes on 2 cores)
A stopped run continues when started again with the same --out and sizes.
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
os.environ.setdefault("MUJOCO_GL", "osmesa")  # before mujoco is imported: no display here

import numpy as np
import torch

from bench._context import emit, machine_context
from pld_robot.data import EpisodeReader
from pld_robot.paths import shipped_config
from pld_robot.pld_sim import stages
from pld_robot.pld_sim.cli import StatusLine
from pld_robot.pld_sim.config import PLDSimConfig, load_pld_sim_config, with_overrides
from pld_robot.pld_sim.episodes import open_store, write_episode
from pld_robot.pld_sim.pipeline import run_pld_sim
from pld_robot.pld_sim.sft import run_sft
from pld_robot.rl.sim_loop import Episode
from pld_robot.sim.fast_env import FastEnvConfig, PickCubeEnv

STORES = {"pld": "pld_episodes.zarr", "base": "base_episodes.zarr"}


def copy_episodes(source: Path, episodes: range, dest: Path, env: PickCubeEnv) -> None:
    """Successful episodes of `source` into a new store at `dest`."""
    reader = EpisodeReader(source)
    keys = [key for key in reader.keys if key != "dropped"]  # the writer keeps that record itself
    with open_store(dest, env) as writer:
        for i in episodes:
            write_episode(writer, Episode(reader.episode(i, keys), success=True), reader.info(i))


def draw(run: Path, out: Path, k: int, n: int, config: PLDSimConfig, env: PickCubeEnv) -> dict:
    """Draw k's two success rates, from its record if an earlier run finished it."""
    out.mkdir(parents=True, exist_ok=True)
    record = out / f"draw_{k}.json"
    if record.is_file():
        return json.loads(record.read_text())
    row = {"draw": k, "episodes": [k * n, (k + 1) * n - 1]}
    for kind, store in STORES.items():
        data, student = out / f"{kind}_{k}.zarr", out / f"student_{kind}_{k}"
        if not data.is_dir():
            copy_episodes(run / store, range(k * n, (k + 1) * n), data, env)
        if not (student / "model.safetensors").is_file():
            run_sft([data], run / "generalist", student, config.distill, stats="base", seed=config.seed,
                    progress=False)
        evaluation = stages.evaluate(env, stages.load_base(student, config), config, StatusLine(), f"draw {k} {kind}")
        row[kind], row[f"{kind}_outcomes"] = evaluation["success_rate"], evaluation["outcomes"]
    record.write_text(json.dumps(row) + "\n")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out/pld_draws"))
    parser.add_argument("--config", type=Path, default=None, help="default: config/pld_sim/pick_cube.yaml")
    parser.add_argument("--n", type=int, default=10, help="episodes per student in a draw")
    parser.add_argument("--draws", type=int, default=4)
    args = parser.parse_args()
    if args.n < 1 or args.draws < 2:
        parser.error("--n must be >= 1 and --draws >= 2 (a standard error needs two)")
    started = time.perf_counter()
    torch.set_num_threads(1)  # as bench/pld_loop.py
    config_path = args.config or shipped_config("pld_sim/pick_cube.yaml")
    config = with_overrides(load_pld_sim_config(config_path), {"rollouts.episodes": args.n * args.draws})
    say = lambda line: print(line, file=sys.stderr, flush=True)
    whole = run_pld_sim(args.out / "run", config, say=say, status=StatusLine())
    if min(whole["n_episodes"].values()) < args.n * args.draws:
        raise SystemExit(f"the run collected {whole['n_episodes']} episodes, fewer than {args.n} x {args.draws}")
    env = PickCubeEnv(FastEnvConfig(max_steps=config.max_steps))
    try:
        rows = [draw(args.out / "run", args.out / "draws", k, args.n, config, env) for k in range(args.draws)]
    finally:
        env.close()
    differences = np.array([row["pld"] - row["base"] for row in rows])
    emit({"benchmark": "pld_draws", **machine_context(("torch", "transformers", "mujoco")),
          "config": str(config_path), "n": args.n, "eval_episodes": config.eval.episodes,
          "distill_steps": config.distill.steps, "whole_run": {"n": args.n * args.draws, **whole["success_rate"]},
          "draws": rows, "pld_mean": round(float(np.mean([r["pld"] for r in rows])), 4),
          "base_mean": round(float(np.mean([r["base"] for r in rows])), 4),
          "difference_mean": round(float(differences.mean()), 4),
          "difference_standard_error": round(float(differences.std(ddof=1) / np.sqrt(len(rows))), 4)},
         started, args.out / "pld_draws.json")


if __name__ == "__main__":
    main()
