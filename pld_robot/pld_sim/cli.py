"""`pld-robot pld-sim --out DIR`: the PLD loop in miniature in the fast sim (pipeline.py), end to end.

    pld-robot pld-sim --out runs/pld_sim                       # config/pld_sim/pick_cube.yaml's sizes
    pld-robot pld-sim --out runs/pld_sim_small --episodes 10 --demos 20 --probe-steps 2000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

OVERRIDES = (  # option, config field, help
    ("--max-steps", "max_steps", "steps per episode"),
    ("--demos", "demos.episodes", "successful scripted demonstrations to record"),
    ("--sft-steps", "generalist.sft.steps", "SFT steps of the generalist on the demonstrations"),
    ("--probe-steps", "probe.env_steps", "env steps of residual RL on the generalist"),
    ("--episodes", "rollouts.episodes", "N: successful hybrid episodes, and successful base-only ones"),
    ("--distill-steps", "distill.steps", "SFT steps of each student (the same for both)"),
    ("--eval-episodes", "eval.episodes", "held-out episodes per policy"),
    ("--seed", "seed", "seed of the demonstrations, networks, noise and probe prefixes"),
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pld-sim", help="PLD in miniature in the fast sim: demos -> PI0 generalist -> residual probe "
                                       "-> hybrid rollouts -> distilled students, evaluated")
    p.add_argument("--out", required=True, help="run folder; run again with the same --out to continue a stopped run")
    p.add_argument("--config", help="pld-sim YAML (default: the shipped config/pld_sim/pick_cube.yaml)")
    for option, field, what in OVERRIDES:
        p.add_argument(option, type=int, dest=field, metavar="N", help=f"{what} (default: the config's {field})")
    p.add_argument("--quiet", action="store_true", help="no progress lines within a stage")
    p.set_defaults(func=_pld_sim)


def _pld_sim(args: argparse.Namespace) -> int:
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    from pathlib import Path

    from pld_robot.paths import shipped_config
    from pld_robot.pld_sim.config import load_pld_sim_config, with_overrides
    from pld_robot.pld_sim.pipeline import RESULT_FILE, run_pld_sim

    config_path = args.config or shipped_config("pld_sim/pick_cube.yaml")
    overrides = {field: getattr(args, field) for _, field, _ in OVERRIDES if getattr(args, field) is not None}
    config = with_overrides(load_pld_sim_config(config_path), overrides)
    print(f"pld-robot pld-sim: config {config_path}{' with ' + str(overrides) if overrides else ''}; run folder "
          f"{args.out}", flush=True)
    status = StatusLine()
    result = run_pld_sim(Path(args.out), config, say=status.say, status=None if args.quiet else status)
    rates = result["success_rate"]
    print(f"success on {result['eval_episodes']} held-out seeds: generalist {rates['generalist']:.2f}, "
          f"distilled on {result['n_episodes']['pld']} PLD episodes {rates['student_pld']:.2f}, "
          f"on {result['n_episodes']['base']} base-only episodes {rates['student_base']:.2f} "
          f"({Path(args.out) / RESULT_FILE})")
    for group, r in (result["success_rate_by_cube_pose"] or {}).items():
        print(f"  cube {group} ({r['episodes']} seeds): generalist {r['generalist']}, PLD-data student "
              f"{r['student_pld']}, base-only-data student {r['student_base']}")
    print(json.dumps(rates))
    return 0


class StatusLine:
    """Progress within a stage on stderr: rewritten in place on a terminal, else a line every 10 s."""

    def __init__(self, every_s: float = 10.0):
        self.tty, self.every_s, self._last = sys.stderr.isatty(), every_s, 0.0

    def __call__(self, line: str) -> None:
        if self.tty:
            print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)
        elif time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            print(line, file=sys.stderr, flush=True)

    def say(self, line: str) -> None:
        """A line of its own on stdout, after clearing the status line."""
        if self.tty:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
        print(line, flush=True)
