"""arm_node: the arm driver (Franka over franky, or the YAM over CAN: `driver`) behind ROS topics
and services.

In:  /arm/command (JointTrajectory; the first point is executed now), /arm/estop (Bool, latched)
Out: /joint_states, /arm/ee_pose, /arm/executed (what the safety filter let through), /arm/status
Srv: /arm/home, /arm/hold, /arm/recover, /arm/reset_estop (std_srvs/Trigger)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from pld_robot.nodes.action_msgs import chunk_to_msg, joint_state_msg, msg_to_chunk, pose_to_msg
from pld_robot.nodes.image_msgs import from_time
from pld_robot.nodes.params import node_config
from pld_robot.nodes.qos import LATCHED
from pld_robot.nodes.spin import run_node
from pld_robot.robots.arm import Arm, ArmFault
from pld_robot.robots.franka import FrankaArm, FrankaConfig
from pld_robot.robots.safety import EStopEngaged, UnsafeCommand
from pld_robot.robots.yam import YamArm, YamConfig

ESTOP_QOS = LATCHED


@dataclass(frozen=True)
class ArmNodeConfig:
    driver: Literal["franka", "yam"] = "franka"
    arm: FrankaConfig | YamConfig = field(default_factory=FrankaConfig)  # the driver's own settings
    state_hz: float = 100.0
    base_frame: str = "base"
    joint_prefix: str = "fr3_"

    def __post_init__(self):
        if not self.state_hz > 0:
            raise ValueError(f"state_hz must be positive, got {self.state_hz}")
        wanted = YamConfig if self.driver == "yam" else FrankaConfig
        if not isinstance(self.arm, wanted):
            raise ValueError(f"driver is '{self.driver}' but the arm section holds {type(self.arm).__name__} "
                             f"settings; give it {wanted.__name__} keys")


class ArmNode(Node):
    def __init__(self, node_name: str = "arm_node", arm: Arm | None = None, **kwargs):
        super().__init__(node_name, automatically_declare_parameters_from_overrides=True, **kwargs)
        self.arm: Arm | None = None
        self.config = node_config(self, ArmNodeConfig)
        cfg = self.config.arm
        self.arm = arm or (YamArm(cfg) if isinstance(cfg, YamConfig) else FrankaArm(cfg))
        self._hardware_id = f"{cfg.interface}:{cfg.channel}" if isinstance(cfg, YamConfig) else cfg.host
        self.arm.connect()
        self._status = ("ok", DiagnosticStatus.OK)
        self._status_lock = threading.Lock()
        prefix = self.config.joint_prefix
        joints = len(self.arm.state().joint_positions)
        self._joint_names = [f"{prefix}joint{i}" for i in range(1, joints + 1)]
        self._finger_names = [f"{prefix}finger_joint1", f"{prefix}finger_joint2"]

        self._joint_pub = self.create_publisher(JointState, "/joint_states", 10)
        self._pose_pub = self.create_publisher(PoseStamped, "/arm/ee_pose", 10)
        self._executed_pub = self.create_publisher(JointTrajectory, "/arm/executed", 10)
        self._status_pub = self.create_publisher(DiagnosticStatus, "/arm/status", 10)

        commands = MutuallyExclusiveCallbackGroup()  # ticks execute in order, never concurrently
        self.create_subscription(JointTrajectory, "/arm/command", self._on_command, 10, callback_group=commands)
        self.create_subscription(Bool, "/arm/estop", self._on_estop, ESTOP_QOS)
        # Homing blocks for seconds: its own group keeps state publishing and the e-stop alive.
        slow = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, "/arm/home", self._srv(self.arm.home, "homed"), callback_group=slow)
        self.create_service(Trigger, "/arm/recover", self._srv(self.arm.recover, "recovered"), callback_group=slow)
        self.create_service(Trigger, "/arm/hold", self._srv(self.arm.hold, "holding"))
        self.create_service(Trigger, "/arm/reset_estop", self._srv(self.arm.reset_estop, "e-stop reset"))
        self.create_timer(1.0 / self.config.state_hz, self._publish_state, callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(0.5, self._publish_status)

    def _on_command(self, msg: JointTrajectory) -> None:
        try:
            action = msg_to_chunk(msg, self.arm.spec.names)[0]
            target = self.arm.step(action)
        except (UnsafeCommand, ValueError) as exc:
            self._set_status(f"command refused: {exc}", DiagnosticStatus.WARN)
            self.get_logger().error(str(exc), throttle_duration_sec=1.0)
            return
        except EStopEngaged as exc:
            self._set_status(str(exc), DiagnosticStatus.ERROR)
            self.get_logger().warning(str(exc), throttle_duration_sec=2.0)
            return
        except Exception as exc:  # noqa: BLE001 - ArmFault or anything franky raises: report, stay up
            self._set_status(f"fault: {exc}", DiagnosticStatus.ERROR)
            self.get_logger().error(str(exc), throttle_duration_sec=1.0)
            return
        self._set_status("ok" if not target.clipped else f"clipped: {', '.join(target.clipped)}",
                         DiagnosticStatus.OK)
        self._executed_pub.publish(
            chunk_to_msg(target.executed, self.arm.spec.names, self.arm.spec.control_hz, from_time(msg.header.stamp))
        )

    def _on_estop(self, msg: Bool) -> None:
        if msg.data:
            self.arm.estop("e-stop message on /arm/estop")
            self._set_status(f"e-stop: {self.arm.estop_reason}", DiagnosticStatus.ERROR)

    def _publish_state(self) -> None:
        try:
            state = self.arm.state()
        except ArmFault as exc:
            self.get_logger().error(f"cannot read the arm: {exc}", throttle_duration_sec=2.0)
            return
        self._joint_pub.publish(joint_state_msg(state, self._joint_names, self._finger_names))
        if np.all(np.isfinite(state.ee_position)):  # a YAM without a model has no pose to give
            self._pose_pub.publish(pose_to_msg(state.ee_position, state.ee_quaternion, state.stamp, self.config.base_frame))

    def _set_status(self, message: str, level: bytes) -> None:
        with self._status_lock:
            changed = self._status[0] != message
            self._status = (message, level)
        if changed:
            self._publish_status()

    def _publish_status(self) -> None:
        message, level = self._status
        msg = DiagnosticStatus(level=level, name="arm", message=message, hardware_id=self._hardware_id)
        msg.values = [
            KeyValue(key="estop", value=str(self.arm.estop_reason or "")),
            KeyValue(key="watchdog_stops", value=str(self.arm.watchdog_stops)),
        ]
        self._status_pub.publish(msg)

    def _srv(self, action, done: str):
        def handle(request, response):
            try:
                action()
                response.success, response.message = True, done
                if done != "holding":
                    self._set_status("ok", DiagnosticStatus.OK)
            except Exception as exc:  # noqa: BLE001 - a failed request must never kill the node
                response.success, response.message = False, f"{type(exc).__name__}: {exc}"
                self._set_status(response.message, DiagnosticStatus.ERROR)
            return response

        return handle

    def destroy_node(self):
        if self.arm is not None:
            self.arm.close()
            self.arm = None
        return super().destroy_node()


def main(args=None) -> None:
    run_node(ArmNode, args, threads=4)


if __name__ == "__main__":
    main()
