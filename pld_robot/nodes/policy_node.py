"""policy_node: feeds the latest camera frames and state to the chunk broker, which asks the policy
server for chunks ahead of time, and publishes the base policy's action for every control tick.

In:  /camera/<name>/color/image_raw (the cameras of the server's spec), /arm/ee_pose, /joint_states,
     /sim/cube_pose (only with `send_ground_truth`, for the sim's scripted policy)
Out: /pld/base/chunk   (JointTrajectory) each chunk as the server sent it, stamped with its observation
     /pld/base/action  (JointTrajectory) the action for this tick, one point; nothing while starved
     /pld/base/status  (DiagnosticStatus) OK / ERROR (server gone) with the broker's counters
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from trajectory_msgs.msg import JointTrajectory

from pld_robot.nodes.action_msgs import chunk_to_msg, msg_to_pose
from pld_robot.nodes.observation import EE_STATE_NAMES, ObservationTap
from pld_robot.nodes.params import node_config
from pld_robot.nodes.spin import run_node
from pld_robot.policy.broker import ChunkBroker
from pld_robot.policy.client import ClientSource, PolicyClient, WebSocketPolicyClient
from pld_robot.policy.spec import Observation


@dataclass(frozen=True)
class PolicyNodeConfig:
    server_url: str = "http://127.0.0.1:8000"
    transport: str = "http"  # http or websocket
    token_env: str = "PLD_POLICY_TOKEN"  # the bearer token is read from this environment variable
    prompt: str = "pick up the cube"
    refill_below: int = 5  # ask for the next chunk when fewer actions than this are left
    ensemble: bool = False  # ACT-style temporal ensembling of overlapping chunks
    max_chunk_age_s: float = 2.0
    unhealthy_after_s: float = 1.0
    timeout_s: float = 5.0
    send_ground_truth: bool = False  # the sim's scripted policy needs the cube pose

    def __post_init__(self):
        if self.transport not in ("http", "websocket"):
            raise ValueError(f"transport must be http or websocket, got {self.transport!r}")


class PolicyNode(Node):
    def __init__(self, node_name: str = "policy_node", **kwargs):
        self._broker = None  # before Node.__init__, which calls destroy_node() when it fails
        super().__init__(node_name, automatically_declare_parameters_from_overrides=True, **kwargs)
        self.config = c = node_config(self, PolicyNodeConfig)
        token = os.environ.get(c.token_env) or None
        client_cls = PolicyClient if c.transport == "http" else WebSocketPolicyClient
        self._client = client_cls(c.server_url, token=token, timeout_s=c.timeout_s)
        self.spec = spec = self._client.spec
        if tuple(spec.state_names) != EE_STATE_NAMES:
            raise RuntimeError(f"the policy at {c.server_url} expects state {list(spec.state_names)}; "
                               f"this robot records {list(EE_STATE_NAMES)}")
        self._tap = ObservationTap(self, list(spec.cameras), spec.action_names)
        self._lock = threading.Lock()
        self._stamps: dict[int, float] = {}  # id(observation) -> its capture time (wall clock)
        self._cube: tuple[np.ndarray, np.ndarray] | None = None
        if c.send_ground_truth:
            self.create_subscription(PoseStamped, "/sim/cube_pose", self._on_cube, 10)
        self._chunk_pub = self.create_publisher(JointTrajectory, "/pld/base/chunk", 10)
        self._action_pub = self.create_publisher(JointTrajectory, "/pld/base/action", 10)
        self._status_pub = self.create_publisher(DiagnosticStatus, "/pld/base/status", 10)
        # The parameter is set before the policy is known; a shorter chunk than it just means "ask at once".
        refill_below = min(c.refill_below, spec.chunk_length)
        if refill_below < c.refill_below:
            self.get_logger().warning(f"refill_below {c.refill_below} exceeds the policy's chunk length "
                                      f"{spec.chunk_length}: using {refill_below} (the next chunk is asked for at once)")
        self._broker = ChunkBroker(ClientSource(self._client, self._publish_chunk), spec,
                                   refill_below=refill_below, ensemble=c.ensemble,
                                   max_chunk_age_s=c.max_chunk_age_s, unhealthy_after_s=c.unhealthy_after_s)
        self._broker.start()
        self.create_timer(1.0 / spec.control_hz, self._tick)
        self.create_timer(0.5, self._publish_status)
        self.get_logger().info(f"policy {spec.backend} {spec.version!r} at {c.server_url} ({c.transport}): "
                               f"chunks of {spec.chunk_length} at {spec.control_hz:g} Hz")

    def destroy_node(self):
        if self._broker is not None:
            self._broker.close()
            self._client.close()
            self._broker = None
        return super().destroy_node()

    def _on_cube(self, msg: PoseStamped) -> None:
        with self._lock:
            self._cube = msg_to_pose(msg)

    def _tick(self) -> None:
        obs = self._tap.latest()
        if obs is not None:
            extra = {}
            if self.config.send_ground_truth:
                with self._lock:
                    if self._cube is None:
                        return
                    extra = {"cube_position": self._cube[0], "cube_quaternion": self._cube[1]}
            images = {name: _fit(obs.frames[f"{name}_rgb"], hw) for name, hw in self.spec.cameras.items()}
            request = Observation(images=images, state=obs.state, prompt=self.config.prompt, extra=extra)
            with self._lock:
                self._stamps = {id(request): obs.stamp}  # only the newest request can be sent
            # the broker runs on the monotonic clock: the capture time, moved onto it
            self._broker.observe(request, time.monotonic() - (time.time() - obs.stamp))
        action = self._broker.action(time.monotonic())
        if action is not None:
            self._action_pub.publish(chunk_to_msg(action[None], self.spec.action_names, self.spec.control_hz,
                                                  time.time()))

    def _publish_chunk(self, obs: Observation, chunk: np.ndarray) -> None:
        with self._lock:
            stamp = self._stamps.get(id(obs), time.time())
        self._chunk_pub.publish(chunk_to_msg(chunk, self.spec.action_names, self.spec.control_hz, stamp))

    def _publish_status(self) -> None:
        s = self._broker.status()
        msg = DiagnosticStatus(name="policy", hardware_id=self.config.server_url,
                               level=DiagnosticStatus.OK if s.healthy else DiagnosticStatus.ERROR,
                               message="ok" if s.healthy else
                               f"no chunk from the policy server: {s.last_error or 'waiting for the first one'}")
        msg.values = [KeyValue(key=k, value=str(v)) for k, v in
                      (("chunks_received", s.chunks_received), ("starved_ticks", s.starved_ticks),
                       ("errors", s.errors), ("last_rtt_ms", s.last_rtt_ms), ("version", self.spec.version))]
        self._status_pub.publish(msg)


def _fit(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """The camera's frame at the size the policy expects (the server refuses any other)."""
    height, width = hw
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def main(args=None) -> None:
    run_node(PolicyNode, args)


if __name__ == "__main__":
    main()
