"""The live residual's timing in the robot loop, on rclpy's MultiThreadedExecutor and on ours.

The graph of tests/test_residual_node.py: the orchestrator in hybrid mode in this process (as
`pld-robot sim` runs it), residual_node with an exported actor in a child process (as `ros2 launch`
starts it), and that test's fake lab (arm, a 32x32 camera, the base's chunks, the START button). Each
executor gets a fresh graph and store and `--seconds` of episodes after a warm-up; one run, side by side.

Per executor: the graph process's CPU (cores), the control tick's latency (observation -> command,
recorded per step), the share of residual ticks answered within the orchestrator's 30 ms deadline, and
the request -> reply time of the residual. nodes/executor.py says why the two differ.

    python bench/residual_loop.py [--seconds 25]     (one JSON object on stdout)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the fake lab and graph of the residual test
os.environ["ROS_DOMAIN_ID"] = os.environ.get("PLD_BENCH_DOMAIN_ID", "231")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(ROOT / "config" / "fastdds.xml"))

import numpy as np  # noqa: E402
import rclpy.executors  # noqa: E402
import test_residual_node as residual_test  # noqa: E402

import pld_robot.nodes.executor  # noqa: E402
from pld_robot.data import EpisodeReader  # noqa: E402
from pld_robot.nodes import runner  # noqa: E402
from pld_robot.rl.checkpoint import export_actor  # noqa: E402

EXECUTORS = {"rclpy": rclpy.executors.MultiThreadedExecutor, "ours": pld_robot.nodes.executor.MultiThreadedExecutor}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(executor_cls, seconds: float, folder: Path) -> dict:
    runner.MultiThreadedExecutor = executor_cls  # the graph runner's executor
    actors = folder / "actors"
    export_actor(residual_test.make_agent(seed=1), actors)
    with runner.GraphRunner(residual_test._graph_yaml(folder, actors), processes=("residual_node",)) as graph:
        lab = graph.add_node(residual_test.FakeLab())
        deadline = time.monotonic() + 60
        while not lab.residual_status and time.monotonic() < deadline:
            time.sleep(0.1)
        if not lab.residual_status:
            raise RuntimeError("residual_node did not start within 60 s")
        lab.pressing = True
        time.sleep(3.0)  # the first episode begins and the actor is loaded
        first = EpisodeReader(folder / "episodes.zarr").num_episodes if (folder / "episodes.zarr").exists() else 0
        cpu, start = cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        cores = (cpu_seconds() - cpu) / (time.monotonic() - start)
        with lab.lock:
            status = dict(lab.status)
    reader = EpisodeReader(folder / "episodes.zarr")
    episodes = range(first + 1, reader.num_episodes)  # begun inside the window, ended before the graph stopped
    if not episodes:
        raise RuntimeError(f"no whole episode in {seconds} s: the loop did not run")
    latency = np.concatenate([reader.episode(i)["loop_latency"] for i in episodes]) * 1e3
    applied = sum(reader.info(i).extra["residual_applied"] for i in episodes)
    missing = sum(reader.info(i).extra["residual_missing"] for i in episodes)
    return {"graph_cpu_cores": round(cores, 2), "episodes": len(episodes), "ticks": int(latency.size),
            "tick_ms_p50": round(float(np.percentile(latency, 50)), 1),
            "tick_ms_p99": round(float(np.percentile(latency, 99)), 1), "tick_ms_max": round(float(latency.max()), 1),
            "residual_in_time": round(applied / max(1, applied + missing), 3),
            "residual_reply_ms_p50": status.get("residual_ms_p50"), "residual_reply_ms_p99": status.get("residual_ms_p99")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=25.0, help="measured per executor, after a warm-up")
    args = parser.parse_args()
    results = {}
    for name, executor_cls in EXECUTORS.items():
        with tempfile.TemporaryDirectory(prefix=f"pld-residual-loop-{name}-") as folder:
            results[name] = measure(executor_cls, args.seconds, Path(folder))
        print(f"[{name}] {results[name]}", file=sys.stderr)
    print(json.dumps({"bench": "residual_loop", "seconds": args.seconds, "deadline_ms": residual_test.DEADLINE_S * 1e3,
                      **results}))


if __name__ == "__main__":
    main()
