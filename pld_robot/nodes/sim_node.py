"""sim_node: hosts the sim lab (franky-sim on loopback, so arm_node connects to it over the real
libfranka protocol) and publishes its cameras like camera nodes and its cube pose as ground truth.

Out: /camera/<name>/color/image_raw + camera_info for each sim camera, /sim/cube_pose (PoseStamped)
Srv: /sim/reset_cube (std_srvs/Trigger): a new random cube pose
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from std_srvs.srv import Trigger

from pld_robot.cameras.base import CameraError
from pld_robot.nodes.action_msgs import pose_to_msg
from pld_robot.nodes.camera_node import CameraPublisher
from pld_robot.nodes.params import node_config
from pld_robot.nodes.spin import run_node
from pld_robot.sim.lab import SimLab, SimLabConfig


@dataclass(frozen=True)
class SimNodeConfig:
    lab: SimLabConfig = field(default_factory=SimLabConfig)
    ground_truth_hz: float = 30.0

    def __post_init__(self):
        if not self.ground_truth_hz > 0:
            raise ValueError(f"ground_truth_hz must be positive, got {self.ground_truth_hz}")


class SimNode(Node):
    def __init__(self, node_name: str = "sim_node", **kwargs):
        super().__init__(node_name, automatically_declare_parameters_from_overrides=True, **kwargs)
        self._stopping = threading.Event()
        self._camera_threads: list[threading.Thread] = []
        self.lab: SimLab | None = None
        self.config = node_config(self, SimNodeConfig)
        self.lab = SimLab(self.config.lab).start()
        self._cube_pub = self.create_publisher(PoseStamped, "/sim/cube_pose", 10)
        self.create_service(Trigger, "/sim/reset_cube", self._reset_cube)
        self.create_timer(1.0 / self.config.ground_truth_hz, self._publish_cube)
        self._camera_threads = [
            threading.Thread(target=self._stream, args=(camera,), name=f"sim-cam-{name}", daemon=True)
            for name, camera in self.lab.cameras.items()
        ]
        for thread in self._camera_threads:
            thread.start()
        self.get_logger().info(f"sim lab up: Franka at {self.lab.host}, cameras {sorted(self.lab.cameras)}")

    def _stream(self, camera) -> None:
        publisher = CameraPublisher(self, camera.name, camera.intrinsics)
        while not self._stopping.is_set():
            try:
                frame = camera.read(timeout=0.5)
            except CameraError:
                continue  # renderer not up yet or stopping; the node stays alive
            publisher.publish(frame)

    def _publish_cube(self) -> None:
        position, quaternion = self.lab.cube_pose()
        self._cube_pub.publish(pose_to_msg(position, quaternion, time.time(), "world"))

    def _reset_cube(self, request, response):
        x, y, yaw = self.lab.reset_cube()
        response.success, response.message = True, f"cube at x={x:.3f} y={y:.3f} yaw={yaw:.2f}"
        return response

    def destroy_node(self):
        self._stopping.set()
        for thread in self._camera_threads:
            thread.join(timeout=1.0)
        if self.lab is not None:
            self.lab.stop()
            self.lab = None
        return super().destroy_node()


def main(args=None) -> None:
    run_node(SimNode, args, threads=2)


if __name__ == "__main__":
    main()
