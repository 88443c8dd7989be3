"""Drives the scripted pick-up expert through the lab graph, for the graph tests: it sees the arm
only through /arm/ee_pose and commands it only through /arm/command, as a policy would; the cube pose
comes from the sim's ground truth (/sim/cube_pose)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from pld_robot.nodes.action_msgs import chunk_to_msg, msg_to_pose
from pld_robot.nodes.image_msgs import from_time
from pld_robot.robots.action_spec import ActionSpec
from pld_robot.sim.expert import PickUpExpert


@dataclass(frozen=True)
class EpisodeResult:
    index: int
    lifted: bool
    duration_s: float
    steps: int
    cube_height: float


class ScriptedPickUpNode(Node):
    def __init__(self, spec: ActionSpec, lift_height: float, cube_size: float, node_name: str = "scripted_pickup"):
        super().__init__(node_name)
        self.spec = spec
        self._lift_height = lift_height
        self._cube_size = cube_size
        self._ee: tuple[float, np.ndarray, np.ndarray] | None = None
        self._cube: tuple[np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()
        self.create_subscription(PoseStamped, "/arm/ee_pose", self._on_ee, 10)
        self.create_subscription(PoseStamped, "/sim/cube_pose", self._on_cube, 10)
        self._command = self.create_publisher(JointTrajectory, "/arm/command", 10)
        self._home = self.create_client(Trigger, "/arm/home")
        self._reset = self.create_client(Trigger, "/sim/reset_cube")
        self._hold = self.create_client(Trigger, "/arm/hold")

    def _on_ee(self, msg: PoseStamped) -> None:
        with self._lock:
            self._ee = (from_time(msg.header.stamp), *msg_to_pose(msg))

    def _on_cube(self, msg: PoseStamped) -> None:
        with self._lock:
            self._cube = msg_to_pose(msg)

    def call(self, client, timeout: float = 60.0) -> str:
        if not client.wait_for_service(timeout_sec=10.0):
            raise RuntimeError(f"service {client.srv_name} is not available")
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"service {client.srv_name} did not answer within {timeout:.0f} s")
            time.sleep(0.01)
        result = future.result()
        if not result.success:
            raise RuntimeError(f"{client.srv_name} failed: {result.message}")
        return result.message

    def wait_for_inputs(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self._ee is None or self._cube is None:
            if time.monotonic() > deadline:
                raise RuntimeError("no /arm/ee_pose or /sim/cube_pose: is the graph running?")
            time.sleep(0.05)

    def run_episode(self, index: int, max_steps: int) -> EpisodeResult:
        self.call(self._home)
        self.call(self._reset)
        time.sleep(0.2)  # a fresh cube pose reaches us
        expert = PickUpExpert(self.spec)
        start = time.monotonic()
        steps = 0
        for steps in range(1, max_steps + 1):
            with self._lock:
                (_, ee_position, ee_quaternion), (cube_position, cube_quaternion) = self._ee, self._cube
            action = expert.act(ee_position, ee_quaternion, cube_position, cube_quaternion)
            self._command.publish(chunk_to_msg(action, self.spec.names, self.spec.control_hz, time.time()))
            if expert.phase == "done":
                break
            time.sleep(max(0.0, start + steps * self.spec.period - time.monotonic()))
        duration = time.monotonic() - start
        self.call(self._hold)  # the episode is over: stop on purpose rather than by the watchdog
        time.sleep(0.3)  # let the cube settle in the hand before judging
        with self._lock:
            cube_position = self._cube[0]
        lifted = bool(cube_position[2] - self._cube_size / 2 > self._lift_height)
        return EpisodeResult(index, lifted, duration, steps, float(cube_position[2]))
