"""`pld-robot learn STORE... --out DIR`: the residual learner, until Ctrl-C (or SIGTERM, or --max-updates)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from pld_robot.config import ConfigError, from_dict, load_node_params
from pld_robot.stop_signals import stop_requested


def add_parser(sub: argparse._SubParsersAction) -> None:
    learn = sub.add_parser("learn", help="train the residual actor from episode stores as robots record them")
    learn.add_argument("stores", nargs="+", metavar="STORE",
                       help="episode store(s) to tail; one that does not exist yet is waited for")
    learn.add_argument("--out", required=True,
                       help="run folder: actor-<version>.safetensors (the residual node loads them), agent.pt, "
                            "metrics.csv, learning.png")
    learn.add_argument("--config", help="residual SAC YAML (default: the shipped config/rl/residual_sac.yaml)")
    learn.add_argument("--learner-config", help="learner YAML (default: the shipped config/rl/learner.yaml)")
    learn.add_argument("--robot-config", help="the robot's graph YAML; its arm_node.arm.action gives the action "
                                              "bounds (default: the Franka end-effector deltas of config/franka.yaml)")
    learn.add_argument("--device", help="cpu, cuda or cuda:N (default: the learner config's, cpu)")
    learn.add_argument("--resume", action="store_true", help="continue the run saved in --out (its agent.pt)")
    learn.add_argument("--max-updates", type=int, help="stop once the agent has made this many critic updates in all")
    learn.add_argument("--quiet", action="store_true", help="no progress line")
    learn.set_defaults(func=_learn)


def robot_action_spec(path: str | Path):
    """The ActionSpec in a robot graph YAML (arm_node's `arm.action`, as config/franka.yaml has it)."""
    from pld_robot.robots.action_spec import ActionSpec

    action = load_node_params(path, "arm_node").get("arm", {}).get("action")
    if action is None:
        raise ConfigError(f"{path}: no arm_node.ros__parameters.arm.action section (the robot's ActionSpec)")
    return from_dict(ActionSpec, action, where=f"{path}: arm_node.arm.action")


def _learn(args: argparse.Namespace) -> int:
    from pld_robot.paths import shipped_config
    from pld_robot.rl.config import load_rl_config
    from pld_robot.rl.learner import Learner, load_learner_config

    rl_config = load_rl_config(args.config or shipped_config("rl/residual_sac.yaml"))
    config = load_learner_config(args.learner_config or shipped_config("rl/learner.yaml"))
    overrides = {k: v for k, v in (("device", args.device), ("max_updates", args.max_updates)) if v is not None}
    try:
        config = dataclasses.replace(config, **overrides)
    except ValueError as exc:
        raise ConfigError(f"command line: {exc}") from exc
    spec = robot_action_spec(args.robot_config) if args.robot_config else None
    try:
        with stop_requested() as stop:
            learner = Learner(args.stores, args.out, rl_config, config, action_spec=spec, resume=args.resume,
                              progress=not args.quiet)
            print(f"pld-robot learn: {len(args.stores)} store(s) -> {args.out} on {config.device}; "
                  "Ctrl-C saves and stops (twice: stop without saving)", flush=True)
            summary = learner.run(stop)
    except ConfigError:
        raise
    except ValueError as exc:  # data the config cannot take (e.g. a replay capacity beyond this machine's memory)
        print(f"pld-robot learn: {exc}", file=sys.stderr)
        return 2
    t = summary["transitions"]
    print(f"{summary['episodes']} episode(s), {summary['recorded_steps']} steps ({summary['skipped_episodes']} "
          f"unreadable episode(s) skipped); transitions: {t['online']} online, {t['intervention']} intervention, "
          f"{t['offline']} offline, {t['probe']} probe steps left out; {summary['critic_updates']} critic updates; "
          f"actor version {summary['actor_version']} in {args.out}")
    return 0
