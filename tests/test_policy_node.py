"""policy_node end to end in the sim graph: `pld-robot serve-policy --backend scripted` in its own
process, the node feeding it camera frames and state over HTTP through the chunk broker, and the base
action of every tick driving the arm until the cube is up; then the server dies and the node says so."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from pld_robot.nodes.action_msgs import msg_to_chunk
from pld_robot.nodes.image_msgs import from_time
from pld_robot.nodes.runner import GraphRunner
from pld_robot.paths import shipped_config
from pld_robot.robots.action_spec import FRANKA_EE_DELTA_NAMES
from waiting import wait_for

pytestmark = pytest.mark.slow

HOST = "127.0.0.64"  # franky-sim binds fixed ports: an address of this module's own


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Follower(Node):
    """Forwards /pld/base/action to /arm/command, as the rollout orchestrator will, and watches."""

    def __init__(self):
        super().__init__("base_follower")
        self.actions: list[tuple[float, np.ndarray]] = []
        self.chunks: list[tuple[float, float, np.ndarray]] = []  # (stamp, received, chunk)
        self.status: list[DiagnosticStatus] = []
        self.cube_z = None
        self.forward = False
        self._command = self.create_publisher(JointTrajectory, "/arm/command", 10)
        self.create_subscription(JointTrajectory, "/pld/base/action", self._on_action, 10)
        self.create_subscription(JointTrajectory, "/pld/base/chunk", self._on_chunk, 10)
        self.create_subscription(DiagnosticStatus, "/pld/base/status", self.status.append, 10)
        self.create_subscription(PoseStamped, "/sim/cube_pose", self._on_cube, 10)
        self.home = self.create_client(Trigger, "/arm/home")
        self.reset = self.create_client(Trigger, "/sim/reset_cube")

    def _on_action(self, msg: JointTrajectory) -> None:
        self.actions.append((time.time(), msg_to_chunk(msg, FRANKA_EE_DELTA_NAMES)[0]))
        if self.forward:
            self._command.publish(msg)

    def _on_chunk(self, msg: JointTrajectory) -> None:
        self.chunks.append((from_time(msg.header.stamp), time.time(), msg_to_chunk(msg, FRANKA_EE_DELTA_NAMES)))

    def _on_cube(self, msg: PoseStamped) -> None:
        self.cube_z = msg.pose.position.z

    def call(self, client) -> None:
        assert client.wait_for_service(timeout_sec=10.0), client.srv_name
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + 60
        while not future.done():
            assert time.monotonic() < deadline, f"{client.srv_name} did not answer"
            time.sleep(0.02)
        assert future.result().success, future.result().message


def test_the_base_policy_drives_the_arm_through_server_broker_and_node(tmp_path):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "pld_robot.cli", "serve-policy", "--backend", "scripted",
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _healthy(url), 30, "the policy server")
        config = tmp_path / "sim_policy.yaml"
        config.write_text(shipped_config("sim.yaml").read_text().replace('"127.0.0.1"', f'"{HOST}"') + f"""
policy_node:
  ros__parameters:
    server_url: "{url}"
    send_ground_truth: true
    unhealthy_after_s: 1.0
""")
        os.environ["ROS_DOMAIN_ID"] = str(random.randint(161, 200))
        with GraphRunner(config) as graph:
            watcher = graph.add_node(Follower())
            wait_for(lambda: len(watcher.actions) > 5, 30, "base actions on /pld/base/action")
            watcher.call(watcher.home)
            watcher.call(watcher.reset)
            watcher.forward = True
            wait_for(lambda: watcher.cube_z is not None and watcher.cube_z > 0.09, 40, "the cube to be lifted")
            watcher.forward = False

            stamps = np.array([(stamp, received) for stamp, received, _ in watcher.chunks])
            assert len(stamps) > 10
            # stamped with the observation they answer: before their arrival, by less than a second
            assert np.all(stamps[:, 0] <= stamps[:, 1]) and np.all(stamps[:, 1] - stamps[:, 0] < 1.0)
            assert all(c.shape == (10, 7) and np.isfinite(c).all() for _, _, c in watcher.chunks)
            assert watcher.status[-1].level == DiagnosticStatus.OK

            server.kill()
            server.wait(10)
            wait_for(lambda: watcher.status and watcher.status[-1].level == DiagnosticStatus.ERROR, 10,
                     "/pld/base/status to report the server gone")
            assert "no chunk from the policy server" in watcher.status[-1].message
            time.sleep(2.5)  # the last chunk runs out
            count = len(watcher.actions)
            time.sleep(1.0)
            assert len(watcher.actions) == count, "no base actions once the chunks ran out"
    finally:
        server.kill()
        server.wait(10)


def test_a_refill_below_longer_than_the_policys_chunks_is_shortened_not_fatal():
    """refill_below is set before the policy is known: 50 against chunks of 10 means "ask at once"."""
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from pld_robot.nodes.policy_node import PolicyNode

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "pld_robot.cli", "serve-policy", "--backend", "scripted",
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    context = Context()
    rclpy.init(context=context, domain_id=random.randint(161, 200))
    node = None
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _healthy(url), 30, "the policy server")
        node = PolicyNode(context=context, parameter_overrides=[Parameter("server_url", value=url),
                                                                Parameter("refill_below", value=50)])
        assert node.spec.chunk_length == 10 and node._broker._refill_below == 10
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.shutdown(context=context)
        server.kill()
        server.wait(10)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False
