"""The orchestrator's side of the residual: ask residual_node for this tick's correction and wait for
it, never longer than the deadline.

The tick publishes a request and waits on a condition that the reply subscription sets. That
subscription has a callback group of its own, so on a multi-threaded executor it runs while the tick
waits (on a single-threaded one it could not, and every residual would be missed). Every residual
tick ends as one of: `applied`; `no_weights` (residual_node answered in time, without an actor yet);
`missing` (no answer by the deadline: residual_node slow, stopped or absent). A reply that arrives
after its deadline is discarded and also counted `late`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Sequence

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from trajectory_msgs.msg import JointTrajectory

from pld_robot.nodes.image_msgs import to_time
from pld_robot.nodes.residual_msgs import (
    NO_ACTOR,
    REPLY_TOPIC,
    REQUEST_TOPIC,
    parse_reply,
    request_msg,
)

OUTCOMES = ("applied", "no_weights", "missing", "late")


class ResidualClient:
    def __init__(self, node: Node, action_names: Sequence[str], control_hz: float, deadline_s: float):
        self._names, self._hz, self._deadline_s = tuple(action_names), control_hz, deadline_s
        self._log = node.get_logger()
        self._ready = threading.Condition()
        self._number = 0
        self._awaited: tuple[int, int, int] | None = None  # (request number, stamp sec, stamp nanosec)
        self._sent_at: deque[tuple[int, float]] = deque(maxlen=20)  # (request number, when), the last requests
        self._reply: tuple[np.ndarray, int] | None = None
        self.episode: Counter[str] = Counter()
        self.session: Counter[str] = Counter()
        self.episode_actor = NO_ACTOR  # the newest actor version applied this episode
        self.latency_ms: deque[float] = deque(maxlen=200)  # request -> reply, late replies included
        self._publisher = node.create_publisher(JointTrajectory, REQUEST_TOPIC, 10)
        node.create_subscription(JointTrajectory, REPLY_TOPIC, self._on_reply, 10,
                                 callback_group=MutuallyExclusiveCallbackGroup())

    def fetch(self, base: np.ndarray, observation_stamp: float) -> tuple[np.ndarray | None, int]:
        """(the residual to add to `base`, its actor version), or (None, -1) when there is none in time."""
        stamp = to_time(observation_stamp)
        with self._ready:
            self._number += 1
            self._awaited, self._reply = (self._number, stamp.sec, stamp.nanosec), None
            sent_at = time.monotonic()
            self._sent_at.append((self._number, sent_at))
            deadline = sent_at + self._deadline_s
        self._publisher.publish(request_msg(base, self._names, self._hz, stamp, self._number))
        with self._ready:
            self._ready.wait_for(lambda: self._reply is not None, timeout=max(0.0, deadline - time.monotonic()))
            reply, self._awaited = self._reply, None
            residual, version = reply if reply is not None else (None, NO_ACTOR)
            outcome = "missing" if reply is None else "no_weights" if version == NO_ACTOR else "applied"
            self._count(outcome)
            if outcome == "applied":
                self.episode_actor = max(self.episode_actor, version)
        return (residual, version) if outcome == "applied" else (None, NO_ACTOR)

    def begin_episode(self) -> None:
        with self._ready:
            self.episode.clear()
            self.episode_actor = NO_ACTOR

    def counts(self, of: Counter[str]) -> dict[str, int]:
        """The counters as status / episode fields: residual_applied, ..._no_weights, ..._missing, ..._late."""
        with self._ready:
            return {f"residual_{k}": of[k] for k in OUTCOMES}

    def _count(self, outcome: str) -> None:
        """Under self._ready: late replies are counted from the subscription's thread."""
        self.episode[outcome] += 1
        self.session[outcome] += 1

    def _on_reply(self, msg: JointTrajectory) -> None:
        arrived = time.monotonic()
        try:
            residual, number, version = parse_reply(msg, self._names)
        except ValueError as exc:
            self._log.error(f"{REPLY_TOPIC}: {exc}", throttle_duration_sec=5.0)
            return
        key = (number, msg.header.stamp.sec, msg.header.stamp.nanosec)
        with self._ready:
            sent_at = next((t for n, t in self._sent_at if n == number), None)
            if sent_at is None:  # not a request of ours (or from long ago)
                return
            self.latency_ms.append((arrived - sent_at) * 1e3)
            if key != self._awaited:  # ours, for a tick whose deadline has passed
                self._count("late")
                return
            self._reply = (residual.astype(np.float32), version)
            self._ready.notify_all()
