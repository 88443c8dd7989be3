"""The latest observation of the arm and its cameras, gathered from their topics for whoever records
or acts on it: camera frames, the end-effector state vector, and what the arm executed per command.

In: /camera/<name>/color/image_raw (and aligned depth), /arm/ee_pose, /joint_states, /arm/executed
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory

from pld_robot.nodes.action_msgs import msg_to_chunk, msg_to_pose
from pld_robot.nodes.image_msgs import from_time, image_to_numpy

# the recorded proprioceptive state of an end-effector-controlled arm, in this order
EE_STATE_NAMES = ("x", "y", "z", "qx", "qy", "qz", "qw", "gripper_width")


@dataclass(frozen=True)
class Observation:
    frames: dict[str, np.ndarray]  # store keys: <camera>_rgb, <camera>_depth
    state: np.ndarray  # EE_STATE_NAMES
    stamp: float  # capture time of the oldest part, wall clock


class ObservationTap:
    def __init__(self, node: Node, cameras: Sequence[str], action_names: Sequence[str],
                 depth_cameras: Sequence[str] = ()):
        self._lock = threading.Lock()
        self._action_names = tuple(action_names)
        self._frames: dict[str, tuple[float, np.ndarray]] = {}
        self._pose: tuple[float, np.ndarray] | None = None
        self._gripper_width: float | None = None
        self._executed: dict[float, np.ndarray] = {}
        self._executed_event = threading.Condition(self._lock)
        self.frame_keys = [f"{c}_rgb" for c in cameras] + [f"{c}_depth" for c in depth_cameras]
        for camera in cameras:
            node.create_subscription(Image, f"/camera/{camera}/color/image_raw",
                                     self._on_frame(f"{camera}_rgb"), qos_profile_sensor_data)
        for camera in depth_cameras:
            node.create_subscription(Image, f"/camera/{camera}/aligned_depth_to_color/image_raw",
                                     self._on_frame(f"{camera}_depth"), qos_profile_sensor_data)
        node.create_subscription(PoseStamped, "/arm/ee_pose", self._on_pose, 10)
        node.create_subscription(JointState, "/joint_states", self._on_joints, 10)
        node.create_subscription(JointTrajectory, "/arm/executed", self._on_executed, 10)

    def latest(self) -> Observation | None:
        """The newest of everything, or None until every camera and the arm have been heard from."""
        with self._lock:
            if self._pose is None or self._gripper_width is None or len(self._frames) < len(self.frame_keys):
                return None
            stamp = min([self._pose[0], *(s for s, _ in self._frames.values())])
            state = np.concatenate([self._pose[1], [self._gripper_width]]).astype(np.float32)
            return Observation({k: f for k, (_, f) in self._frames.items()}, state, stamp)

    def wait_ready(self, timeout: float = 20.0) -> Observation:
        deadline = time.monotonic() + timeout
        while (obs := self.latest()) is None:
            if time.monotonic() > deadline:
                with self._lock:
                    missing = [k for k in self.frame_keys if k not in self._frames]
                    if self._pose is None:
                        missing.append("/arm/ee_pose")
                    if self._gripper_width is None:
                        missing.append("/joint_states")
                raise RuntimeError(f"no observation after {timeout:.0f} s: nothing heard from {missing}")
            time.sleep(0.02)
        return obs

    def executed(self, stamp: float, timeout: float = 0.0) -> np.ndarray | None:
        """What the arm executed for the command stamped `stamp` (None: refused, or not heard yet)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while stamp not in self._executed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._executed_event.wait(left)
            return self._executed.pop(stamp)

    def _on_frame(self, key: str):
        def callback(msg: Image) -> None:
            frame = image_to_numpy(msg)
            with self._lock:
                self._frames[key] = (from_time(msg.header.stamp), frame)
        return callback

    def _on_pose(self, msg: PoseStamped) -> None:
        position, quaternion = msg_to_pose(msg)
        with self._lock:
            self._pose = (from_time(msg.header.stamp), np.concatenate([position, quaternion]))

    def _on_joints(self, msg: JointState) -> None:
        fingers = [p for name, p in zip(msg.name, msg.position) if "finger" in name]
        if fingers:
            with self._lock:
                self._gripper_width = float(sum(fingers))

    def _on_executed(self, msg: JointTrajectory) -> None:
        action = msg_to_chunk(msg, self._action_names)[0]
        with self._lock:
            self._executed[from_time(msg.header.stamp)] = action
            while len(self._executed) > 64:  # answers nobody asked for
                self._executed.pop(next(iter(self._executed)))
            self._executed_event.notify_all()
