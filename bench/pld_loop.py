"""The PLD loop in miniature in the fast sim (issue #8, part 3): does distilling on PLD data beat
distilling on the base policy's own successes?

One run of `pld-robot pld-sim` (pld_robot/pld_sim/pipeline.py): a small PI0 generalist trained by SFT on
scripted demonstrations, residual SAC probing it, N successful hybrid episodes and N successful
base-only episodes collected on the same env seeds, and the generalist distilled on each with the
same SFT budget. Reported: the success rate of the generalist, the PLD-data student and the
base-only-data student on the same held-out seeds (the paper's comparison), also by the cube's pose;
where each store's episodes close the hand (grasp_x_offset_mm); and each stage's wall time.

    python bench/pld_loop.py [--out bench/out/pld_loop] [--episodes N] [--demos N] [--probe-steps N] ...
(stage and progress lines on stderr, one JSON object on stdout and in OUT/pld_loop.json, the bar chart in
OUT/pld_loop.png)
A stopped run continues when started again with the same --out and sizes.
"""

from __future__ import annotations

import argparse
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
from pld_robot.pld_sim.cli import OVERRIDES, StatusLine
from pld_robot.pld_sim.config import load_pld_sim_config, with_overrides
from pld_robot.pld_sim.episodes import STATE_NAMES
from pld_robot.pld_sim.pipeline import run_pld_sim

LABELS = {"generalist": "generalist\n(SFT on demos)", "student_pld": "distilled on\nPLD episodes",
          "student_base": "distilled on\nbase-only episodes"}


def plot(result: dict, path: Path) -> None:
    """Bars: each policy's success rate on all held-out seeds and on each group of them by cube pose."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {f"all {result['eval_episodes']}": {"episodes": result["eval_episodes"], **result["success_rate"]},
              **(result.get("success_rate_by_cube_pose") or {})}
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(LABELS)
    for p, (policy, color) in enumerate(zip(LABELS, ["grey", "tab:green", "tab:blue"])):
        rates = [group[policy] or 0.0 for group in groups.values()]
        bars = ax.bar([g + (p - 1) * width for g in range(len(groups))], rates, width, color=color,
                      label=LABELS[policy].replace("\n", " "))
        for bar, rate in zip(bars, rates):
            ax.text(bar.get_x() + bar.get_width() / 2, rate + 0.02, f"{rate:.2f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(groups)), [f"{name}\n({group['episodes']} seeds)" if not name.startswith("all") else name
                                       for name, group in groups.items()])
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("success rate (held-out seeds)")
    ax.set_title(f"PLD in the fast sim: N = {result['n_episodes']['pld']} PLD / {result['n_episodes']['base']} "
                 f"base-only episodes,\ndistill {result['distill_steps']} steps x {result['distill_batch_size']} "
                 f"each; probe {result['probe_env_steps']} env steps", fontsize=10)
    ax.legend(loc="upper left", fontsize=8, ncol=3)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def grasp_x_offset_mm(store: Path) -> dict:
    """Where the stored episodes close the hand: TCP x minus cube x (mm) at the first step the
    gripper narrows. The demonstrations' expert aims demos.cube_offset off; a residual that corrects
    it moves this towards 0, and filtered behaviour cloning learns whatever its episodes show."""
    reader, offsets = EpisodeReader(store), []
    x, width, cube_x = (STATE_NAMES.index(name) for name in ("x", "gripper_width", "cube_x"))
    for e in range(reader.num_episodes):
        state = reader.episode(e, ["state"])["state"]
        closing = np.flatnonzero(np.diff(state[:, width]) < -0.002)
        t = int(closing[0]) if len(closing) else len(state) - 1
        offsets.append(1000 * (state[t, x] - state[t, cube_x]))
    return {"mean": round(float(np.mean(offsets)), 1), "std": round(float(np.std(offsets)), 1),
            "episodes": len(offsets)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out/pld_loop"))
    parser.add_argument("--config", type=Path, default=None, help="default: config/pld_sim/pick_cube.yaml")
    for option, field, what in OVERRIDES:
        parser.add_argument(option, type=int, dest=field, metavar="N", help=what)
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(1)  # measured on a shared 2-core machine: one thread, as the residual benchmark
    config_path = args.config or shipped_config("pld_sim/pick_cube.yaml")
    overrides = {field: getattr(args, field) for _, field, _ in OVERRIDES if getattr(args, field) is not None}
    config = with_overrides(load_pld_sim_config(config_path), overrides)
    say = lambda line: print(line, file=sys.stderr, flush=True)
    result = run_pld_sim(args.out / "run", config, say=say, status=StatusLine())
    png = args.out / "pld_loop.png"
    plot(result, png)
    rates = result["success_rate"]
    emit({"benchmark": "pld_loop", **machine_context(("torch", "transformers", "mujoco")),
          "config": str(config_path), "overrides": overrides, **result,
          "pld_minus_base": round(rates["student_pld"] - rates["student_base"], 4),
          "grasp_x_offset_mm": {name: grasp_x_offset_mm(args.out / "run" / f"{name}.zarr")
                                for name in ("demos", "pld_episodes", "base_episodes")}, "png": str(png)},
         started, args.out / "pld_loop.json")


if __name__ == "__main__":
    main()
