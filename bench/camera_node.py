"""Camera node publish rate and latency through the deployed path, with no camera attached:

    software RealSense --SDK--> RealSenseCamera --> CameraNode ==DDS==> subscriber (another process)

Latency is subscriber receipt (wall clock) minus header.stamp, the frame's capture time as pushed into
the SDK, so it covers the SDK syncer, the copy out of the SDK, message conversion, DDS between two
processes, deserialisation and the subscriber's executor. Both ends run on this host: one clock.

Publisher and subscriber each run in a child process, so that each measurement gets its own DDS
transport setup: Fast DDS reads its XML profile once per process. The script compares Fast DDS's
default transports with the shipped profile, config/fastdds.xml (a shared-memory segment large enough
for several 640x480 frames).

    python -m bench.camera_node [--duration 5] [--fps 30] [--width 640] [--height 480]
    python bench/camera_node.py            (same; the last line printed is one JSON object)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a file: make `pld_robot` importable as `python -m` does
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

WARMUP_S = 0.5

# The transport profile the graph ships with (a 16 MiB shared-memory segment; why: its comment).
SHIPPED_PROFILE = REPO / "config" / "fastdds.xml"


def measure(
    duration_s: float = 5.0,
    fps: int = 30,
    width: int = 640,
    height: int = 480,
    fastdds_profile: Optional[Path] = None,
) -> dict:
    """Publish for `duration_s` (after a short warm-up) and summarise what the subscriber received.
    `fastdds_profile`: the Fast DDS XML both processes use; None: Fast DDS's built-in defaults."""
    # A private DDS domain and topic: other processes on this machine may be publishing cameras.
    env = dict(os.environ, ROS_DOMAIN_ID=str(random.randint(120, 230)))
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    if fastdds_profile is not None:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(fastdds_profile)
    name = f"bench{os.getpid()}_{random.randint(0, 99999)}"
    shape = ["--fps", str(fps), "--width", str(width), "--height", str(height)]
    with tempfile.TemporaryDirectory() as tmp:
        subscriber = _spawn(["--subscribe", name, *shape], env, tmp, "sub", stdin=subprocess.PIPE)
        publisher = _spawn(["--publish", name, "--duration", str(duration_s), *shape], env, tmp, "pub")
        try:
            publisher.wait(timeout=duration_s + 60.0)
            subscriber.stdin.close()  # tells the subscriber to report
            subscriber.wait(timeout=30.0)
        finally:
            for child in (publisher, subscriber):
                if child.poll() is None:
                    child.kill()
                    child.wait()
        published = _result(publisher, tmp, "pub")
        receipts = _result(subscriber, tmp, "sub")["receipts"]
    summary = _summary(published, receipts, duration_s, fps, width, height)
    summary["fastdds_transport"] = str(fastdds_profile.relative_to(REPO)) if fastdds_profile else "default"
    return summary


def _spawn(args: list[str], env: dict, tmp: str, tag: str, **kwargs) -> subprocess.Popen:
    out, err = open(Path(tmp, f"{tag}.out"), "w"), open(Path(tmp, f"{tag}.err"), "w")
    with out, err:
        return subprocess.Popen([sys.executable, "-m", "bench.camera_node", *args], cwd=REPO, env=env,
                                stdout=out, stderr=err, text=True, **kwargs)


def _result(child: subprocess.Popen, tmp: str, tag: str) -> dict:
    lines = Path(tmp, f"{tag}.out").read_text().strip().splitlines()
    if child.returncode != 0 or not lines:
        err = Path(tmp, f"{tag}.err").read_text()[-3000:]
        raise RuntimeError(f"camera bench {tag} process failed (exit {child.returncode}):\n{err}")
    return json.loads(lines[-1])


def _summary(published: dict, receipts: list, duration_s, fps, width, height) -> dict:
    window = [(r, s) for r, s in receipts if published["t_first"] - 1e-6 <= s <= published["t_last"] + 1e-6]
    latency_ms = np.array([(r - s) * 1000.0 for r, s in window])
    stamps = sorted(s for _, s in window)
    return {
        "bench": "camera_node",
        "path": "software RealSense -> RealSenseCamera -> CameraNode -> DDS (2 processes) -> subscriber",
        "width": width,
        "height": height,
        "fps_requested": fps,
        "duration_s": duration_s,
        "frames_pushed": published["pushed"],
        "frames_received": len(window),
        "received_fraction": round(len(window) / published["pushed"], 4),
        "publish_rate_hz": round((len(stamps) - 1) / (stamps[-1] - stamps[0]), 2) if len(stamps) > 2 else 0.0,
        "latency_ms": {
            "p50": round(float(np.percentile(latency_ms, 50)), 3),
            "p99": round(float(np.percentile(latency_ms, 99)), 3),
            "max": round(float(latency_ms.max()), 3),
        } if len(window) else None,
        "cpu_count": os.cpu_count(),
    }


def _subscribe(name: str) -> dict:
    """Child: record (receipt, header stamp) of every color image until stdin closes."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from pld_robot.nodes.image_msgs import from_time

    rclpy.init()
    node = rclpy.create_node("camera_bench_listener")
    receipts = []
    node.create_subscription(
        Image,
        f"/camera/{name}/color/image_raw",
        lambda msg: receipts.append((time.time(), from_time(msg.header.stamp))),
        qos_profile_sensor_data,
    )
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    while not done.is_set():
        executor.spin_once(timeout_sec=0.05)
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()
    return {"receipts": receipts}


def _publish(name: str, duration_s: float, fps: int, width: int, height: int) -> dict:
    """Child: a CameraNode on a software RealSense, fed at `fps` once the subscriber is there."""
    import rclpy
    from rclpy.parameter import Parameter

    from pld_robot.cameras.base import CameraConfig
    from pld_robot.cameras.realsense import RealSenseCamera, SoftwareRealSense
    from pld_robot.nodes.camera_node import CameraNode

    rclpy.init()
    params = dict(name=name, serial="BENCH", width=width, height=height, fps=fps)
    device = SoftwareRealSense("BENCH", width, height, fps)
    node = CameraNode(
        camera=RealSenseCamera(CameraConfig(**params), devices=[device.device]),
        parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
    )
    try:
        topic = f"/camera/{name}/color/image_raw"
        wait_until = time.monotonic() + 20.0
        while node.count_subscribers(topic) == 0:
            if time.monotonic() > wait_until:
                raise TimeoutError(f"no subscriber on {topic} after 20 s")
            time.sleep(0.01)
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(4)]
        warmup = round(WARMUP_S * fps)
        stamps = []
        next_due = time.monotonic()
        for seq in range(1, warmup + round(duration_s * fps) + 1):
            time.sleep(max(0.0, next_due - time.monotonic()))
            next_due += 1.0 / fps
            stamp = time.time()
            device.push(images[seq % len(images)], stamp, seq)
            if seq > warmup:
                stamps.append(stamp)
        time.sleep(0.3)  # let the last frames leave before the node goes
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return {"pushed": len(stamps), "t_first": stamps[0], "t_last": stamps[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--publish", metavar="NAME", help=argparse.SUPPRESS)  # child processes
    parser.add_argument("--subscribe", metavar="NAME", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.publish:
        result = _publish(a.publish, a.duration, a.fps, a.width, a.height)
    elif a.subscribe:
        result = _subscribe(a.subscribe)
    else:
        # Side by side in one run: these machines are too noisy for absolute numbers across runs.
        default = measure(a.duration, a.fps, a.width, a.height)
        shipped = measure(a.duration, a.fps, a.width, a.height, fastdds_profile=SHIPPED_PROFILE)
        result = {"bench": "camera_node", "default_transport": default, "shipped_profile": shipped}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
