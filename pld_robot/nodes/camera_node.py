"""Camera node: publishes each new frame of one camera on the realsense-ros topic names.

`CameraPublisher` is the publishing half on its own, so any node with frames (e.g. sim_node) can use it.
"""

from __future__ import annotations

import threading
from typing import Optional

from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from pld_robot.calibration.camera_info import calibrated_intrinsics
from pld_robot.cameras import make_camera
from pld_robot.cameras.base import Camera, CameraConfig, CameraError, CameraIntrinsics, Frame
from pld_robot.nodes.image_msgs import camera_info, numpy_to_image, to_time
from pld_robot.nodes.params import node_config
from pld_robot.nodes.spin import run_node


class CameraPublisher:
    """`/camera/<name>/color/image_raw` + `camera_info`, and with `depth` also
    `/camera/<name>/aligned_depth_to_color/image_raw` + `camera_info` (depth in mm, 16UC1).
    header.stamp is the capture time; aligned depth shares the color optical frame."""

    def __init__(
        self,
        node: Node,
        name: str,
        intrinsics: CameraIntrinsics,
        frame_id: Optional[str] = None,
        depth: bool = False,
    ):
        self.frame_id = frame_id or f"{name}_color_optical_frame"
        prefix = f"/camera/{name}"
        qos = qos_profile_sensor_data
        self._color = node.create_publisher(Image, f"{prefix}/color/image_raw", qos)
        self._color_info = node.create_publisher(CameraInfo, f"{prefix}/color/camera_info", qos)
        self._depth = self._depth_info = None
        if depth:
            aligned = f"{prefix}/aligned_depth_to_color"
            self._depth = node.create_publisher(Image, f"{aligned}/image_raw", qos)
            self._depth_info = node.create_publisher(CameraInfo, f"{aligned}/camera_info", qos)
        # Only the stamp changes from frame to frame.
        self._info = camera_info(intrinsics, 0.0, self.frame_id)

    def publish(self, frame: Frame) -> None:
        self._color.publish(numpy_to_image(frame.color, frame.stamp, self.frame_id))
        self._info.header.stamp = to_time(frame.stamp)
        self._color_info.publish(self._info)
        if self._depth is not None:
            if frame.depth is None:
                raise ValueError(f"{self.frame_id}: a depth publisher was given a frame without depth")
            self._depth.publish(numpy_to_image(frame.depth, frame.stamp, self.frame_id))
            self._depth_info.publish(self._info)


class CameraNode(Node):
    """Opens the camera of its `CameraConfig` parameters (or the injected `camera`, which it then
    owns: started here, stopped by `destroy_node`) and publishes every new frame from a worker thread."""

    def __init__(self, node_name: str = "camera_node", *, camera: Optional[Camera] = None, **kwargs):
        # Set before Node.__init__: rclpy may call destroy_node() on a node whose __init__ failed.
        self.camera = camera
        self._stop = threading.Event()
        self._worker: Optional[threading.Thread] = None
        kwargs.setdefault("automatically_declare_parameters_from_overrides", True)
        super().__init__(node_name, **kwargs)
        self.config = node_config(self, CameraConfig)
        if self.camera is None:
            self.camera = make_camera(self.config)
        self.camera.start()
        intrinsics = self.camera.intrinsics
        if self.config.calibration:
            intrinsics = calibrated_intrinsics(self.config.calibration, intrinsics)
            self.get_logger().info(f"camera_info from {self.config.calibration}")
        self.camera_publisher = CameraPublisher(
            self, self.config.name, intrinsics, self.config.frame_id or None, self.config.depth
        )
        # A worker, not a timer: it publishes each frame once, as soon as the camera has it.
        self._worker = threading.Thread(
            target=self._publish_loop, name=f"camera-{self.config.name}", daemon=True
        )
        self._worker.start()

    def _publish_loop(self) -> None:
        timeout = max(1.0, 5.0 / self.config.fps)
        while not self._stop.is_set():
            try:
                frame = self.camera.read(timeout)
            except CameraError as exc:
                self.get_logger().warning(str(exc), throttle_duration_sec=5.0)
                self._stop.wait(0.5)  # an ended stream fails at once: do not spin on it
                continue
            try:
                self.camera_publisher.publish(frame)
            except Exception as exc:
                self.get_logger().fatal(f"camera '{self.config.name}' stopped publishing: {exc!r}")
                raise

    def destroy_node(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.join()
        if self.camera is not None:
            self.camera.stop()
        super().destroy_node()


def main(args=None) -> None:
    run_node(CameraNode, args)


if __name__ == "__main__":
    main()
