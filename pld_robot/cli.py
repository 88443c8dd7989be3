"""The `pld-robot` command."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time

from pld_robot.config import ConfigError
from pld_robot.data import episodes_cli
from pld_robot.policy import serve_cli


DEFAULT_SIM_STORE = "pld_data/sim_pick_cube.zarr"


def _sim(args: argparse.Namespace) -> int:
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    from pld_robot.nodes.runner import GraphRunner
    from pld_robot.nodes.status_line import StatusLine
    from pld_robot.paths import shipped_config
    from pld_robot.policy.server_process import PolicyServerProcess

    config = args.config or shipped_config("sim.yaml")
    print(f"pld-robot sim: {args.episodes} {args.mode} episode(s), config {config}, recording into {args.store}",
          flush=True)
    overrides = {"orchestrator_node": {"mode": args.mode, "store": args.store, "max_steps": args.max_steps}}
    with contextlib.ExitStack() as stack:
        exclude = ()
        if args.mode == "teleop":
            exclude = ("policy_node",)  # the person acts: no base policy
        else:
            server = stack.enter_context(PolicyServerProcess("scripted", config=args.policy_config or
                                                             shipped_config("policies/scripted.yaml")))
            overrides["policy_node"] = {"server_url": server.url}
            print(f"scripted base policy served at {server.url}", flush=True)
        graph = stack.enter_context(GraphRunner(config, overrides=overrides, exclude=exclude))
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
    sim.add_argument("--mode", choices=["base", "hybrid", "residual", "teleop"], default="base",
                     help="who acts (default base: the scripted, imperfect base policy)")
    sim.add_argument("--episodes", type=int, default=3, help="number of episodes (default 3)")
    sim.add_argument("--max-steps", type=int, default=200, help="step limit per episode (default 200)")
    sim.add_argument("--config", help="graph YAML (default: the shipped config/sim.yaml)")
    sim.add_argument("--policy-config", help="scripted policy YAML (default: config/policies/scripted.yaml)")
    sim.add_argument("--store", default=DEFAULT_SIM_STORE,
                     help=f"episode store to record into, created if missing (default {DEFAULT_SIM_STORE})")
    sim.set_defaults(func=_sim)
    episodes_cli.add_parser(sub)
    serve_cli.add_parser(sub)
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
