"""YAM motor-loop benchmark: the driver's loop over python-can's virtual bus, against the simulated
Damiao motors, on this machine.

`YamArm` runs exactly as on a real arm (its own virtual bus, the motor loop thread sending 7 MIT
frames per tick and reading the 7 answers), except that the motors are `SimMotors`, a thread of the
same process that answers every frame and integrates the joints at 2 kHz: on a real arm they are
on the other side of the wire, so here the loop shares the GIL and the two cores with them, and the
numbers are a pessimistic bound for the driver itself. While measuring, a policy thread steps the
arm at the control rate (10 Hz) along a slow sine on every joint, so the loop interpolates, as it
does in use.

Per loop rate (250 and 500 Hz, interleaved over rounds, because the machine is shared and noisy):
the achieved rate (ticks / wall time), the tick interval's p50/p99/max, the jitter |interval -
period| at p50/p99, the share of late ticks (interval > 1.5 periods), faults (there should be
none), and the process's CPU use.

    python bench/yam_loop.py [--quick] [--seconds S] [--out FILE]   (stdout: one JSON object)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a file: make `pld_robot` importable
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from pld_robot.robots.yam import YamArm, YamConfig  # noqa: E402
from pld_robot.robots.yam.sim import SimMotors  # noqa: E402
from bench._context import emit, machine_context  # noqa: E402

RATES_HZ = (250.0, 500.0)
AMPLITUDE, SINE_PERIOD_S = 0.1, 4.0  # rad, s: 0.16 rad/s at most, well inside the step limit


def log(msg: str) -> None:
    print(f"[yam_loop {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def measure(loop_hz: float, seconds: float, run: int) -> dict:
    cfg = YamConfig(interface="virtual", channel=f"yam-bench-{os.getpid()}-{run}", loop_hz=loop_hz)
    start = np.array(cfg.home_joints)
    sim = SimMotors(cfg, initial=(*start, cfg.gripper_open)).start()
    arm = YamArm(cfg)
    arm.connect()
    stop = threading.Event()
    steps = []

    def policy():
        t0 = time.monotonic()
        while not stop.is_set():
            phase = 2 * np.pi * (time.monotonic() - t0) / SINE_PERIOD_S
            arm.step(np.append(start + AMPLITUDE * np.sin(phase), 1.0))
            steps.append(time.monotonic())
            stop.wait(cfg.action.period)

    try:
        worker = threading.Thread(target=policy, daemon=True)
        worker.start()
        time.sleep(0.5)  # settle: the first targets, the threads' first ticks
        t0, cpu0 = time.monotonic(), time.process_time()
        time.sleep(seconds)
        t1, cpu1 = time.monotonic(), time.process_time()
        stop.set()
        worker.join()
        ticks = arm.loop_ticks()
        fault = arm.fault
    finally:
        arm.close()
        sim.stop()
    ticks = ticks[(ticks >= t0) & (ticks <= t1)]
    intervals = np.diff(ticks)
    period = 1.0 / loop_hz
    jitter = np.abs(intervals - period)
    ms = lambda x: round(float(x) * 1000, 3)  # noqa: E731
    return {
        "loop_hz": loop_hz,
        "seconds": round(t1 - t0, 2),
        "ticks": len(ticks),
        "achieved_hz": round((len(ticks) - 1) / (ticks[-1] - ticks[0]), 1),
        "interval_ms": {"p50": ms(np.percentile(intervals, 50)), "p99": ms(np.percentile(intervals, 99)),
                        "max": ms(intervals.max())},
        "jitter_ms": {"p50": ms(np.percentile(jitter, 50)), "p99": ms(np.percentile(jitter, 99))},
        "late_ticks": round(float(np.mean(intervals > 1.5 * period)), 4),
        "control_steps": sum(t0 <= s <= t1 for s in steps),
        "fault": fault,
        "cpu_share": round((cpu1 - cpu0) / (t1 - t0), 3),  # of one core, the whole process
    }


def summarise(runs: list[dict]) -> dict:
    out = {}
    for hz in RATES_HZ:
        mine = [r for r in runs if r["loop_hz"] == hz]
        out[f"{hz:.0f}"] = {
            "achieved_hz": round(float(np.median([r["achieved_hz"] for r in mine])), 1),
            "jitter_p50_ms": round(float(np.median([r["jitter_ms"]["p50"] for r in mine])), 3),
            "jitter_p99_ms": round(float(np.median([r["jitter_ms"]["p99"] for r in mine])), 3),
            "late_ticks": round(float(np.median([r["late_ticks"] for r in mine])), 4),
            "faults": sum(r["fault"] is not None for r in mine),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round of 3 s per rate")
    parser.add_argument("--seconds", type=float, help="measured seconds per rate and round (default 5)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3; --quick 1)")
    parser.add_argument("--out", type=Path, help="also write the JSON here (indented)")
    a = parser.parse_args()
    seconds = a.seconds or (3.0 if a.quick else 5.0)
    rounds = a.rounds or (1 if a.quick else 3)

    t_start = time.perf_counter()
    result = {"bench": "yam_loop", "command": " ".join(["python bench/yam_loop.py", *sys.argv[1:]]),
              "machine": machine_context(("python-can", "mujoco", "numpy")), "config": {
                  k: v for k, v in dataclasses.asdict(YamConfig()).items()
                  if k in ("loop_hz", "motor_timeout_s", "silent_after_s")},
              "load_avg_start": [round(x, 2) for x in os.getloadavg()]}
    runs = []
    for k in range(rounds):
        order = RATES_HZ if k % 2 == 0 else RATES_HZ[::-1]
        for hz in order:
            log(f"round {k + 1}/{rounds}: {hz:.0f} Hz for {seconds:.0f} s")
            runs.append(measure(hz, seconds, len(runs)))
            log(f"  {runs[-1]['achieved_hz']} Hz, jitter p50 {runs[-1]['jitter_ms']['p50']} ms, "
                f"p99 {runs[-1]['jitter_ms']['p99']} ms")
    result["runs"] = runs
    result["summary"] = summarise(runs)
    emit(result, t_start, a.out)


if __name__ == "__main__":
    main()
