"""The `pld-robot` command."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys

from pld_robot.config import ConfigError
from pld_robot.data import episodes_cli
from pld_robot.policy import serve_cli


DEFAULT_SIM_STORE = "pld_data/sim_pick_cube.zarr"


def _sim(args: argparse.Namespace) -> int:
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    from pld_robot.data import CameraSpec, EpisodeWriter, StoreSchema
    from pld_robot.nodes.observation import EE_STATE_NAMES
    from pld_robot.nodes.runner import GraphRunner
    from pld_robot.nodes.scripted_pickup import ScriptedPickUpNode
    from pld_robot.paths import shipped_config

    config = args.config or shipped_config("sim.yaml")
    print(f"pld-robot sim: {args.episodes} episode(s) of scripted pick-up, config {config}", flush=True)
    results = []
    with GraphRunner(config) as graph, contextlib.ExitStack() as stack:
        arm, lab = graph.configs["arm_node"].arm, graph.configs["sim_node"].lab
        writer = None
        if args.store:
            schema = StoreSchema({n: CameraSpec(c.height, c.width) for n, c in lab.cameras.items()},
                                 EE_STATE_NAMES, arm.action.names, arm.action.control_hz)
            writer = stack.enter_context(EpisodeWriter.open(args.store, schema, task="sim pick up the cube"))
            print(f"recording into {args.store}", flush=True)
        driver = graph.add_node(ScriptedPickUpNode(arm.action, lab.lift_height, lab.cube_size, writer))
        try:
            driver.wait_for_inputs()
            for i in range(args.episodes):
                r = driver.run_episode(i, args.max_steps)
                results.append(r)
                recorded = f"  -> episode {r.recorded_as}" if r.recorded_as is not None else ""
                print(f"episode {i + 1}/{args.episodes}: {'lifted' if r.lifted else 'NOT lifted'}  "
                      f"{r.duration_s:5.1f} s  {r.steps} steps  cube z={r.cube_height:.3f} m{recorded}", flush=True)
        except RuntimeError as exc:
            graph.check_children(exc)  # a dead sim explains a silent graph better than the timeout
            raise
    lifted = sum(r.lifted for r in results)
    print(f"success rate: {lifted}/{len(results)} ({100 * lifted / max(1, len(results)):.0f}%)")
    if writer:
        print(f"store: {args.store} ({writer.stats.episodes_committed} episode(s) committed, "
              f"{writer.stats.dropped_frames} frame(s) dropped); look: pld-robot episodes view {args.store} -1")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pld-robot", description="PLD (Probe, Learn, Distill) on a real arm")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("sim", help="run the sim lab graph with a scripted pick-up")
    sim.add_argument("--episodes", type=int, default=3, help="number of episodes (default 3)")
    sim.add_argument("--max-steps", type=int, default=200, help="step limit per episode (default 200)")
    sim.add_argument("--config", help="robot YAML (default: the shipped config/sim.yaml)")
    sim.add_argument("--store", default=DEFAULT_SIM_STORE,
                     help=f"episode store to record into, created if missing (default {DEFAULT_SIM_STORE}); "
                          "'' records nothing")
    sim.set_defaults(func=_sim)
    episodes_cli.add_parser(sub)
    serve_cli.add_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for chatty in ("franky_sim", "OpenGL"):  # per-command protocol chatter drowns the episode lines
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
