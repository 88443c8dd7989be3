"""Actions, chunks and arm state <-> standard ROS messages (no custom .msg packages).

An action or a chunk travels as `trajectory_msgs/JointTrajectory`: joint_names = the ActionSpec's
dimension names, one point per step, time_from_start = k / control_hz, header.stamp = the time of the
observation it answers."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from pld_robot.nodes.image_msgs import to_time
from pld_robot.robots.arm import ArmState


def chunk_to_msg(chunk: np.ndarray, names: Sequence[str], control_hz: float, stamp: float) -> JointTrajectory:
    chunk = np.atleast_2d(np.asarray(chunk, dtype=float))
    msg = JointTrajectory()
    msg.header.stamp = to_time(stamp)
    msg.joint_names = list(names)
    for k, action in enumerate(chunk, start=1):
        t = k / control_hz
        point = JointTrajectoryPoint()
        point.positions = action.tolist()
        point.time_from_start = Duration(sec=int(t), nanosec=int(round((t - int(t)) * 1e9)))
        msg.points.append(point)
    return msg


def msg_to_chunk(msg: JointTrajectory, names: Sequence[str]) -> np.ndarray:
    """The chunk in `names` order. Raises ValueError naming missing/unknown dimensions."""
    got = list(msg.joint_names)
    if got != list(names):
        missing = [n for n in names if n not in got]
        unknown = [n for n in got if n not in names]
        if missing or unknown:
            raise ValueError(f"action names do not match the ActionSpec: missing {missing}, unknown {unknown}")
        order = [got.index(n) for n in names]
    else:
        order = list(range(len(names)))
    if not msg.points:
        raise ValueError("action message has no points")
    rows = []
    for i, point in enumerate(msg.points):
        if len(point.positions) != len(got):
            raise ValueError(f"point {i} has {len(point.positions)} values for {len(got)} names")
        rows.append(np.asarray(point.positions, dtype=float)[order])
    return np.stack(rows)


def pose_to_msg(position: np.ndarray, quaternion: np.ndarray, stamp: float, frame_id: str) -> PoseStamped:
    msg = PoseStamped()
    msg.header.stamp = to_time(stamp)
    msg.header.frame_id = frame_id
    p, q = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z = (float(v) for v in position)
    q.x, q.y, q.z, q.w = (float(v) for v in quaternion)
    return msg


def msg_to_pose(msg: PoseStamped) -> tuple[np.ndarray, np.ndarray]:
    p, q = msg.pose.position, msg.pose.orientation
    return np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w])


def joint_state_msg(state: ArmState, joint_names: Sequence[str], finger_names: Sequence[str]) -> JointState:
    """Arm joints plus the two finger joints (each half the gripper width, as in franka_ros2)."""
    msg = JointState()
    msg.header.stamp = to_time(state.stamp)
    msg.name = list(joint_names) + list(finger_names)
    half = state.gripper_width / 2
    msg.position = [float(v) for v in state.joint_positions] + [half] * len(finger_names)
    msg.velocity = [float(v) for v in state.joint_velocities] + [0.0] * len(finger_names)
    return msg
