"""sim_operator: the person at the robot, simulated, so the rollout loop runs unattended in the sim lab.

When the orchestrator waits for a reset, it puts a fresh random cube on the table (/sim/reset_cube)
and presses START (/pld/teleop/event); after an arm fault it calls /arm/recover, and once a fault has
cleared it presses START again. It holds the success-label button while the ground truth says
success (the cube's bottom above `lift_height`): /pld/success_label, which the recorder stores per
frame and train-reward learns from. With `play_reward` it also stands in for the reward classifier
(/pld/reward/success_prob, and /pld/reward/success after `success_ticks` lifted ticks in a row);
turn that off when a reward_node judges instead.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from std_msgs.msg import Bool, Float32, Header, Int32, String
from std_srvs.srv import Trigger

from pld_robot.nodes.image_msgs import to_time
from pld_robot.nodes.params import node_config
from pld_robot.nodes.qos import LATCHED
from pld_robot.nodes.spin import run_node
from pld_robot.reward.detector import SuccessDetector


@dataclass(frozen=True)
class SimOperatorConfig:
    lift_height: float = 0.05  # as sim_node's lab.lift_height
    cube_size: float = 0.04  # as sim_node's lab.cube_size
    settle_s: float = 0.3  # after a reset, before pressing START: the cube lands
    rate_hz: float = 10.0
    play_reward: bool = True  # stand in for the reward classifier with the ground truth
    success_ticks: int = 3  # play_reward: lifted this many ticks in a row declares success


class SimOperator(Node):
    def __init__(self, node_name: str = "sim_operator", **kwargs):
        super().__init__(node_name, automatically_declare_parameters_from_overrides=True, **kwargs)
        self.config = node_config(self, SimOperatorConfig)
        self._lifted = False
        self._stage = 0
        self._detector = SuccessDetector(0.5, self.config.success_ticks)
        self._resetting = False
        self._press_at: float | None = None
        self._prob = self.create_publisher(Float32, "/pld/reward/success_prob", 10)
        self._success = self.create_publisher(Header, "/pld/reward/success", 10)
        self._label = self.create_publisher(Bool, "/pld/success_label", 10)
        self._event = self.create_publisher(String, "/pld/teleop/event", 10)
        self._reset = self.create_client(Trigger, "/sim/reset_cube")
        self._recover = self.create_client(Trigger, "/arm/recover")
        self._last_recover = -1e9
        self.create_subscription(PoseStamped, "/sim/cube_pose", self._on_cube, 10)
        self.create_subscription(String, "/pld/episode/status", self._on_status, 10)
        self.create_subscription(Int32, "/pld/reward/stage", self._on_stage, LATCHED)
        self.create_timer(1.0 / self.config.rate_hz, self._publish)

    def _on_cube(self, msg: PoseStamped) -> None:
        self._lifted = msg.pose.position.z - self.config.cube_size / 2 > self.config.lift_height
        # At the ground truth's own rate: held to the 10 Hz timer, the label lagged the arm by up to a
        # tick (2 cm of lift), and episodes the classifier rightly ended looked like false successes.
        self._label.publish(Bool(data=self._lifted))

    def _on_stage(self, msg: Int32) -> None:
        self._stage = msg.data
        self._detector.reset()

    def _on_status(self, msg: String) -> None:
        status = json.loads(msg.data)
        if status["state"] == "faulted" and status["fault"] is None and self._press_at is None:
            self._press_at = time.monotonic()  # the fault is gone: resume, as the person would
        fault = status["fault"] or ""
        if fault.startswith("arm:") and time.monotonic() - self._last_recover > 2.0 and self._recover.service_is_ready():
            self._last_recover = time.monotonic()  # a reflex or a refused motion: recover, as the person would
            self._recover.call_async(Trigger.Request())
        if status["state"] != "waiting_for_reset":
            self._resetting = False
            return
        if not self._resetting and self._reset.service_is_ready():
            self._resetting = True
            self._reset.call_async(Trigger.Request()).add_done_callback(self._reset_done)

    def _reset_done(self, _future) -> None:
        self._press_at = time.monotonic() + self.config.settle_s

    def _publish(self) -> None:
        if self.config.play_reward:
            self._prob.publish(Float32(data=1.0 if self._lifted else 0.0))
            if self._detector.update(float(self._lifted)):
                self._success.publish(Header(stamp=to_time(time.time()), frame_id=str(self._stage)))
        if self._press_at is not None and time.monotonic() >= self._press_at:
            self._press_at = None
            self._event.publish(String(data="start"))


def main(args=None) -> None:
    run_node(SimOperator, args)


if __name__ == "__main__":
    main()
