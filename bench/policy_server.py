"""Policy server overhead: what asking the server for a chunk costs on top of the model itself.

Two 224x224 cameras, an 8-D state, 7-D actions, chunks of 50, and a policy that does nothing (it
returns a ready-made chunk), so the time is all transport: encoding the observation, loopback HTTP or
websocket, the server's decoding and check, the hop to its inference thread, the reply. The server runs
in a child process (`--serve`), as it runs on its own box, so client and server do not share a GIL.

Each of `--requests` rounds takes a fresh observation (camera images change every tick) and asks in
turn, in a rotating order, (1) the policy in-process, `policy.predict(obs)`, (2) PolicyClient over
HTTP, (3) WebSocketPolicyClient. The overhead of a transport is, per round, its latency minus the
in-process call's; p50 and p99 over the rounds. `server_ms` is the server's own share (the reply's
timing), so the rest of the overhead is the client and the loopback.

Then the control loop's view: the server's policy sleeps `--infer-ms` (300 ms, a VLA on a small
GPU) per chunk, and a 10 Hz loop asks a ChunkBroker over HTTP for an action every tick for `--loop-s`
seconds, with `refill_below` sized from the latency (ceil(0.3 s x 10 Hz) + 2 = 5, plus the same again
as slack: 8). `ticks_without_action` counts the ticks after the first chunk that had nothing to
execute (target 0).

    python -m bench.policy_server [--requests 300] [--infer-ms 300] [--loop-s 30]
    python bench/policy_server.py      (same; a table on stderr, the last stdout line is one JSON object)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a file: make `pld_robot` and `bench` importable as `python -m` does
    sys.path.insert(0, str(REPO))

import numpy as np

from pld_robot.policy.broker import ChunkBroker
from pld_robot.policy.client import ClientSource, PolicyClient, WebSocketPolicyClient
from pld_robot.policy.server import bound_port, make_server
from pld_robot.policy.spec import Observation, PolicySpec
from pld_robot.policy.wire import observation_to_message, packb

SPEC = PolicySpec(cameras={"front": (224, 224), "wrist": (224, 224)}, state_names=tuple(f"s{i}" for i in range(8)),
                  action_names=tuple(f"a{i}" for i in range(7)), chunk_length=50, control_hz=10.0,
                  backend="noop", version="bench")
WARMUP = 20


class NoopPolicy:
    """Returns the same chunk every time: the cost of a request without a model."""

    spec = SPEC

    def __init__(self, infer_s: float = 0.0):
        self.chunk = np.zeros((SPEC.chunk_length, len(SPEC.action_names)), np.float32)
        self.infer_s = infer_s

    def predict(self, obs: Observation) -> np.ndarray:
        if self.infer_s:
            time.sleep(self.infer_s)
        return self.chunk


def observation(rng: np.random.Generator) -> Observation:
    images = {c: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for c, (h, w) in SPEC.cameras.items()}
    return Observation(images=images, state=rng.normal(size=8).astype(np.float32), prompt="pick up the cube")


def serve_child(infer_s: float) -> None:
    """The server process: print the port it bound, then serve until terminated."""
    server = make_server(NoopPolicy(infer_s), port=0, log_level="warning")

    def announce():
        while not server.started:
            time.sleep(0.01)
        print(bound_port(server), flush=True)

    threading.Thread(target=announce, daemon=True).start()
    server.run()


def stats(ms: list[float]) -> dict:
    a = np.array(ms)
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3)}


def measure(url: str, requests: int) -> dict:
    policy = NoopPolicy()
    rng = np.random.default_rng(0)
    with PolicyClient(url) as http, WebSocketPolicyClient(url) as ws:
        assert http.spec == ws.spec == SPEC
        calls = {"direct": policy.predict, "http": http.act, "websocket": ws.act}
        latency = {name: [] for name in calls}
        server_ms = {"http": [], "websocket": []}
        for i in range(WARMUP + requests):
            obs = observation(rng)
            names = list(calls)
            for name in names[i % 3:] + names[:i % 3]:
                start = time.perf_counter()
                result = calls[name](obs)
                elapsed = (time.perf_counter() - start) * 1e3
                if i >= WARMUP:
                    latency[name].append(elapsed)
                    if name != "direct":
                        server_ms[name].append(result.timing["server_ms"])
    direct = np.array(latency["direct"])
    out = {"direct": stats(latency["direct"])}
    for name, served in server_ms.items():
        out[name] = {**stats(latency[name]), "overhead": stats(list(np.array(latency[name]) - direct)),
                     "server": stats(served)}
    return out


def starvation(url: str, loop_s: float, refill_below: int = 8) -> dict:
    """A 10 Hz loop taking one action per tick from a ChunkBroker fed over HTTP by a slow policy."""
    rng = np.random.default_rng(1)
    period = 1.0 / SPEC.control_hz
    with PolicyClient(url) as client, ChunkBroker(ClientSource(client), SPEC, refill_below=refill_below,
                                                  max_chunk_age_s=6.0, unhealthy_after_s=2.0) as broker:
        ticks = starved = 0
        first = None
        start = time.monotonic()
        while (now := time.monotonic()) - start < loop_s:
            broker.observe(observation(rng), now)
            if broker.action(now) is not None:
                first = first if first is not None else ticks
            elif first is not None:
                starved += 1
            ticks += 1
            time.sleep(max(0.0, start + ticks * period - time.monotonic()))
        status = broker.status()
    return {"ticks": ticks, "first_action_tick": first, "ticks_without_action": starved,
            "chunks_received": status.chunks_received, "errors": status.errors, "refill_below": refill_below,
            "last_rtt_ms": round(status.last_rtt_ms or 0.0, 1)}


def spawn_server(infer_ms: float) -> tuple[subprocess.Popen, str]:
    child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", "--infer-ms", str(infer_ms)],
                             stdout=subprocess.PIPE, text=True)
    return child, f"http://127.0.0.1:{int(child.stdout.readline())}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--infer-ms", type=float, default=300.0, help="the slow policy's inference time")
    parser.add_argument("--loop-s", type=float, default=30.0, help="how long the 10 Hz loop runs")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.serve:
        serve_child(args.infer_ms / 1e3)
        return

    child, url = spawn_server(0.0)
    try:
        t = time.perf_counter()
        result = measure(url, args.requests)
        wall = time.perf_counter() - t
    finally:
        child.terminate()
        child.wait(10)
    child, url = spawn_server(args.infer_ms)
    try:
        loop = starvation(url, args.loop_s)
    finally:
        child.terminate()
        child.wait(10)
    loop["infer_ms"] = args.infer_ms

    request_bytes = len(packb(observation_to_message(observation(np.random.default_rng(0)))))
    print(f"{args.requests} requests each, {request_bytes / 1e3:.0f} kB per request, {wall:.1f} s", file=sys.stderr)
    print(f"{'':<10}{'p50_ms':>10}{'p99_ms':>10}{'overhead_p50':>14}{'overhead_p99':>14}{'server_p50':>12}",
          file=sys.stderr)
    for name, r in result.items():
        o, s = r.get("overhead", {}), r.get("server", {})
        print(f"{name:<10}{r['p50_ms']:>10}{r['p99_ms']:>10}{o.get('p50_ms', ''):>14}{o.get('p99_ms', ''):>14}"
              f"{s.get('p50_ms', ''):>12}", file=sys.stderr)
    print(f"10 Hz loop, {args.infer_ms:g} ms inference: {loop['ticks_without_action']} of {loop['ticks']} ticks "
          f"without an action after the first chunk ({loop['chunks_received']} chunks)", file=sys.stderr)
    print(json.dumps({"requests": args.requests, "cameras": {c: list(hw) for c, hw in SPEC.cameras.items()},
                      "state_dim": len(SPEC.state_names), "action_dim": len(SPEC.action_names),
                      "chunk_length": SPEC.chunk_length, "request_bytes": request_bytes,
                      "server": "child process, 127.0.0.1", "wall_s": round(wall, 1), **result,
                      "control_loop_10hz": loop}), flush=True)


if __name__ == "__main__":
    main()
