"""The residual's request and reply: standard JointTrajectory messages (the action contract).

Request, orchestrator -> residual_node on /pld/residual/request: joint_names = the action names, one
point = this tick's base action, header.stamp = the stamp of the observation the tick acts on,
header.frame_id = "request:<n>" (n counts the orchestrator's requests).
Reply, residual_node -> orchestrator on /pld/residual/action: the same names, one point = the
residual (physical units, to add to the base action), the request's header.stamp unchanged, and
header.frame_id = "request:<n> actor:<version>" (version -1: no actor weights yet, the point is zero).

The request number is there because two ticks can act on the same observation (a camera frame a little
late is still the newest at the next tick), and a late reply to the first must not be taken for the
second's. The actor version rides in frame_id so that it travels with the very residual it produced.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from trajectory_msgs.msg import JointTrajectory

from pld_robot.nodes.action_msgs import chunk_to_msg, msg_to_chunk

REQUEST_TOPIC = "/pld/residual/request"
REPLY_TOPIC = "/pld/residual/action"
STATUS_TOPIC = "/pld/residual/status"
NO_ACTOR = -1


def request_msg(base: np.ndarray, names: Sequence[str], control_hz: float, stamp: Time, number: int) -> JointTrajectory:
    msg = chunk_to_msg(base[None], names, control_hz, 0.0)
    msg.header.stamp, msg.header.frame_id = stamp, f"request:{number}"
    return msg


def parse_request(msg: JointTrajectory, names: Sequence[str]) -> tuple[np.ndarray, int]:
    """(base action, request number). Raises ValueError when the message is not a request."""
    return msg_to_chunk(msg, names)[0], _fields(msg.header.frame_id)["request"]


def reply_msg(request: JointTrajectory, residual: np.ndarray, names: Sequence[str], control_hz: float,
              version: int) -> JointTrajectory:
    msg = chunk_to_msg(residual[None], names, control_hz, 0.0)
    msg.header.stamp = request.header.stamp
    msg.header.frame_id = f"{request.header.frame_id} actor:{version}"
    return msg


def parse_reply(msg: JointTrajectory, names: Sequence[str]) -> tuple[np.ndarray, int, int]:
    """(residual, request number, actor version). Raises ValueError when the message is not a reply."""
    fields = _fields(msg.header.frame_id)
    if "actor" not in fields:
        raise ValueError(f"residual reply: frame_id {msg.header.frame_id!r} names no actor version")
    return msg_to_chunk(msg, names)[0], fields["request"], fields["actor"]


def _fields(frame_id: str) -> dict[str, int]:
    try:
        fields = {key: int(value) for key, value in (item.split(":") for item in frame_id.split())}
    except ValueError:
        raise ValueError(f"residual message: frame_id {frame_id!r} is not 'request:<n>[ actor:<version>]'") from None
    if "request" not in fields:
        raise ValueError(f"residual message: frame_id {frame_id!r} names no request number")
    return fields
