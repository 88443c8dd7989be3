"""Capturing calibration views on the robot: the newest camera image and the newest arm pose
(/arm/ee_pose, what the driver reports), saved together each time the operator presses Enter.

The arm must be at rest for a capture (move it, let go, then press Enter); the pose and the image
are then the same instant whatever their stamps. A capture whose image or pose is stale (the camera
or arm_node stopped) is refused with the reason.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from pld_robot.calibration.board import BoardDetector
from pld_robot.calibration.views import ViewWriter
from pld_robot.nodes.image_msgs import from_time, image_to_numpy
from pld_robot.paths import use_fastdds_profile
from pld_robot.robots.transforms import quat_to_matrix

MAX_AGE_S = 1.0


class CaptureNode(Node):
    def __init__(self, camera: str, node_name: str = "calibration_capture", **kwargs):
        super().__init__(node_name, **kwargs)
        self._lock = threading.Lock()
        self._image: tuple[float, np.ndarray] | None = None
        self._pose: tuple[float, np.ndarray] | None = None
        self.create_subscription(Image, f"/camera/{camera}/color/image_raw", self._on_image, qos_profile_sensor_data)
        self.create_subscription(PoseStamped, "/arm/ee_pose", self._on_pose, 10)

    def _on_image(self, msg: Image) -> None:
        image = image_to_numpy(msg).copy()
        with self._lock:
            self._image = (time.time(), image)

    def _on_pose(self, msg: PoseStamped) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        pose = np.eye(4)
        pose[:3, :3] = quat_to_matrix([q.x, q.y, q.z, q.w])
        pose[:3, 3] = [p.x, p.y, p.z]
        with self._lock:
            self._pose = (from_time(msg.header.stamp), pose)

    def latest(self) -> tuple[np.ndarray, np.ndarray]:
        """(RGB image, base <- tcp pose); raises RuntimeError naming what is missing or stale."""
        now = time.time()
        with self._lock:
            image, pose = self._image, self._pose
        if image is None or now - image[0] > MAX_AGE_S:
            raise RuntimeError("no fresh camera image: is the camera node running (ros2 topic hz "
                               "/camera/<name>/color/image_raw)?")
        if pose is None or now - pose[0] > MAX_AGE_S:
            raise RuntimeError("no fresh /arm/ee_pose: is arm_node running and connected?")
        return image[1], pose[1]


def capture_views(camera: str, folder: str, views: int, detector: BoardDetector,
                  ask: Callable[[str], str] = input, context=None) -> int:
    """Interactive: each Enter saves one view; `q` stops early. Returns the number saved."""
    use_fastdds_profile()
    own_context = context is None
    if own_context:
        rclpy.init()
    node = CaptureNode(camera, context=context)
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    writer = ViewWriter(folder, camera)
    try:
        while len(writer) < views:
            answer = ask(f"view {len(writer) + 1}/{views}: move the arm (tilt the hand 10-30 deg about a new axis), "
                         "let it settle, press Enter (q to stop) ")
            if answer.strip().lower() == "q":
                break
            try:
                image, pose = node.latest()
            except RuntimeError as exc:
                print(f"not captured: {exc}")
                continue
            found = detector.detect(image)
            if found is None:
                print("not captured: the board is not in the image (or too blurred); move it into view")
                continue
            name = writer.add(image, pose)
            print(f"{name}: {len(found.ids)} of {detector.corner_count} corners, tcp at "
                  f"{' '.join(f'{v:.3f}' for v in pose[:3, 3])} m")
    finally:
        executor.shutdown()
        node.destroy_node()
        if own_context:
            rclpy.try_shutdown()
    return len(writer)
