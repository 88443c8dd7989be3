"""The rollout loop in the sim lab: tick period jitter and frame-to-command latency at 10 and 30 Hz,
with the recorder running and two 640x480 cameras.

For each control rate the whole `pld-robot sim` graph runs (GraphRunner over config/sim.yaml, the
scripted base policy served from a child process, the sim lab in another, mode base, the simulated
operator resetting the cube and pressing START), with overrides: a private loopback address for the
sim lab and the arm per rate (127.0.0.71, .72), arm_node's action.control_hz and orchestrator_node's
control_hz at the rate, the sim cameras at `--width`x`--height` and `--fps` (default: the rate), the
recorded cameras at the same size, the scripted policy's action spec at the rate, and a store in a
temp dir. It runs `--duration` s from the first command, then until the episode under way is
committed (at most `--grace` s more), and stops.

A probe node in the graph's process records every /arm/command (header.stamp = the tick's time,
taken at tick start), the sim cameras' camera_info stamps (the frame's capture time: the joint-state
snapshot it is rendered from), /pld/episode/status and /arm/status. Then the store is read back with
EpisodeReader and each committed step is matched to its command (episode by episode, in order):

  tick jitter        |interval between consecutive commands of an episode - 1/rate|, from the
                     commands' header stamps (p50/p99/max ms); `late_ticks`: intervals > 1.5 periods
  frame-to-command   command stamp - the step's recorded `timestamp` (the observation's capture time:
                     the oldest of the cameras' frames and the arm pose), p50/p99/max ms
  loop_latency       as recorded: tick start to command sent (p50/p99/max ms)
  reused_obs         steps whose observation is the previous step's (no new frame since the last tick);
                     with a rate above the cameras' fps most steps reuse one
  cameras            achieved fps and capture-to-probe latency of each camera over the window
  dropped frames     from the store (the writer fell behind and repeated the previous frame)
  steps vs ticks     commands seen, steps committed, commands matched to committed steps

Each rate gets its own private DDS domain (231 or 232, see below) and a fresh graph. The sim renders its
cameras in a thread of the sim process, which shares its GIL and a core with the 1 kHz Python physics
loop and the camera publishers: on a small machine the cameras fall short of the fps asked for, and
`cameras.<name>.fps` says what they reached (compare `camera_fps_set`).

    python -m bench.rollout_loop [--duration 30] [--rates 10 30] [--fps F] [--width 640] [--height 480]
    python bench/rollout_loop.py      (same; a table on stderr, the last stdout line is one JSON object)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a file: make `pld_robot` and `bench` importable as `python -m` does
    sys.path.insert(0, str(REPO))

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
# A private DDS domain: other sessions on this machine run graphs with the same topic names, and the
# tests pick their domains at random from 2..230 (another orchestrator's /arm/command would drive this
# arm). 231 and 232 are the last valid ids, their ports above Linux's ephemeral range.
os.environ["ROS_DOMAIN_ID"] = os.environ.get("PLD_BENCH_DOMAIN_ID") or str(random.choice((231, 232)))

import numpy as np
import yaml
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from pld_robot.config import load_yaml
from pld_robot.data import EpisodeReader, validate
from pld_robot.nodes.image_msgs import from_time
from pld_robot.nodes.runner import GraphRunner
from pld_robot.paths import shipped_config
from pld_robot.policy.server_process import PolicyServerProcess

HOST_BASE = 71  # franky-sim binds fixed ports: a loopback address of its own per run, 127.0.0.71, .72, ...
CAMERAS = ("front", "wrist")  # config/sim.yaml's
LATE = 1.5  # an interval longer than this many periods is a late tick


def log(msg: str) -> None:
    print(f"[rollout_loop {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Probe(Node):
    """Everything the bench needs from the graph's topics, stamped on arrival."""

    def __init__(self):
        super().__init__("rollout_loop_probe")
        self._lock = threading.Lock()
        self.commands: list[tuple[float, float]] = []  # (header stamp, wall time received)
        self.frames: dict[str, list[tuple[float, float]]] = {c: [] for c in CAMERAS}  # (capture stamp, received)
        self.status: dict | None = None
        self.states: list[str] = []  # orchestrator states, in order, without repeats
        self.faults: dict[str, int] = {}  # fault text -> status messages (2 Hz) showing it
        self.oldest_obs_s = 0.0  # the oldest observation a stale-observation fault reported
        self.tick_ms_max = 0.0
        self.arm_errors: dict[str, int] = {}
        self.watchdog_stops = 0
        self.create_subscription(JointTrajectory, "/arm/command", self._on_command, 100)
        for camera in CAMERAS:
            self.create_subscription(CameraInfo, f"/camera/{camera}/color/camera_info", self._on_frame(camera),
                                     qos_profile_sensor_data)
        self.create_subscription(String, "/pld/episode/status", self._on_status, 10)
        self.create_subscription(DiagnosticStatus, "/arm/status", self._on_arm_status, 10)

    def _on_command(self, msg: JointTrajectory) -> None:
        received = time.time()
        with self._lock:
            self.commands.append((from_time(msg.header.stamp), received))

    def _on_frame(self, camera: str):
        def callback(msg: CameraInfo) -> None:
            received = time.time()
            with self._lock:
                self.frames[camera].append((from_time(msg.header.stamp), received))
        return callback

    def _on_status(self, msg: String) -> None:
        status = json.loads(msg.data)
        with self._lock:
            self.status = status
            if not self.states or self.states[-1] != status["state"]:
                self.states.append(status["state"])
            if status["fault"]:  # "observation 0.6 s old (...)": one entry for every age, the oldest kept
                fault = re.sub(r"\d+(\.\d+)? s old", "N s old", status["fault"])
                self.faults[fault] = self.faults.get(fault, 0) + 1
                if age := re.search(r"(\d+(\.\d+)?) s old", status["fault"]):
                    self.oldest_obs_s = max(self.oldest_obs_s, float(age.group(1)))
            self.tick_ms_max = max(self.tick_ms_max, status["tick_ms_max"])

    def _on_arm_status(self, msg: DiagnosticStatus) -> None:
        with self._lock:
            if msg.level >= DiagnosticStatus.ERROR:
                self.arm_errors[msg.message] = self.arm_errors.get(msg.message, 0) + 1
            for kv in msg.values:
                if kv.key == "watchdog_stops":
                    self.watchdog_stops = max(self.watchdog_stops, int(kv.value or 0))

    def snapshot(self) -> dict:
        with self._lock:
            return {"commands": list(self.commands), "frames": {c: list(f) for c, f in self.frames.items()},
                    "status": self.status, "states": list(self.states), "faults": dict(self.faults),
                    "oldest_obs_s": self.oldest_obs_s,
                    "tick_ms_max": self.tick_ms_max, "arm_errors": dict(self.arm_errors),
                    "watchdog_stops": self.watchdog_stops}


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of a process (all its threads); None: this process."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(a, q) -> float | None:
    a = np.asarray(a, dtype=float)
    return round(float(np.percentile(a, q)), 2) if a.size else None


def dist(ms) -> dict:
    ms = np.asarray(ms, dtype=float)
    return {"p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99), "max_ms": round(float(ms.max()), 2) if ms.size else None,
            "n": int(ms.size)}


def policy_config(rate: float, path: Path) -> Path:
    """The shipped scripted policy, its action spec at `rate` (chunks are timed at the spec's rate)."""
    data = load_yaml(shipped_config("policies/scripted.yaml"))
    data["action"] = {**data.get("action", {}), "control_hz": rate}
    path.write_text(yaml.safe_dump(data))
    return path


def run_rate(rate: float, host: str, args, scratch: Path) -> dict:
    fps = args.fps or rate
    store = scratch / f"rollout_{rate:g}hz.zarr"
    cams = {c: {"width": args.width, "height": args.height, "fps": float(fps)} for c in CAMERAS}
    overrides = {
        "sim_node": {"lab": {"host": host, "cameras": cams}},
        "arm_node": {"arm": {"host": host, "action": {"control_hz": float(rate)}}},
        "orchestrator_node": {"mode": "base", "store": str(store), "control_hz": float(rate),
                              "max_steps": args.max_steps,
                              "cameras": {c: [args.height, args.width] for c in CAMERAS}},
    }
    load0 = os.getloadavg()
    log(f"{rate:g} Hz: sim at {host}, cameras {args.width}x{args.height} at {fps:g} fps, store {store}")
    started = time.monotonic()
    with PolicyServerProcess("scripted", config=policy_config(rate, scratch / f"scripted_{rate:g}hz.yaml")) as server:
        overrides["policy_node"] = {"server_url": server.url}
        with GraphRunner(shipped_config("sim.yaml"), overrides=overrides) as graph:
            probe = graph.add_node(Probe())
            deadline = time.monotonic() + args.startup_timeout
            while not probe.snapshot()["commands"]:  # the lab starts, the arm homes, the operator presses START
                graph.check_children()
                if time.monotonic() > deadline:
                    s = probe.snapshot()
                    raise RuntimeError(f"{rate:g} Hz: no /arm/command within {args.startup_timeout:.0f} s "
                                       f"(states {s['states']}, faults {s['faults']})")
                time.sleep(0.1)
            first = time.monotonic()
            pids = {"main": None, "sim_node": graph.children["sim_node"].pid, "policy_server": server.process.pid}
            cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
            log(f"{rate:g} Hz: first command {first - started:.1f} s after start; running {args.duration:g} s")
            while time.monotonic() - first < args.duration:
                graph.check_children()
                time.sleep(0.2)
            # let the episode under way commit, so most of the window is in the store
            grace_end = time.monotonic() + args.grace
            while (s := probe.snapshot()["status"]) and s["state"] == "running" and time.monotonic() < grace_end:
                graph.check_children()
                time.sleep(0.1)
            time.sleep(1.0)  # the commit and the status after it
            window = time.monotonic() - first
            cpu = {name: round(100 * (cpu_seconds(pid) - cpu0[name]) / window) for name, pid in pids.items()}
            snap = probe.snapshot()
            orchestrator = graph.nodes["orchestrator_node"]
            summary = orchestrator.summary()
    load1 = os.getloadavg()
    log(f"{rate:g} Hz: {summary}")
    result = analyse(rate, store, snap)
    result.update(host=host, window_s=round(window, 1), cpu_pct=cpu, loadavg_start=[round(x, 2) for x in load0],
                  loadavg_end=[round(x, 2) for x in load1], camera_size=[args.height, args.width],
                  camera_fps_set=float(fps))
    return result


def analyse(rate: float, store: Path, snap: dict) -> dict:
    period = 1.0 / rate
    reader = EpisodeReader(store)
    commands = np.array([c[0] for c in snap["commands"]])
    received = np.array([c[1] for c in snap["commands"]])
    offset = 0
    jitter, intervals, f2c, loop, recv_jitter, publish_ms = [], [], [], [], [], []
    reused = steps = dropped = 0
    mismatched = 0
    episodes = []
    for e in range(reader.num_episodes):
        info = reader.info(e)
        data = reader.episode(e, keys=["timestamp", "loop_latency", "dropped"])
        n = len(data["timestamp"])
        cmd = commands[offset:offset + n]
        rcv = received[offset:offset + n]
        offset += n
        steps += n
        dropped += sum(int(d).bit_count() for d in data["dropped"])
        ts = data["timestamp"]
        if len(cmd) < n:
            mismatched += n - len(cmd)
            ts = ts[:len(cmd)]
        lat = cmd - ts
        if (lat < 0).any() or (lat > 5.0).any():  # a command before its observation: the match is off
            mismatched += int(((lat < 0) | (lat > 5.0)).sum())
        f2c += list(1e3 * lat)
        loop += list(1e3 * data["loop_latency"])
        d = np.diff(cmd)
        intervals += list(1e3 * d)
        jitter += list(1e3 * np.abs(d - period))
        recv_jitter += list(1e3 * np.abs(np.diff(rcv) - period))
        publish_ms += list(1e3 * (rcv - cmd))
        reused += int((np.diff(data["timestamp"]) == 0).sum())
        episodes.append({"steps": n, "outcome": info.outcome, "dropped_frames": info.dropped_frames,
                         "duration_s": round(float(info.duration_s), 2),
                         "unanswered": int(info.extra.get("unanswered_commands", 0))})
    intervals = np.asarray(intervals)
    cams = {}
    for camera, frames in snap["frames"].items():
        stamps = np.array([f[0] for f in frames])
        arrive = np.array([f[1] for f in frames])
        if len(commands):  # the measurement window: first to last command
            keep = (stamps >= commands[0]) & (stamps <= commands[-1])
            stamps, arrive = stamps[keep], arrive[keep]
        span = stamps[-1] - stamps[0] if len(stamps) > 1 else 0.0
        cams[camera] = {"fps": round((len(stamps) - 1) / span, 2) if span > 0 else 0.0,
                        "frame_interval_p99_ms": pct(1e3 * np.diff(stamps), 99),
                        "capture_to_probe_ms": {k: v for k, v in dist(1e3 * (arrive - stamps)).items() if k != "n"}}
    status = snap["status"] or {}
    problems = validate(store)
    return {
        "control_hz": rate,
        "episodes": len(episodes), "outcomes": [e["outcome"] for e in episodes],
        "episode_steps": [e["steps"] for e in episodes],
        "ticks": {"commands_seen": len(commands), "steps_committed": steps,
                  "commands_after_last_commit": len(commands) - offset, "unmatched_steps": mismatched,
                  "expected_per_s": rate,
                  "mean_interval_ms": round(float(intervals.mean()), 2) if intervals.size else None},
        "tick_jitter": {**dist(jitter), "late_ticks": int((intervals > LATE * 1e3 * period).sum())},
        "tick_jitter_at_probe": {k: v for k, v in dist(recv_jitter).items() if k != "n"},
        "tick_to_probe": {k: v for k, v in dist(publish_ms).items() if k != "n"},
        "frame_to_command": dist(f2c),
        "loop_latency": dist(loop),
        "reused_obs": reused, "reused_obs_frac": round(reused / max(1, steps - len(episodes)), 3),
        "dropped_frames": dropped, "store_valid": not problems, "store_problems": [str(p) for p in problems[:3]],
        # orchestrator_node records its session's running total in each episode: the last one is the total
        "unanswered_commands": max((e["unanswered"] for e in episodes), default=0),
        "cameras": cams,
        "starved_ticks": status.get("starved_ticks"),
        "status_tick_ms_max": snap["tick_ms_max"],
        "faults": snap["faults"], "oldest_obs_in_fault_s": snap["oldest_obs_s"], "arm_errors": snap["arm_errors"],
        "watchdog_stops": snap["watchdog_stops"],
        "states": snap["states"][:40],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per rate from the first command")
    parser.add_argument("--rates", type=float, nargs="+", default=[10.0, 30.0], help="control rates, Hz")
    parser.add_argument("--fps", type=float, help="sim camera fps (default: the control rate)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--max-steps", type=int, default=200, help="episode step limit (default 200, as shipped)")
    parser.add_argument("--grace", type=float, default=20.0,
                        help="after --duration, wait at most this long for the running episode to commit")
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    parser.add_argument("--out", type=Path, help="keep the stores here (default: a temp dir, removed)")
    args = parser.parse_args()
    scratch = args.out or Path(tempfile.mkdtemp(prefix="rollout_loop_"))
    scratch.mkdir(parents=True, exist_ok=True)
    log(f"ROS_DOMAIN_ID {os.environ['ROS_DOMAIN_ID']}, load {os.getloadavg()}")
    results = []
    try:
        for i, rate in enumerate(args.rates):
            results.append(run_rate(float(rate), f"127.0.0.{HOST_BASE + i}", args, scratch))
    finally:
        if args.out is None:
            shutil.rmtree(scratch, ignore_errors=True)

    cols = (("rate", lambda r: f"{r['control_hz']:g} Hz"),
            ("fps_set", lambda r: f"{r['camera_fps_set']:g}"),
            ("cam_fps", lambda r: "/".join(f"{c['fps']:g}" for c in r["cameras"].values())),
            ("jit_p50", lambda r: r["tick_jitter"]["p50_ms"]), ("jit_p99", lambda r: r["tick_jitter"]["p99_ms"]),
            ("jit_max", lambda r: r["tick_jitter"]["max_ms"]), ("late", lambda r: r["tick_jitter"]["late_ticks"]),
            ("f2c_p50", lambda r: r["frame_to_command"]["p50_ms"]),
            ("f2c_p99", lambda r: r["frame_to_command"]["p99_ms"]),
            ("loop_p50", lambda r: r["loop_latency"]["p50_ms"]), ("loop_p99", lambda r: r["loop_latency"]["p99_ms"]),
            ("reused", lambda r: r["reused_obs_frac"]), ("dropped", lambda r: r["dropped_frames"]),
            ("steps/cmds", lambda r: f"{r['ticks']['steps_committed']}/{r['ticks']['commands_seen']}"),
            ("episodes", lambda r: r["episodes"]), ("starved", lambda r: r["starved_ticks"]))
    print(f"cameras {args.width}x{args.height}; jitter, latencies in ms; reused = share of steps without a new "
          "observation", file=sys.stderr)
    print(" ".join(f"{name:>11}" for name, _ in cols), file=sys.stderr)
    for r in results:
        print(" ".join(f"{get(r)!s:>11}" for _, get in cols), file=sys.stderr)
    for r in results:
        print(f"{r['control_hz']:g} Hz: CPU % of a core {r['cpu_pct']}, outcomes {r['outcomes']}, "
              f"faults {r['faults'] or 'none'}, arm errors {r['arm_errors'] or 'none'}, "
              f"watchdog stops {r['watchdog_stops']}, load {r['loadavg_start']} -> {r['loadavg_end']}", file=sys.stderr)
    print(json.dumps({"duration_s": args.duration, "cameras": list(CAMERAS),
                      "frame_shape": [args.height, args.width, 3], "fps_requested": args.fps or "= rate",
                      "units": "latencies and jitters in ms", "runs": {f"{r['control_hz']:g}hz": r for r in results}}),
          flush=True)


if __name__ == "__main__":
    main()
