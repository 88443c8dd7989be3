"""Control-loop benchmark in franky-sim: the Franka streaming methods at 10 and 30 Hz, and the camera node.

For each streaming method of `pld_robot.robots.franka_streaming.STREAMERS`, driven exactly as the
driver drives it (`STREAMERS[name](robot, period, dynamics)`, `.send(target_pos, target_rot,
current_pos, current_rot)` once per tick, `.hold()` to stop, the driver's safety filter turning each
per-tick delta into the absolute target):

- command-to-motion latency: from the first step command at rest (the largest step the safety
  filter allows, along x) to the first end-effector displacement above 0.5 mm along it, found by
  polling franky's robot state at ~1 kHz; the same step action is resent every tick, as a policy
  holding one action would. Reported in host time and in the sim's own clock (the robot state's
  `time`, which falls behind when the sim runs slower than real time). The first trial after each
  return to the start pose is a warm-up and not counted (franky-sim sometimes jumps ~0.7 mm within
  a few ms on the first streamed command after a Cartesian pose motion);
- tracking: a 6 cm-radius circle in the xy plane (one lap, 3.5 s including 0.5 s speed ramps in and
  out, 0.126 m/s on the plateau: 63 % of the per-step bound at 10 Hz, 50 % at 30 Hz) with a
  +-0.3 rad yaw oscillation, one command per tick computed as the driver computes it (delta =
  reference one period ahead - measured pose, then the safety filter). Position/orientation error
  against the continuous reference over the whole lap is reported at the tick boundaries and,
  separately, over all 1 kHz samples (a method that stops at every waypoint can look good at the
  ticks while jerking in between). On the speed plateau, in the sim's clock: achieved mean speed,
  RMS end-effector acceleration (10 ms grid; a perfect tracker gives v^2/r = 0.26 m/s^2), the
  coefficient of variation of the speed and the speed dips per second (local minima below half the
  achieved mean speed).

Methods are interleaved (rotating order, several rounds) because the machine is shared and noisy;
the ratio of the driver's method to the best alternative is taken per round, side by side.

As the driver runs them, the waypoint and velocity motions get the dynamics factor twice (robot-wide
and per motion; franky multiplies the two). Diagnostic variants named `<method>+dyn_once` apply it
once; they are reported apart from the driver's methods (`--no-diagnostics` skips them).

The camera node's publish rate and latency at 640x480 (bench.camera_node.measure: default Fast DDS
transport vs a 16 MiB shared-memory segment) are measured after the sim is stopped.

franky-sim runs in a child process (its Python 1 kHz loop would otherwise compete with this one
for the GIL), on a private loopback address so it cannot collide with other sims on the host.

    python -m bench.control_loop [--quick] [--out FILE] [--no-camera] [--no-diagnostics]
    python bench/control_loop.py            (same; the last line printed is one JSON object)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib.metadata as _md
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a file: make `pld_robot` and `bench` importable
    sys.path.insert(0, str(REPO))

import numpy as np

RATES_HZ = (10.0, 30.0)
LATENCY_THRESHOLD_M = 0.0005
LATENCY_TIMEOUT_S = 1.0
START_POSITION = np.array([0.45, 0.0, 0.35])  # inside the default workspace box, away from its faces
START_QUAT = np.array([1.0, 0.0, 0.0, 0.0])  # [x, y, z, w]: the hand pointing down
CIRCLE_RADIUS = 0.06
LAP_S = 3.0  # one lap at plateau speed would take this long
RAMP_S = 0.5  # linear speed ramp in and out
YAW_AMPLITUDE = 0.3  # rad
SAMPLE_PERIOD = 0.001
DIP_FRACTION = 0.5  # a "speed dip": a local speed minimum below this fraction of the achieved mean speed
GRID_S = 0.010  # resampling step for velocity/acceleration: keeps < 50 Hz, drops 1 kHz sampling jitter


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
    """franky-sim in a child process for the duration of the block."""
    # stderr to a file, not a pipe: nobody reads it during the run, and a full pipe would stall the sim
    with tempfile.TemporaryFile(mode="w+") as errors:
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.control_loop", "--serve-sim", host],
            cwd=REPO, stdout=subprocess.PIPE, stderr=errors, text=True,
        )
        try:
            line = child.stdout.readline().strip()
            if line != "ready":
                child.wait(timeout=10.0)
                errors.seek(0)
                raise RuntimeError(f"sim child did not start (got {line!r}): {errors.read()[-3000:]}")
            yield child
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()


# -- reference path -----------------------------------------------------------------------------
class CirclePath:
    """One lap of a circle in the xy plane with linear speed ramps, plus a yaw oscillation that
    follows the lap's phase (so it ramps with it). `pose(t)` for t in host seconds from the start."""

    def __init__(self, start_pos: np.ndarray, start_rot: np.ndarray):
        self.omega = 2 * np.pi / LAP_S
        self.duration = LAP_S + RAMP_S  # the two half-ramps cover RAMP_S of plateau time
        self.plateau = (RAMP_S, self.duration - RAMP_S)
        self.speed = CIRCLE_RADIUS * self.omega
        self.peak_yaw_rate = YAW_AMPLITUDE * self.omega
        # start on the circle's -x side so the circle extends towards +x (into the workspace)
        self.center = start_pos + np.array([CIRCLE_RADIUS, 0.0, 0.0])
        self.start_rot = start_rot

    def phase(self, t: float) -> float:
        t = min(max(t, 0.0), self.duration)
        w, r, d = self.omega, RAMP_S, self.duration
        if t < r:
            return 0.5 * w * t * t / r
        if t <= d - r:
            return 0.5 * w * r + w * (t - r)
        return 2 * np.pi - 0.5 * w * (d - t) ** 2 / r

    def pose(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        th = self.phase(t)
        pos = self.center + CIRCLE_RADIUS * np.array([-np.cos(th), np.sin(th), 0.0])
        yaw = YAW_AMPLITUDE * np.sin(th)
        c, s = np.cos(yaw), np.sin(yaw)
        rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        return pos, rz @ self.start_rot


# -- robot helpers ------------------------------------------------------------------------------
@dataclass
class Samples:
    host: list = field(default_factory=list)  # perf_counter seconds
    sim_ms: list = field(default_factory=list)  # robot state time (the sim's 1 kHz clock)
    pos: list = field(default_factory=list)
    quat: list = field(default_factory=list)


def read(robot) -> tuple[float, int, np.ndarray, np.ndarray]:
    state = robot.state  # one call: pose and the sim's own timestamp (blocks <= 1 ms when idle)
    t = time.perf_counter()
    pose = state.O_T_EE
    return t, int(state.time.to_msec()), np.array(pose.translation), np.array(pose.quaternion)


def sample_until(robot, deadline: float, samples: Samples, stop=None) -> bool:
    """Poll the robot state at ~1 kHz until `deadline` (perf_counter); True if `stop(pos)` fired."""
    next_due = time.perf_counter()
    while True:
        t, ms, pos, quat = read(robot)
        samples.host.append(t)
        samples.sim_ms.append(ms)
        samples.pos.append(pos)
        samples.quat.append(quat)
        if stop is not None and stop(pos):
            return True
        next_due += SAMPLE_PERIOD
        now = time.perf_counter()
        if now >= deadline:
            return False
        if next_due < now - 0.005:
            next_due = now  # fell behind (scheduler): don't burst to catch up
        delay = min(next_due, deadline) - now
        if delay > 0:
            time.sleep(delay)


def wait_idle(robot, settle_s: float = 0.1) -> None:
    """Wait until no motion runs, then until the end effector is at rest (< 1 mm/s over 50 ms)."""
    from pld_robot.robots.franka import _wait_for_motion

    _wait_for_motion(robot, stop_on_estop=None)
    deadline = time.perf_counter() + 2.0
    time.sleep(settle_s)
    _, ms0, p0, _ = read(robot)
    while time.perf_counter() < deadline:
        time.sleep(0.05)
        _, ms1, p1, _ = read(robot)
        if np.linalg.norm(p1 - p0) / max(ms1 - ms0, 1) * 1000.0 < 0.001:
            return
        ms0, p0 = ms1, p1


def go_to_start(robot, dynamics: float) -> None:
    import franky

    from pld_robot.robots.franka import _retry_preempted

    for attempt in range(3):
        motion = franky.CartesianMotion(
            franky.Affine(START_POSITION, START_QUAT), franky.ReferenceType.Absolute, dynamics
        )
        try:
            _retry_preempted(lambda m=motion: robot.move(m, asynchronous=True))
            wait_idle(robot)
            return
        except (franky.ControlException, RuntimeError) as exc:
            # e.g. "Motion planner failed with error code -111" (Ruckig), seen once right after the
            # sim started: not part of what is measured, so recover and plan again.
            if attempt == 2:
                raise
            log(f"return to start failed ({exc}); recovering and retrying")
            robot.recover_from_errors()
            time.sleep(0.2)


def stop_streamer(robot, streamer) -> None:
    import franky

    try:
        streamer.hold()
    except franky.ControlException as exc:
        if "preempted" not in str(exc):
            raise
    wait_idle(robot)


# -- trials -------------------------------------------------------------------------------------
def latency_trial(robot, streamer_cls, hz: float, dynamics: float, direction: float) -> dict:
    """Step command along x from rest, resent every tick; time to the first displacement > 0.5 mm
    along the commanded direction."""
    from pld_robot.robots.action_spec import ActionSpec
    from pld_robot.robots.franka import _retry_preempted
    from pld_robot.robots.safety import EEDeltaSafetyFilter, SafetyLimits
    from pld_robot.robots.transforms import quat_to_matrix

    spec = ActionSpec()
    period = 1.0 / hz
    safety = EEDeltaSafetyFilter(SafetyLimits(), spec.names, hz)
    step = min(spec.high[0], SafetyLimits().max_linear_speed * period)  # the largest allowed x step
    action = np.array([direction * step, 0, 0, 0, 0, 0, 0.0])
    streamer = streamer_cls(robot, period, dynamics)
    _, ms0, p0, _ = read(robot)

    def moved(pos):  # along the commanded step
        return direction * (pos[0] - p0[0]) > LATENCY_THRESHOLD_M

    samples = Samples()
    t0 = time.perf_counter()
    hit = False
    k = 0
    while not hit and time.perf_counter() - t0 < LATENCY_TIMEOUT_S:
        _, _, pos, quat = read(robot)
        rot = quat_to_matrix(quat)
        target = safety.apply(action, pos, rot)
        _retry_preempted(streamer.send, target.position, target.rotation, pos, rot)
        k += 1
        hit = sample_until(robot, t0 + k * period, samples, stop=moved)
    stop_streamer(robot, streamer)
    if not hit:
        return {"latency_ms": None, "sim_latency_ms": None}
    return {
        "latency_ms": 1000.0 * (samples.host[-1] - t0),
        "sim_latency_ms": float(samples.sim_ms[-1] - ms0),
    }


def tracking_trial(robot, streamer_cls, hz: float, dynamics: float) -> dict:
    from pld_robot.robots.action_spec import ActionSpec
    from pld_robot.robots.franka import _retry_preempted
    from pld_robot.robots.safety import EEDeltaSafetyFilter, SafetyLimits
    from pld_robot.robots.transforms import matrix_to_rotvec, quat_to_matrix

    spec = ActionSpec()
    period = 1.0 / hz
    safety = EEDeltaSafetyFilter(SafetyLimits(), spec.names, hz)
    _, _, p0, q0 = read(robot)
    path = CirclePath(p0, quat_to_matrix(q0))
    streamer = streamer_cls(robot, period, dynamics)
    samples = Samples()
    ticks = []  # (t_rel, pos, quat)
    clipped = late = 0
    send_ms = []
    n_ticks = int(np.ceil(path.duration / period)) + 1
    t0 = time.perf_counter()
    for k in range(n_ticks):
        t_tick = t0 + k * period
        if time.perf_counter() > t_tick + 0.5 * period:
            late += 1
        t, _, pos, quat = read(robot)
        ticks.append((t - t0, pos, quat))
        rot = quat_to_matrix(quat)
        ref_pos, ref_rot = path.pose(t - t0 + period)
        action = np.concatenate([ref_pos - pos, matrix_to_rotvec(ref_rot @ rot.T), [0.0]])
        target = safety.apply(action, pos, rot)
        clipped += bool(target.clipped)
        s0 = time.perf_counter()
        _retry_preempted(streamer.send, target.position, target.rotation, pos, rot)
        send_ms.append(1000.0 * (time.perf_counter() - s0))
        sample_until(robot, t0 + (k + 1) * period, samples)
    stop_streamer(robot, streamer)
    return _tracking_metrics(path, t0, ticks, samples, hz, clipped, late, send_ms, n_ticks)


def _errors(path: CirclePath, items) -> tuple[np.ndarray, np.ndarray]:
    from pld_robot.robots.transforms import quat_to_matrix

    pos_err, rot_err = [], []
    for t, pos, quat in items:
        if t > path.duration:
            continue
        ref_pos, ref_rot = path.pose(t)
        pos_err.append(1000.0 * np.linalg.norm(pos - ref_pos))
        cos = np.clip((np.trace(ref_rot.T @ quat_to_matrix(quat)) - 1.0) / 2.0, -1.0, 1.0)
        rot_err.append(np.degrees(np.arccos(cos)))
    return np.array(pos_err), np.array(rot_err)


def _stats(x: np.ndarray, digits: int = 2) -> dict:
    return {
        "mean": round(float(np.mean(x)), digits),
        "p95": round(float(np.percentile(x, 95)), digits),
        "max": round(float(np.max(x)), digits),
    }


def _tracking_metrics(path, t0, ticks, samples, hz, clipped, late, send_ms, n_ticks) -> dict:
    host = np.array(samples.host) - t0
    sim_s = np.array(samples.sim_ms, float) / 1000.0
    pos = np.array(samples.pos)
    tick_pos_err, tick_rot_err = _errors(path, ticks)
    fast_pos_err, fast_rot_err = _errors(path, zip(host, pos, samples.quat))
    # Kinematics in the sim's own clock (physical time, immune to host sampling jitter): unique
    # states, resampled on a 5 ms grid, on the speed plateau.
    sim_s, idx = np.unique(sim_s, return_index=True)
    pos, host = pos[idx], host[idx]
    lo, hi = path.plateau
    window = (host >= lo) & (host <= hi)
    grid = np.arange(sim_s[window][0], sim_s[window][-1], GRID_S)
    p = np.stack([np.interp(grid, sim_s, pos[:, i]) for i in range(3)], axis=1)
    v = np.diff(p, axis=0) / GRID_S
    a = np.diff(v, axis=0) / GRID_S
    speed = np.linalg.norm(v, axis=1)
    mean_speed = float(np.mean(speed))
    minima = (speed[1:-1] < speed[:-2]) & (speed[1:-1] <= speed[2:]) & (speed[1:-1] < DIP_FRACTION * mean_speed)
    plateau_s = grid[-1] - grid[0]
    host_span = host[window][-1] - host[window][0]
    length = float(np.sum(np.linalg.norm(np.diff(pos[window], axis=0), axis=1)))
    return {
        "ticks": {"pos_mm": _stats(tick_pos_err), "rot_deg": _stats(tick_rot_err)},
        "between_1khz": {"pos_mm": _stats(fast_pos_err), "rot_deg": _stats(fast_rot_err)},
        "samples_1khz": len(fast_pos_err),
        "mean_speed_mm_s": round(1000.0 * length / host_span, 1),
        "reference_speed_mm_s": round(1000.0 * path.speed, 1),
        "rms_accel_m_s2": round(float(np.sqrt(np.mean(np.sum(a * a, axis=1)))), 3),
        "reference_rms_accel_m_s2": round(path.speed ** 2 / CIRCLE_RADIUS, 3),
        "speed_cv": round(float(np.std(speed) / mean_speed), 3),
        "speed_dips_per_s": round(float(np.sum(minima)) / plateau_s, 2),
        "sim_realtime_factor": round(float((sim_s[-1] - sim_s[0]) / (host[-1] - host[0])), 3),
        "ticks_clipped": int(clipped),
        "ticks_late": int(late),
        "n_ticks": int(n_ticks),
        "send_ms_p50": round(float(np.median(send_ms)), 3),
    }


# -- the run ------------------------------------------------------------------------------------
def _pct(values, q):
    values = [v for v in values if v is not None]
    return round(float(np.percentile(values, q)), 2) if values else None


def _mean_of(trials, *keys):
    vals = []
    for trial in trials:
        x = trial
        for key in keys:
            x = x[key]
        vals.append(x)
    return float(np.mean(vals))


def _summarise_method(lat: list[dict], track: list[dict]) -> dict:
    ms = [x["latency_ms"] for x in lat]
    sim_ms = [x["sim_latency_ms"] for x in lat]
    out = {
        "latency_ms": {"p50": _pct(ms, 50), "p90": _pct(ms, 90), "n": len(ms),
                       "timeouts": sum(m is None for m in ms)},
        "latency_sim_ms": {"p50": _pct(sim_ms, 50), "p90": _pct(sim_ms, 90)},
        "tracking_trials": len(track),
    }
    if track:
        out["tracking"] = {}
        for where in ("ticks", "between_1khz"):
            out["tracking"][where] = {
                kind: {stat: round(_mean_of(track, where, kind, stat), 2) for stat in ("mean", "p95", "max")}
                for kind in ("pos_mm", "rot_deg")
            }
        for key in ("mean_speed_mm_s", "reference_speed_mm_s", "rms_accel_m_s2", "reference_rms_accel_m_s2",
                    "speed_cv", "speed_dips_per_s", "sim_realtime_factor", "ticks_clipped", "ticks_late",
                    "send_ms_p50"):
            out["tracking"][key] = round(_mean_of(track, key), 3)
        out["tracking"]["per_trial"] = track
    return out


RATIO_METRICS = {
    "pos_mean_1khz": ("between_1khz", "pos_mm", "mean"),
    "pos_p95_1khz": ("between_1khz", "pos_mm", "p95"),
    "rot_mean_1khz": ("between_1khz", "rot_deg", "mean"),
    "pos_mean_ticks": ("ticks", "pos_mm", "mean"),
}


def _chosen_ratios(chosen: str, per_round: list[dict[str, dict]], pool: list[str]) -> dict:
    """chosen / best alternative among `pool`. The alternative is the one with the lowest mean over
    the rounds; the ratio is taken per round (same round = measured side by side), summarised by its
    median."""
    out = {}
    for label, keys in RATIO_METRICS.items():
        def value(trial, keys=keys):
            return trial[keys[0]][keys[1]][keys[2]]
        others = [m for m in pool if m != chosen and any(m in r for r in per_round)]
        if not others or not any(chosen in r for r in per_round):
            return {}
        means = {m: np.mean([value(r[m]) for r in per_round if m in r]) for m in others}
        best = min(means, key=means.get)
        ratios = [value(r[chosen]) / value(r[best]) for r in per_round
                  if chosen in r and best in r and value(r[best]) > 0]
        out[label] = {
            "best_alternative": best,
            "ratio_median": round(float(np.median(ratios)), 3) if ratios else None,
            "ratio_per_round": [round(float(x), 3) for x in ratios],
            "chosen_mean": round(float(np.mean([value(r[chosen]) for r in per_round if chosen in r])), 2),
            "best_alternative_mean": round(float(means[best]), 2),
        }
    return out


ONCE = "+dyn_once"  # diagnostic variant suffix


def run_arm(rounds: int, latency_per_round: int, diagnostics: bool = True) -> dict:
    import franky

    from pld_robot.robots.franka import FrankaConfig, _keep_scheduling_policy
    from pld_robot.robots.franka_streaming import STREAMERS

    config = FrankaConfig()
    dynamics = config.dynamics_factor
    # (label, streamer, robot-wide dynamics factor). As the driver runs them: FrankaArm.connect sets
    # robot.relative_dynamics_factor = dynamics_factor AND the streamers pass dynamics_factor to every
    # franky motion; franky multiplies the two. The diagnostic variants apply the factor once (robot
    # factor 1.0), for the streamers whose franky motions take a dynamics factor.
    variants = [(name, name, dynamics) for name in STREAMERS]
    if diagnostics and dynamics < 1.0:
        variants += [(name + ONCE, name, 1.0) for name in ("waypoint", "velocity") if name in STREAMERS]
    labels = [v[0] for v in variants]
    driver_labels = list(STREAMERS)
    host = f"127.0.{random.randint(2, 254)}.{random.randint(2, 254)}"
    log(f"starting franky-sim on {host}")
    with sim_process(host):
        with _keep_scheduling_policy():
            robot = franky.Robot(host, realtime_config=franky.RealtimeConfig.Ignore)
        robot.relative_dynamics_factor = dynamics
        robot.recover_from_errors()
        go_to_start(robot, dynamics)
        lat = {hz: {m: [] for m in labels} for hz in RATES_HZ}
        track = {hz: {m: [] for m in labels} for hz in RATES_HZ}
        warmup = {hz: {m: [] for m in labels} for hz in RATES_HZ}
        per_round = {hz: [] for hz in RATES_HZ}
        errors = []
        for rnd in range(rounds):
            for hz in RATES_HZ:
                shift = rnd % len(variants)
                results = {}
                for label, name, robot_factor in variants[shift:] + variants[:shift]:
                    cls = STREAMERS[name]
                    try:
                        robot.relative_dynamics_factor = dynamics
                        go_to_start(robot, dynamics)
                        robot.relative_dynamics_factor = robot_factor
                        # Warm-up, not counted: the first streamed command after the Cartesian pose
                        # motion back to the start can show a sub-millisecond jump in franky-sim.
                        warmup[hz][label].append(latency_trial(robot, cls, hz, dynamics, 1.0)["latency_ms"])
                        for i in range(latency_per_round):
                            lat[hz][label].append(latency_trial(robot, cls, hz, dynamics, (-1.0) ** (i + 1)))
                        robot.relative_dynamics_factor = dynamics
                        go_to_start(robot, dynamics)
                        robot.relative_dynamics_factor = robot_factor
                        result = tracking_trial(robot, cls, hz, dynamics)
                    except (franky.ControlException, RuntimeError) as exc:  # recorded, run goes on
                        errors.append(f"{label} @ {hz:g} Hz round {rnd}: {exc}")
                        log(f"ERROR {errors[-1]}")
                        robot.recover_from_errors()
                        continue
                    finally:
                        robot.relative_dynamics_factor = dynamics
                    track[hz][label].append(result)
                    results[label] = result
                    lats = [x["latency_ms"] for x in lat[hz][label][-latency_per_round:]]
                    log(f"round {rnd + 1}/{rounds} {hz:>4g} Hz {label:<18} latency "
                        f"{', '.join('-' if x is None else f'{x:.0f}' for x in lats)} ms; "
                        f"pos err ticks {result['ticks']['pos_mm']['mean']:.2f} / 1kHz "
                        f"{result['between_1khz']['pos_mm']['mean']:.2f} mm, rot 1kHz "
                        f"{result['between_1khz']['rot_deg']['mean']:.2f} deg, "
                        f"{result['mean_speed_mm_s']:.0f} mm/s, rms acc {result['rms_accel_m_s2']}, "
                        f"dips {result['speed_dips_per_s']}/s, rtf {result['sim_realtime_factor']}")
                per_round[hz].append(results)
        rates = {}
        chosen = config.streaming
        for hz in RATES_HZ:
            spec_step = min(0.02, 0.25 / hz)
            methods = {m: _summarise_method(lat[hz][m], track[hz][m]) for m in labels}
            for m in labels:
                methods[m]["warmup_latency_ms_not_counted"] = [
                    None if x is None else round(x, 1) for x in warmup[hz][m]]
            rates[f"{hz:g}hz"] = {
                "period_ms": round(1000.0 / hz, 2),
                "max_step_mm": round(1000 * spec_step, 2),
                "reference_step_fraction_of_bound": round(CIRCLE_RADIUS * 2 * np.pi / LAP_S / hz / spec_step, 3),
                "methods": {m: methods[m] for m in driver_labels},
                "diagnostic_variants": {m: methods[m] for m in labels if m not in driver_labels},
                "chosen_vs_best_alternative": _chosen_ratios(chosen, per_round[hz], driver_labels),
                "diagnostic_chosen_dyn_once_vs_best_other": _chosen_ratios(
                    chosen + ONCE, per_round[hz],
                    [m for m in labels if m != chosen]) if chosen + ONCE in labels else None,
            }
        return {
            "sim_host": host,
            "dynamics_factor": dynamics,
            "effective_dynamics_factor_as_driven": round(dynamics * dynamics, 4),
            "dynamics_note": (
                "FrankaArm.connect sets robot.relative_dynamics_factor = dynamics_factor and the waypoint/velocity "
                "streamers pass dynamics_factor to each franky motion; franky multiplies them, so those motions run "
                f"at {dynamics * dynamics:.2f} of the robot's limits. '{ONCE}' variants set the robot factor to 1.0 "
                f"(effective {dynamics:g}). The impedance tracker is torque control and ignores the factor."
            ),
            "rounds": rounds,
            "latency_trials_per_round": latency_per_round,
            "rates": rates,
            "errors": errors,
        }


def machine_context() -> dict:
    def version(dist):
        try:
            return _md.version(dist)
        except _md.PackageNotFoundError:
            return None

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=5, check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "franky_control": version("franky-control"),
        "franky_sim": version("franky-sim"),
        "mujoco": version("mujoco"),
        "git_commit": commit,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, 2 s camera runs")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3; --quick 1)")
    parser.add_argument("--latency-trials", type=int, help="latency trials per method per round (default 3)")
    parser.add_argument("--no-camera", action="store_true", help="skip the camera node measurement")
    parser.add_argument("--no-diagnostics", action="store_true",
                        help="skip the '+dyn_once' variants (dynamics factor applied once)")
    parser.add_argument("--serve-sim", metavar="HOST", help=argparse.SUPPRESS)  # the sim child
    a = parser.parse_args()
    if a.serve_sim:
        serve_sim(a.serve_sim)
        return
    rounds = a.rounds or (1 if a.quick else 3)
    latency_per_round = a.latency_trials or 3
    camera_s = 2.0 if a.quick else 4.0

    from pld_robot.robots.franka import FrankaConfig

    t_start = time.perf_counter()
    result = {"bench": "control_loop", "command": " ".join(["python -m bench.control_loop", *sys.argv[1:]]),
              "machine": machine_context(), "load_avg_start": [round(x, 2) for x in os.getloadavg()]}
    chosen = FrankaConfig().streaming
    arm = run_arm(rounds, latency_per_round, diagnostics=not a.no_diagnostics)
    result["streaming"] = arm
    if not a.no_camera:
        from bench.camera_node import measure

        log("camera node: default Fast DDS transport")
        default = measure(camera_s, 30, 640, 480)
        log("camera node: 16 MiB shared-memory segment")
        shm = measure(camera_s, 30, 640, 480, shm_segment_mb=16)
        result["camera_node"] = {"default_transport": default, "shm_16mib": shm}
    result["chosen"] = {
        "method": chosen,
        "source": "pld_robot.robots.franka.FrankaConfig().streaming",
        "effective_dynamics_factor_as_driven": arm["effective_dynamics_factor_as_driven"],
        # chosen / best alternative, median of per-round ratios (> 1: the chosen method tracks worse)
        "tracking_ratio_vs_best_alternative": {
            rate: {k: {"ratio": v["ratio_median"], "best_alternative": v["best_alternative"]}
                   for k, v in r["chosen_vs_best_alternative"].items()}
            for rate, r in arm["rates"].items()
        },
        "best_tracking_method_as_driven": {  # by mean position error over the 1 kHz samples
            rate: min(r["methods"], key=lambda m, r=r: r["methods"][m]["tracking"]["between_1khz"]["pos_mm"]["mean"])
            for rate, r in arm["rates"].items() if all("tracking" in x for x in r["methods"].values())
        },
    }
    result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    text = json.dumps(result)
    if a.out:
        a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(text, flush=True)


if __name__ == "__main__":
    main()
