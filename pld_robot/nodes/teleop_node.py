"""Gamepad teleoperation node: joy input -> teleop action, intervention state, labels, e-stop.

Input is `/joy` from the ROS joy package (`source: joy`) or the gamepad read here through SDL
(`source: sdl`, which also publishes what it read on `/joy`). Output:
  /pld/teleop/action       JointTrajectory, only while the dead-man is held
  /pld/teleop/event        String: intervene_start, intervene_end, success, failure, start, estop
  /pld/teleop/intervening  Bool, on every update
  /pld/success_label       Bool, on every update: the success-label button (Y) is held
  /arm/estop               Bool true, latched (transient local) so a late arm still sees it
It listens to `/arm/command` (the executed action) to take over with the gripper as the arm has it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from builtin_interfaces.msg import Time
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Joy
from std_msgs.msg import Bool, Header, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from pld_robot.nodes.image_msgs import from_time
from pld_robot.nodes.params import node_config
from pld_robot.nodes.spin import run_node
from pld_robot.robots.action_spec import FRANKA_EE_DELTA_NAMES
from pld_robot.teleop.mapping import (
    ACTION_DIM,
    JoyLayoutError,
    JoyMapper,
    TeleopConfig,
    TeleopEvent,
    TeleopOutput,
)

_ERROR_THROTTLE_S = 5.0
_REOPEN_PERIOD_S = 1.0


@dataclass(frozen=True)
class TeleopNodeConfig:
    source: Literal["joy", "sdl"] = "joy"
    action_names: tuple[str, ...] = FRANKA_EE_DELTA_NAMES
    mapping: TeleopConfig = TeleopConfig()
    # source sdl: which gamepad (a non-empty name substring wins over the index) and how often.
    device_id: int = 0
    device_name: str = ""
    poll_hz: float = 100.0
    # source joy: no /joy for this long ends an intervention (the joy node republishes at 20 Hz
    # by default, so silence means it died or the pad is gone).
    input_timeout_s: float = 0.5

    def __post_init__(self):
        if len(self.action_names) != ACTION_DIM:
            raise ValueError(
                f"action_names must name {ACTION_DIM} dimensions "
                f"(dx, dy, dz, droll, dpitch, dyaw, gripper order), got {list(self.action_names)}"
            )
        if self.poll_hz <= 0 or self.input_timeout_s <= 0:
            raise ValueError("poll_hz and input_timeout_s must be positive")


class TeleopNode(Node):
    def __init__(self, node_name: str = "teleop_node", **kwargs):
        self._pad = None  # before Node.__init__, which calls destroy_node() when it fails
        super().__init__(node_name, automatically_declare_parameters_from_overrides=True, **kwargs)
        self.config = node_config(self, TeleopNodeConfig)
        self.mapper = JoyMapper(self.config.mapping)
        self._step_duration = Duration(seconds=1.0 / self.config.mapping.control_hz).to_msg()

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self._action_pub = self.create_publisher(JointTrajectory, "/pld/teleop/action", 10)
        self._event_pub = self.create_publisher(String, "/pld/teleop/event", reliable)
        self._intervening_pub = self.create_publisher(Bool, "/pld/teleop/intervening", 10)
        self._label_pub = self.create_publisher(Bool, "/pld/success_label", 10)
        self._estop_pub = self.create_publisher(Bool, "/arm/estop", latched)
        self.create_subscription(JointTrajectory, "/arm/command", self._on_arm_command, 10)

        if self.config.source == "joy":
            self._last_input = time.monotonic()
            self.create_subscription(Joy, "/joy", self._on_joy, 10)
            self.create_timer(self.config.input_timeout_s / 5, self._check_input_timeout)
        else:
            # Imported here so a robot fed by the joy package never loads SDL.
            from pld_robot.teleop import sdl_gamepad

            self._sdl = sdl_gamepad
            self._last_open = -_REOPEN_PERIOD_S
            self._joy_pub = self.create_publisher(Joy, "/joy", 10)
            self.create_timer(1.0 / self.config.poll_hz, self._poll_gamepad)

    def destroy_node(self):
        if self._pad is not None:
            self._pad.close()
            self._pad = None
        return super().destroy_node()

    def _on_joy(self, msg: Joy) -> None:
        self._last_input = time.monotonic()
        self._handle(msg.axes, msg.buttons, msg.header.stamp)

    def _check_input_timeout(self) -> None:
        stale = time.monotonic() - self._last_input > self.config.input_timeout_s
        if stale and self.mapper.deadman:
            self.get_logger().error(
                f"no /joy for {self.config.input_timeout_s} s while the dead-man was held: "
                "intervention ended (is the joy node running and the gamepad connected?)"
            )
            self._release()

    def _poll_gamepad(self) -> None:
        if self._pad is None and not self._open_gamepad():
            return
        try:
            axes, buttons = self._pad.read()
        except self._sdl.GamepadDisconnected as exc:
            self.get_logger().error(f"{exc}; will reopen it when it is back")
            self._pad.close()
            self._pad = None
            self._release()
            return
        stamp = self._now()
        self._joy_pub.publish(
            Joy(header=Header(stamp=stamp, frame_id="joy"), axes=axes, buttons=buttons)
        )
        self._handle(axes, buttons, stamp)

    def _open_gamepad(self) -> bool:
        if time.monotonic() - self._last_open < _REOPEN_PERIOD_S:
            return False
        self._last_open = time.monotonic()
        device = self.config.device_name or self.config.device_id
        try:
            self._pad = self._sdl.SdlGamepad(device)
        except self._sdl.GamepadError as exc:
            self.get_logger().error(str(exc), throttle_duration_sec=_ERROR_THROTTLE_S)
            return False
        self.get_logger().info(f"reading game controller '{self._pad.name}'")
        return True

    def _on_arm_command(self, msg: JointTrajectory) -> None:
        gripper = self.config.action_names[-1]
        if gripper not in msg.joint_names or not msg.points:
            return
        index = msg.joint_names.index(gripper)
        if index < len(msg.points[0].positions):
            self.mapper.sync_gripper(msg.points[0].positions[index])

    def _handle(self, axes, buttons, stamp: Time) -> None:
        try:
            output = self.mapper.update(axes, buttons, from_time(stamp))
        except JoyLayoutError as exc:
            self.get_logger().error(str(exc), throttle_duration_sec=_ERROR_THROTTLE_S)
            return
        self._publish(output, stamp)

    def _release(self) -> None:
        stamp = self._now()
        self._publish(self.mapper.release(from_time(stamp)), stamp)

    def _publish(self, output: TeleopOutput, stamp: Time) -> None:
        # The e-stop goes out before anything else, and events before the action they bracket.
        if TeleopEvent.ESTOP in output.events:
            self._estop_pub.publish(Bool(data=True))
            self.get_logger().warning("e-stop pressed on the gamepad")
        for event in output.events:
            self._event_pub.publish(String(data=event.value))
        if output.action is not None:
            point = JointTrajectoryPoint(
                positions=output.action.tolist(), time_from_start=self._step_duration
            )
            self._action_pub.publish(
                JointTrajectory(
                    header=Header(stamp=stamp),
                    joint_names=list(self.config.action_names),
                    points=[point],
                )
            )
        self._intervening_pub.publish(Bool(data=output.deadman))
        self._label_pub.publish(Bool(data=output.success_label))

    def _now(self) -> Time:
        return self.get_clock().now().to_msg()


def main(args=None) -> None:
    run_node(TeleopNode, args)


if __name__ == "__main__":
    main()
