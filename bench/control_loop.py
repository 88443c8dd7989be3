"""Control-loop benchmark in franky-sim: the Franka streaming methods at 10 and 30 Hz, and the camera node.

Each method of `pld_robot.robots.franka_streaming.STREAMERS` is driven as `FrankaArm` drives it: the
robot-wide dynamics factor at 1.0 (as `connect()` sets it), `STREAMERS[name](robot, period,
FrankaConfig().dynamics_factor)`, one `.send()` per tick of the absolute target that the driver's
safety filter makes of the action and the measured pose (through `_retry_preempted`), `.hold()` to stop.

- latency: at rest, the largest x step the filter allows, resent every tick (a policy holding one
  action); time from the first send to the first state > 0.5 mm along it, polled at ~1 kHz, in host
  time and in the sim's own clock (robot state `time`, which falls behind when the sim is slow). The
  first trial after each move to the start pose is a warm-up, not counted: franky-sim sometimes jumps
  ~0.7 mm on the first streamed command after a Cartesian pose motion.
- tracking: one lap of a 6 cm-radius circle in xy (3.5 s including 0.5 s speed ramps; 126 mm/s on the
  plateau = 63 % of the per-step bound at 10 Hz, 50 % at 30 Hz) with a +-0.3 rad yaw oscillation;
  each tick sends delta = reference one period ahead - measured pose. Error against the continuous
  reference at the ticks and at every ~1 kHz sample in between (a method that stops at every
  waypoint looks good at the ticks only). On the speed plateau, in the sim's clock: mean speed, RMS
  acceleration (a perfect tracker: v^2/r = 0.26 m/s^2), speed coefficient of variation, speed dips/s.

Methods are interleaved, their order rotating each round, because the machine is shared and noisy:
the chosen method (`FrankaConfig().streaming`) is compared with the best alternative within each
round. The camera node (640x480 rgb8 at 30 fps: Fast DDS default transports vs a 16 MiB shared-memory
segment, the transports of config/fastdds.xml) is measured after the sim has stopped.

    python -m bench.control_loop [--quick] [--out FILE] [--no-camera]   (last stdout line: one JSON)
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a file: make `pld_robot` and `bench` importable
    sys.path.insert(0, str(REPO))

import franky  # noqa: E402
import numpy as np  # noqa: E402

from pld_robot.robots.action_spec import ActionSpec  # noqa: E402
from pld_robot.robots.franka import (  # noqa: E402
    FrankaConfig, _keep_scheduling_policy, _retry_preempted, _wait_for_motion,
)
from pld_robot.robots.franka_streaming import STREAMERS  # noqa: E402
from pld_robot.robots.safety import EEDeltaSafetyFilter, SafetyLimits  # noqa: E402
from pld_robot.robots.transforms import matrix_to_rotvec, quat_to_matrix  # noqa: E402
from bench._context import emit, machine_context  # noqa: E402

RATES_HZ = (10.0, 30.0)
LATENCY_THRESHOLD_M, LATENCY_TIMEOUT_S = 0.0005, 1.0
START_POSITION = np.array([0.45, 0.0, 0.35])  # inside the default workspace box, away from its faces
START_QUAT = np.array([1.0, 0.0, 0.0, 0.0])  # [x, y, z, w]: the hand pointing down
RADIUS, LAP_S, RAMP_S, YAW_AMPLITUDE = 0.06, 3.0, 0.5, 0.3  # m; s for a lap at plateau speed; s; rad
SAMPLE_PERIOD = 0.001
GRID_S = 0.010  # resampling step for speed/acceleration: keeps < 50 Hz, drops 1 kHz polling jitter
DIP_FRACTION = 0.5  # a speed dip: a local speed minimum below this fraction of the mean speed


def log(msg: str) -> None:
    print(f"[control_loop {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the sim child ------------------------------------------------------------------------------
def serve_sim(host: str) -> None:
    """Child process: the sim lab without cameras, until killed or orphaned."""
    from pld_robot.sim.lab import SimLab, SimLabConfig

    parent = os.getppid()
    lab = SimLab(SimLabConfig(host=host, cameras={})).start()
    print("ready", flush=True)
    try:
        while os.getppid() == parent:  # the benchmark died without killing us: stop too
            time.sleep(0.5)
    finally:
        lab.stop()


@contextlib.contextmanager
def sim_process(host: str):
    # stderr to a file, not a pipe: nobody reads it during the run, and a full pipe would stall the sim
    with tempfile.TemporaryFile(mode="w+") as errors:
        child = subprocess.Popen([sys.executable, "-m", "bench.control_loop", "--serve-sim", host],
                                 cwd=REPO, stdout=subprocess.PIPE, stderr=errors, text=True)
        try:
            line = child.stdout.readline().strip()
            if line != "ready":
                child.wait(timeout=10.0)
                errors.seek(0)
                raise RuntimeError(f"sim child did not start (got {line!r}): {errors.read()[-3000:]}")
            yield
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()


# -- reference path -----------------------------------------------------------------------------
class CirclePath:
    """One lap of a circle in xy with linear speed ramps, and a yaw oscillation following the lap's
    phase (so it ramps with it). Starts on the circle's -x side so the circle lies towards +x, into
    the workspace. `pose(t)`: t in seconds from the start."""

    def __init__(self, start_pos: np.ndarray, start_rot: np.ndarray):
        self.omega = 2 * np.pi / LAP_S
        self.duration = LAP_S + RAMP_S  # the two ramps cover as much of the lap as RAMP_S at full speed
        self.plateau = (RAMP_S, self.duration - RAMP_S)
        self.speed = RADIUS * self.omega
        self.center = start_pos + np.array([RADIUS, 0.0, 0.0])
        self.start_rot = start_rot

    def phase(self, t: float) -> float:
        w, r, d = self.omega, RAMP_S, self.duration
        t = min(max(t, 0.0), d)
        if t < r:
            return 0.5 * w * t * t / r
        if t <= d - r:
            return 0.5 * w * r + w * (t - r)
        return 2 * np.pi - 0.5 * w * (d - t) ** 2 / r

    def pose(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        th = self.phase(t)
        c, s = np.cos(YAW_AMPLITUDE * np.sin(th)), np.sin(YAW_AMPLITUDE * np.sin(th))
        rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        return self.center + RADIUS * np.array([-np.cos(th), np.sin(th), 0.0]), rz @ self.start_rot


# -- robot helpers ------------------------------------------------------------------------------
def read(robot) -> tuple[float, int, np.ndarray, np.ndarray]:
    """(host s, sim ms, position, quaternion) from ONE robot state, so pose and sim time agree."""
    state = robot.state
    t = time.perf_counter()
    pose = state.O_T_EE
    return t, int(state.time.to_msec()), np.array(pose.translation), np.array(pose.quaternion)


def sample_until(robot, deadline: float, samples: list, stop=None) -> bool:
    """Append `read()`s at ~1 kHz until `deadline` (perf_counter); True as soon as `stop(pos)` holds."""
    next_due = time.perf_counter()
    while True:
        samples.append(read(robot))
        if stop is not None and stop(samples[-1][2]):
            return True
        next_due += SAMPLE_PERIOD
        now = time.perf_counter()
        if now >= deadline:
            return False
        if next_due < now - 0.005:
            next_due = now  # fell behind (scheduler): don't burst to catch up
        time.sleep(max(0.0, min(next_due, deadline) - now))


def wait_idle(robot) -> None:
    """Until no motion runs and the end effector is at rest (< 1 mm/s over 50 ms; at most 2 s)."""
    _wait_for_motion(robot, stop_on_estop=None)
    deadline = time.perf_counter() + 2.0
    time.sleep(0.1)
    _, ms0, p0, _ = read(robot)
    while time.perf_counter() < deadline:
        time.sleep(0.05)
        _, ms1, p1, _ = read(robot)
        if np.linalg.norm(p1 - p0) / max(ms1 - ms0, 1) * 1000.0 < 0.001:
            return
        ms0, p0 = ms1, p1


def go_to_start(robot) -> None:
    motion = franky.CartesianMotion(franky.Affine(START_POSITION, START_QUAT), franky.ReferenceType.Absolute,
                                    FrankaConfig().dynamics_factor)
    for attempt in range(3):
        try:
            _retry_preempted(lambda: robot.move(motion, asynchronous=True))
            wait_idle(robot)
            return
        except (franky.ControlException, RuntimeError) as exc:
            # seen once right after the sim started ("Motion planner failed with error code -111"):
            # not part of what is measured, so recover and plan again
            if attempt == 2:
                raise
            log(f"return to start failed ({exc}); recovering and retrying")
            robot.recover_from_errors()
            time.sleep(0.2)


class Stream:
    """One streamer fed as FrankaArm.step feeds it: filter(action, measured pose) -> send."""

    def __init__(self, robot, name: str, hz: float):
        self.robot = robot
        self.filter = EEDeltaSafetyFilter(SafetyLimits(), ActionSpec().names, hz)
        self.streamer = STREAMERS[name](robot, 1.0 / hz, FrankaConfig().dynamics_factor)

    def send(self, action: np.ndarray, pos: np.ndarray, quat: np.ndarray) -> bool:
        """Returns whether the filter clipped the action."""
        rot = quat_to_matrix(quat)
        target = self.filter.apply(action, pos, rot)
        _retry_preempted(self.streamer.send, target.position, target.rotation, pos, rot)
        return bool(target.clipped)

    def stop(self) -> None:
        try:
            self.streamer.hold()
        except franky.ControlException as exc:  # the motion we preempted reporting itself: expected
            if "preempted" not in str(exc):
                raise
        wait_idle(self.robot)


# -- trials -------------------------------------------------------------------------------------
def latency_trial(robot, name: str, hz: float, direction: float) -> tuple[float | None, float | None]:
    """(host ms, sim ms) from the first send of a step command to > 0.5 mm along it; Nones on timeout."""
    period = 1.0 / hz
    step = min(ActionSpec().high[0], SafetyLimits().max_linear_speed * period)  # largest allowed x step
    action = np.array([direction * step, 0, 0, 0, 0, 0, 0.0])
    stream = Stream(robot, name, hz)
    _, ms0, p0, _ = read(robot)
    samples, hit, k = [], False, 0
    t0 = time.perf_counter()
    while not hit and time.perf_counter() - t0 < LATENCY_TIMEOUT_S:
        _, _, pos, quat = read(robot)
        stream.send(action, pos, quat)
        k += 1
        hit = sample_until(robot, t0 + k * period, samples,
                           stop=lambda p: direction * (p[0] - p0[0]) > LATENCY_THRESHOLD_M)
    stream.stop()
    return (1000.0 * (samples[-1][0] - t0), float(samples[-1][1] - ms0)) if hit else (None, None)


def tracking_trial(robot, name: str, hz: float) -> dict:
    period = 1.0 / hz
    _, _, p0, q0 = read(robot)
    path = CirclePath(p0, quat_to_matrix(q0))
    stream = Stream(robot, name, hz)
    ticks, samples, send_ms, clipped, late = [], [], [], 0, 0
    n_ticks = int(np.ceil(path.duration / period)) + 1
    t0 = time.perf_counter()
    for k in range(n_ticks):
        late += time.perf_counter() > t0 + (k + 0.5) * period
        ticks.append(read(robot))
        t, _, pos, quat = ticks[-1]
        ref_pos, ref_rot = path.pose(t - t0 + period)
        action = np.concatenate([ref_pos - pos, matrix_to_rotvec(ref_rot @ quat_to_matrix(quat).T), [0.0]])
        s0 = time.perf_counter()
        clipped += stream.send(action, pos, quat)
        send_ms.append(1000.0 * (time.perf_counter() - s0))
        sample_until(robot, t0 + (k + 1) * period, samples)
    stream.stop()
    out = tracking_metrics(path, t0, ticks, samples)
    out.update(ticks_clipped=clipped, ticks_late=int(late), n_ticks=n_ticks,
               send_ms_p50=round(float(np.median(send_ms)), 3))
    return out


def _errors(path: CirclePath, t0: float, reads: list) -> dict:
    """Position (mm) and rotation (deg) error of `read()` tuples against the reference, over the lap."""
    pos_err, rot_err = [], []
    for t, _, pos, quat in reads:
        if t - t0 <= path.duration:
            ref_pos, ref_rot = path.pose(t - t0)
            pos_err.append(1000.0 * np.linalg.norm(pos - ref_pos))
            cos = (np.trace(ref_rot.T @ quat_to_matrix(quat)) - 1.0) / 2.0
            rot_err.append(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return {"pos_mm": _stats(pos_err), "rot_deg": _stats(rot_err)}


def _stats(x: list) -> dict:
    return {"mean": round(float(np.mean(x)), 2), "p95": round(float(np.percentile(x, 95)), 2),
            "max": round(float(np.max(x)), 2)}


def tracking_metrics(path: CirclePath, t0: float, ticks: list, samples: list) -> dict:
    host, sim_ms, pos, _ = (np.array(x) for x in zip(*samples))
    host -= t0
    in_lap = int(np.sum(host <= path.duration))
    # Kinematics in the sim's clock (physical time, immune to host polling jitter): one sample per sim
    # state, resampled on a GRID_S grid, over the speed plateau only.
    sim_s, idx = np.unique(sim_ms / 1000.0, return_index=True)
    pos, host = pos[idx], host[idx]
    window = (host >= path.plateau[0]) & (host <= path.plateau[1])
    grid = np.arange(sim_s[window][0], sim_s[window][-1], GRID_S)
    p = np.stack([np.interp(grid, sim_s, pos[:, i]) for i in range(3)], axis=1)
    v = np.diff(p, axis=0) / GRID_S
    a = np.diff(v, axis=0) / GRID_S
    speed = np.linalg.norm(v, axis=1)
    mean_speed = float(np.mean(speed))
    mid = speed[1:-1]
    dips = np.sum((mid < speed[:-2]) & (mid <= speed[2:]) & (mid < DIP_FRACTION * mean_speed))
    length = np.sum(np.linalg.norm(np.diff(pos[window], axis=0), axis=1))
    return {
        "ticks": _errors(path, t0, ticks),
        "between_1khz": _errors(path, t0, samples),
        "samples_1khz": in_lap,
        "mean_speed_mm_s": round(1000.0 * float(length) / (host[window][-1] - host[window][0]), 1),
        "reference_speed_mm_s": round(1000.0 * path.speed, 1),
        "rms_accel_m_s2": round(float(np.sqrt(np.mean(np.sum(a * a, axis=1)))), 3),
        "reference_rms_accel_m_s2": round(path.speed ** 2 / RADIUS, 3),
        "speed_cv": round(float(np.std(speed)) / mean_speed, 3),
        "speed_dips_per_s": round(float(dips) / (grid[-1] - grid[0]), 2),
        "sim_realtime_factor": round(float((sim_s[-1] - sim_s[0]) / (host[-1] - host[0])), 3),
    }


def run_method(robot, name: str, hz: float, latency_trials: int, tag: str) -> dict:
    go_to_start(robot)
    warmup = latency_trial(robot, name, hz, 1.0)[0]  # not counted, see the module docstring
    latency = [latency_trial(robot, name, hz, (-1.0) ** (i + 1)) for i in range(latency_trials)]
    go_to_start(robot)
    result = {"warmup_ms": warmup, "latency": latency, "tracking": tracking_trial(robot, name, hz)}
    tr, lat = result["tracking"], ", ".join("-" if x is None else f"{x:.0f}" for x, _ in latency)
    tick_err, fast_err = tr["ticks"]["pos_mm"]["mean"], tr["between_1khz"]["pos_mm"]["mean"]
    log(f"{tag} {hz:>4g} Hz {name:<10} latency {lat} ms; pos err ticks {tick_err:.2f} / 1kHz {fast_err:.2f}"
        f" mm, {tr['mean_speed_mm_s']:.0f} mm/s, rms acc {tr['rms_accel_m_s2']},"
        f" dips {tr['speed_dips_per_s']}/s, rtf {tr['sim_realtime_factor']}")
    return result


# -- summaries ----------------------------------------------------------------------------------
def _pct(values, q):
    values = [v for v in values if v is not None]
    return round(float(np.percentile(values, q)), 2) if values else None


def _mean_tree(trees: list):
    """Mean over trials of every number in same-shaped nested dicts."""
    if isinstance(trees[0], dict):
        return {k: _mean_tree([t[k] for t in trees]) for k in trees[0]}
    return round(float(np.mean(trees)), 3)


def summarise_method(runs: list[dict]) -> dict:
    host_ms = [h for run in runs for h, _ in run["latency"]]
    sim_ms = [s for run in runs for _, s in run["latency"]]
    return {
        "latency_ms": {"p50": _pct(host_ms, 50), "p90": _pct(host_ms, 90), "n": len(host_ms),
                       "timeouts": sum(x is None for x in host_ms)},
        "latency_sim_ms": {"p50": _pct(sim_ms, 50), "p90": _pct(sim_ms, 90)},
        "warmup_latency_ms_not_counted": [r["warmup_ms"] and round(r["warmup_ms"], 1) for r in runs],
        "tracking_trials": len(runs),
        "tracking": {**_mean_tree([r["tracking"] for r in runs]), "per_trial": [r["tracking"] for r in runs]},
    }


# Compared per round, chosen / best alternative (lower is better for each).
RATIO_METRICS = {
    "pos_mean_1khz": lambda r: r["tracking"]["between_1khz"]["pos_mm"]["mean"],
    "pos_p95_1khz": lambda r: r["tracking"]["between_1khz"]["pos_mm"]["p95"],
    "rot_mean_1khz": lambda r: r["tracking"]["between_1khz"]["rot_deg"]["mean"],
    "pos_mean_ticks": lambda r: r["tracking"]["ticks"]["pos_mm"]["mean"],
    "rms_accel": lambda r: r["tracking"]["rms_accel_m_s2"],
    "latency_p50": lambda r: _pct([h for h, _ in r["latency"]], 50),
}


def chosen_ratios(chosen: str, rounds: list[dict]) -> dict:
    """Per metric: the best alternative is the one with the lowest mean over the rounds; the ratio
    chosen / it is taken within each round (measured side by side) and summarised by its median."""
    out = {}
    for label, value in RATIO_METRICS.items():
        # method -> its value in each round (None where that round lacks it)
        vals = {m: [value(r[m]) if m in r else None for r in rounds] for m in {m for r in rounds for m in r}}
        means = {m: np.mean([x for x in v if x is not None]) for m, v in vals.items()
                 if m != chosen and any(x is not None for x in v)}
        if chosen not in vals or not means:
            continue
        best = min(means, key=means.get)
        ratios = [c / b for c, b in zip(vals[chosen], vals[best]) if c is not None and b]
        out[label] = {
            "best_alternative": best,
            "ratio_median": round(float(np.median(ratios)), 3) if ratios else None,
            "ratio_per_round": [round(x, 3) for x in ratios],
            "chosen_mean": round(float(np.mean([x for x in vals[chosen] if x is not None])), 2),
            "best_alternative_mean": round(float(means[best]), 2),
        }
    return out


def run_arm(rounds: int, latency_trials: int) -> dict:
    names = list(STREAMERS)
    chosen = FrankaConfig().streaming
    per_round = {hz: [] for hz in RATES_HZ}  # one {method: run_method result} per round
    errors = []
    host = f"127.0.{random.randint(2, 254)}.{random.randint(2, 254)}"  # no collision with other sims
    log(f"starting franky-sim on {host}")
    with sim_process(host):
        with _keep_scheduling_policy():
            robot = franky.Robot(host, realtime_config=franky.RealtimeConfig.Ignore)
        robot.relative_dynamics_factor = 1.0  # as FrankaArm.connect(): each motion carries its factor
        robot.recover_from_errors()
        for rnd in range(rounds):
            for hz in RATES_HZ:
                results, shift = {}, rnd % len(names)
                for name in names[shift:] + names[:shift]:
                    tag = f"round {rnd + 1}/{rounds}"
                    try:
                        results[name] = run_method(robot, name, hz, latency_trials, tag)
                    except (franky.ControlException, RuntimeError) as exc:  # recorded; the run goes on
                        errors.append(f"{name} @ {hz:g} Hz round {rnd + 1}: {exc}")
                        log(f"ERROR {errors[-1]}")
                        robot.recover_from_errors()
                per_round[hz].append(results)
    rates = {}
    for hz in RATES_HZ:
        max_step = min(ActionSpec().high[0], SafetyLimits().max_linear_speed / hz)
        methods = {m: summarise_method([r[m] for r in per_round[hz] if m in r]) for m in names
                   if any(m in r for r in per_round[hz])}
        rates[f"{hz:g}hz"] = {
            "period_ms": round(1000.0 / hz, 2),
            "max_step_mm": round(1000 * max_step, 2),
            "reference_step_fraction_of_bound": round(RADIUS * 2 * np.pi / LAP_S / hz / max_step, 3),
            "methods": methods,
            "chosen_vs_best_alternative": chosen_ratios(chosen, per_round[hz]),
        }
    return {
        "sim_host": host,
        "dynamics_factor": FrankaConfig().dynamics_factor,
        "dynamics_note": "as FrankaArm: robot-wide relative_dynamics_factor 1.0, each motion dynamics_factor "
                         "(franky multiplies them); impedance (torque control) ignores it",
        "streamer_defaults": {  # what was measured, should the streamers' tuning change later
            m: {k: p.default for k, p in inspect.signature(c).parameters.items() if p.default is not p.empty}
            for m, c in STREAMERS.items()},
        "rounds": rounds,
        "latency_trials_per_round": latency_trials,
        "rates": rates,
        "errors": errors,
    }


# -- camera, machine, main ----------------------------------------------------------------------
def camera(seconds: float) -> dict:
    from bench.camera_node import SHIPPED_PROFILE, measure

    log("camera node: default Fast DDS transport")
    default = measure(seconds, 30, 640, 480)
    log(f"camera node: {SHIPPED_PROFILE.name}")
    shipped = measure(seconds, 30, 640, 480, fastdds_profile=SHIPPED_PROFILE)
    return {"default_transport": default, "shipped_profile": shipped}


def chosen_summary(arm: dict) -> dict:
    config = FrankaConfig()
    rates = {rate: r for rate, r in arm["rates"].items() if r["methods"]}

    def best(key):
        return {rate: min(r["methods"], key=lambda m, r=r: key(r["methods"][m]) or float("inf"))
                for rate, r in rates.items()}

    return {
        "method": config.streaming,
        "source": "pld_robot.robots.franka.FrankaConfig().streaming",
        "dynamics_factor_applied_once": config.dynamics_factor,
        # chosen / best alternative, median of the per-round ratios (> 1: the chosen method does worse)
        "ratio_vs_best_alternative": {
            rate: {k: {"ratio": v["ratio_median"], "best_alternative": v["best_alternative"]}
                   for k, v in r["chosen_vs_best_alternative"].items()} for rate, r in rates.items()},
        "best_tracking_method": best(lambda m: m["tracking"]["between_1khz"]["pos_mm"]["mean"]),
        "lowest_latency_method": best(lambda m: m["latency_ms"]["p50"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, 2 s camera runs")
    parser.add_argument("--out", type=Path, help="also write the JSON here (indented)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3; --quick 1)")
    parser.add_argument("--latency-trials", type=int, default=3, help="per method and round (default 3)")
    parser.add_argument("--no-camera", action="store_true", help="skip the camera node measurement")
    parser.add_argument("--serve-sim", metavar="HOST", help=argparse.SUPPRESS)  # the sim child
    a = parser.parse_args()
    if a.serve_sim:
        return serve_sim(a.serve_sim)

    t_start = time.perf_counter()
    result = {"bench": "control_loop", "command": " ".join(["python -m bench.control_loop", *sys.argv[1:]]),
              "machine": machine_context(("franky-control", "franky-sim", "mujoco")), "load_avg_start": [round(x, 2) for x in os.getloadavg()]}
    arm = result["streaming"] = run_arm(a.rounds or (1 if a.quick else 3), a.latency_trials)
    if not a.no_camera:
        result["camera_node"] = camera(2.0 if a.quick else 4.0)
    result["chosen"] = chosen_summary(arm)
    emit(result, t_start, a.out)


if __name__ == "__main__":
    main()
