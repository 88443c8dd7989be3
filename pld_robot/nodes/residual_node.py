"""residual_node: the residual actor at the robot. It answers each of the orchestrator's requests with
the correction to add to that tick's base action, computed on its own latest observation.

In:  /pld/residual/request (JointTrajectory: the tick's base action, stamped with its observation;
     message layout in nodes/residual_msgs.py), the observation topics (cameras, /arm/ee_pose, /joint_states)
Out: /pld/residual/action (JointTrajectory: the residual, the request's stamp, frame_id
       "request:<n> actor:<version>"; version -1 and a zero residual while there are no weights)
     /pld/residual/status (DiagnosticStatus, 1 Hz): actor version, inference time, unanswered requests
The newest `actor-<version>.safetensors` in `actors_dir` (written by the learner with
rl.checkpoint.export_actor) is loaded within `reload_check_s` on a thread of its own and swapped in
whole; a file that does not load is logged and the weights in use stay.

The observation is the newest this node has heard, not the orchestrator's: the same topics, at most a
frame apart. A request is not answered when that observation is missing or older than the request's by
`max_observation_lag_s`, or when the actor fails on it: the orchestrator counts the tick `missing`
and the base acts alone.

Inference runs on the executor's one thread with one torch thread: a request waits only for the
small callbacks ahead of it, and the orchestrator and the arm keep the other core.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.node import Node
from trajectory_msgs.msg import JointTrajectory

from pld_robot.nodes.image_msgs import from_time
from pld_robot.nodes.observation import EE_STATE_NAMES, ObservationTap
from pld_robot.nodes.params import node_config
from pld_robot.nodes.reload_watcher import ReloadWatcher
from pld_robot.nodes.residual_msgs import (
    NO_ACTOR,
    REPLY_TOPIC,
    REQUEST_TOPIC,
    STATUS_TOPIC,
    parse_request,
    reply_msg,
)
from pld_robot.nodes.spin import run_node
from pld_robot.rl.checkpoint import (
    ExportedActor,
    latest_actor_version,
    load_latest_actor,
)
from pld_robot.rl.encoders import STATE_KEY
from pld_robot.robots.action_spec import FRANKA_EE_DELTA_NAMES


@dataclass(frozen=True)
class ResidualNodeConfig:
    actors_dir: str = "pld_data/residual"  # the learner's run folder (pld-robot learn --out)
    cameras: tuple[str, ...] = ("front", "wrist")  # subscribed; an actor that needs another camera is refused
    action_names: tuple[str, ...] = FRANKA_EE_DELTA_NAMES
    control_hz: float = 10.0
    device: str = "cpu"
    deterministic: bool = False  # false: sample the tanh-Gaussian, as SAC collects its data; true: its mean
    seed: int = 0  # of the sampling
    reload_check_s: float = 1.0
    max_observation_lag_s: float = 0.5

    def __post_init__(self):
        if self.control_hz <= 0 or self.reload_check_s <= 0 or self.max_observation_lag_s <= 0:
            raise ValueError("control_hz, reload_check_s and max_observation_lag_s must be positive")
        if not self.actors_dir:
            raise ValueError("actors_dir: the folder the learner exports actors into is needed")


class ResidualNode(Node):
    def __init__(self, node_name: str = "residual_node", **kwargs):
        super().__init__(node_name, automatically_declare_parameters_from_overrides=True, **kwargs)
        self.config = c = node_config(self, ResidualNodeConfig)
        torch.set_num_threads(1)
        torch.manual_seed(c.seed)
        self.actor: ExportedActor | None = None  # replaced whole by the watcher: a reader takes one reference
        self._refused: int | None = None  # a version that did not load: not retried (nor logged) every poll
        self._tap = ObservationTap(self, c.cameras, c.action_names)
        self._infer_ms: deque[float] = deque(maxlen=100)
        self.unanswered = 0
        self._reply = self.create_publisher(JointTrajectory, REPLY_TOPIC, 10)
        self._status = self.create_publisher(DiagnosticStatus, STATUS_TOPIC, 10)
        self.create_subscription(JointTrajectory, REQUEST_TOPIC, self._on_request, 10)
        self.create_timer(1.0, self._publish_status)
        self.get_logger().info(f"serving the newest actor in {c.actors_dir} (none yet: zero residuals)")
        self._watcher = ReloadWatcher(self._reload, self.config.reload_check_s, "residual-reload", first_now=True)

    def _on_request(self, msg: JointTrajectory) -> None:
        start = time.monotonic()
        actor = self.actor
        try:
            base, _ = parse_request(msg, self.config.action_names)
        except ValueError as exc:
            self.get_logger().error(f"{REQUEST_TOPIC}: {exc}", throttle_duration_sec=5.0)
            return
        if actor is None:
            self._reply.publish(reply_msg(msg, np.zeros_like(base), self.config.action_names,
                                          self.config.control_hz, NO_ACTOR))
            return
        obs = self._tap.latest()
        if obs is None or from_time(msg.header.stamp) - obs.stamp > self.config.max_observation_lag_s:
            self.unanswered += 1
            self.get_logger().warning("no recent observation (cameras, /arm/ee_pose, /joint_states): "
                                      "requests go unanswered", throttle_duration_sec=5.0)
            return
        try:
            residual = actor.policy.residual({STATE_KEY: obs.state, **obs.frames}, base, self.config.deterministic)
        except Exception as exc:  # noqa: BLE001 - e.g. a frame the encoder cannot take: this tick's base acts alone, the node stays
            self.unanswered += 1
            self.get_logger().error(f"actor {actor.version} failed: {type(exc).__name__}: {exc}",
                                    throttle_duration_sec=5.0)
            return
        self._reply.publish(reply_msg(msg, residual, self.config.action_names, self.config.control_hz,
                                      actor.version))
        self._infer_ms.append((time.monotonic() - start) * 1e3)

    def _reload(self) -> None:
        current = self.actor.version if self.actor is not None else 0
        latest = latest_actor_version(self.config.actors_dir)
        if latest is None or latest <= current or latest == self._refused:
            return
        loaded, problem = None, None
        try:
            loaded = load_latest_actor(self.config.actors_dir, newer_than=current, device=self.config.device)
            problem = self._mismatch(loaded) if loaded is not None else None
        except Exception as exc:  # noqa: BLE001 - whatever a damaged file raises, the weights in use stay and polling goes on
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            self._refused = latest
            self.get_logger().error(f"actor {latest} not loaded ({problem}); still using "
                                    f"{'actor ' + str(current) if current else 'no actor (zero residuals)'}")
        elif loaded is not None:
            self.actor = loaded
            self.get_logger().info(f"actor {loaded.version} loaded from {loaded.path}")

    def _mismatch(self, loaded: ExportedActor) -> str | None:
        """Why this robot cannot run the actor, or None."""
        encoder, names = loaded.policy.encoder, tuple(self.config.action_names)
        if loaded.action_spec.names != names:
            return f"its actions are {list(loaded.action_spec.names)}, this robot's {list(names)}"
        if encoder.config.use_state and encoder.state_dim != len(EE_STATE_NAMES):
            return f"it takes a {encoder.state_dim}-dim state, the robot's is {len(EE_STATE_NAMES)}-dim"
        unseen = [camera for camera in encoder.cameras if camera not in self.config.cameras]
        if unseen:
            return f"it looks through camera(s) {unseen}, not in residual_node.cameras {list(self.config.cameras)}"
        return None

    def _publish_status(self) -> None:
        actor, ms = self.actor, np.array(self._infer_ms) if self._infer_ms else np.zeros(1)
        if actor is None:
            level, message = DiagnosticStatus.WARN, f"no actor yet in {self.config.actors_dir}: zero residuals"
        else:
            level, message = DiagnosticStatus.OK, f"actor {actor.version}"
        status = DiagnosticStatus(name=self.get_name(), level=level, message=message)
        status.values = [KeyValue(key=k, value=str(v)) for k, v in (
            ("version", actor.version if actor else NO_ACTOR), ("infer_ms_p50", round(float(np.percentile(ms, 50)), 2)),
            ("infer_ms_max", round(float(ms.max()), 2)), ("unanswered", self.unanswered))]
        self._status.publish(status)

    def destroy_node(self):
        if hasattr(self, "_watcher"):
            self._watcher.stop()
        return super().destroy_node()


def main(args=None) -> None:
    run_node(ResidualNode, args)


if __name__ == "__main__":
    main()
