"""The `pld-robot` command."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

from pld_robot.calibration import cli as calibration_cli
from pld_robot.config import ConfigError
from pld_robot.data import episodes_cli
from pld_robot.distill import cli as distill_cli
from pld_robot.pld_sim import cli as pld_sim_cli
from pld_robot.policy import serve_cli
from pld_robot.reward import cli as reward_cli
from pld_robot.rl import cli as rl_cli


def _sim(args: argparse.Namespace) -> int:
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    from pld_robot.config import load_node_params, load_yaml
    from pld_robot.nodes.runner import GraphRunner
    from pld_robot.nodes.status_line import StatusLine
    from pld_robot.paths import shipped_config
    from pld_robot.policy.server_process import PolicyServerProcess

    config = args.config or shipped_config("sim.yaml")
    given = {"mode": args.mode, "store": args.store, "max_steps": args.max_steps,
             "calibration": args.calibration}
    overrides = {"orchestrator_node": {k: v for k, v in given.items() if v is not None}}
    exclude = ("reward_node",)
    if args.reward is not None:  # the classifier judges success; the simulated person only labels frames
        exclude = ()
        overrides["sim_operator"] = {"play_reward": False}
        if args.reward:
            overrides["reward_node"] = {"checkpoints": [args.reward]}
    policy_config = Path(args.policy_config or shipped_config("policies/scripted.yaml"))
    if args.actors:
        overrides["residual_node"] = {"actors_dir": args.actors}
    if args.seed is not None:  # new cube poses and new policy imperfections, not a replay of seed 0
        overrides["sim_node"] = {"lab": {"seed": args.seed}}
        overrides["orchestrator_node"]["seed"] = args.seed
    rollout = {**load_node_params(config, "orchestrator_node"), **overrides["orchestrator_node"]}
    print(f"pld-robot sim: {args.episodes} {rollout['mode']} episode(s), config {config}, "
          f"recording into {rollout['store']}", flush=True)
    with contextlib.ExitStack() as stack:
        if rollout["mode"] == "teleop":
            exclude += ("policy_node",)  # the person acts: no base policy
        elif args.policy_url:  # served already, e.g. a distilled checkpoint to evaluate
            overrides["policy_node"] = {"server_url": args.policy_url}
            print(f"base policy served at {args.policy_url}", flush=True)
        else:
            if args.seed is not None:
                seeded = Path(stack.enter_context(tempfile.TemporaryDirectory())) / policy_config.name
                seeded.write_text(yaml.safe_dump({**load_yaml(policy_config), "seed": args.seed}))
                policy_config = seeded
            server = stack.enter_context(PolicyServerProcess("scripted", config=policy_config))
            overrides["policy_node"] = {"server_url": server.url}
            print(f"scripted base policy served at {server.url}", flush=True)
        graph = stack.enter_context(GraphRunner(config, overrides=overrides, exclude=exclude,
                                                processes=("sim_node", "reward_node", "residual_node")))
        status = graph.add_node(StatusLine())
        try:
            while status.episodes_done < args.episodes:
                graph.check_children()
                time.sleep(0.2)
        except RuntimeError as exc:
            graph.check_children(exc)
            raise
        summary = graph.nodes["orchestrator_node"].summary()
    print(summary)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pld-robot", description="PLD (Probe, Learn, Distill) on a real arm")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("sim", help="the whole PLD graph against the sim lab, with a simulated operator")
    sim.add_argument("--mode", choices=["base", "hybrid", "residual", "teleop"],
                     help="who acts (default: the config's orchestrator_node.mode, base in the shipped one)")
    sim.add_argument("--episodes", type=int, default=3, help="number of episodes (default 3)")
    sim.add_argument("--max-steps", type=int, help="step limit per episode (default: the config's, 200)")
    sim.add_argument("--config", help="graph YAML (default: the shipped config/sim.yaml)")
    sim.add_argument("--policy-config", help="scripted policy YAML (default: config/policies/scripted.yaml)")
    sim.add_argument("--store", help="episode store to record into, created if missing "
                                     "(default: the config's, pld_data/sim_pick_cube.zarr)")
    sim.add_argument("--seed", type=int, help="seed of the cube poses, the scripted policy and the probe prefixes "
                                              "(default: the configs', 0)")
    sim.add_argument("--reward", nargs="?", const="", metavar="CHECKPOINT",
                     help="end episodes by the success classifier (reward_node) instead of the ground truth; "
                          "CHECKPOINT defaults to the config's reward_node.checkpoints")
    sim.add_argument("--actors", metavar="DIR",
                     help="residual actor folder for --mode residual/hybrid (the learner's --out; "
                          "default: the config's residual_node.actors_dir)")
    sim.add_argument("--policy-url", metavar="URL",
                     help="base policy from this running server (pld-robot serve-policy) instead of the scripted one")
    sim.add_argument("--calibration", nargs="+", metavar="YAML",
                     help="calibration files (pld-robot calibrate) to store with every episode")
    sim.set_defaults(func=_sim)
    episodes_cli.add_parser(sub)
    serve_cli.add_parser(sub)
    reward_cli.add_parser(sub)
    rl_cli.add_parser(sub)
    distill_cli.add_parser(sub)
    pld_sim_cli.add_parser(sub)
    calibration_cli.add_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for chatty in ("franky_sim", "OpenGL", "httpx"):  # per-command protocol chatter drowns the episode lines
        logging.getLogger(chatty).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"pld-robot: config error: {exc}", file=sys.stderr)
        return 2
    except IndexError as exc:  # an episode or step that does not exist
        print(f"pld-robot: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # ArmFault, StoreError, a node that died, a service that never answered
        print(f"pld-robot: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
