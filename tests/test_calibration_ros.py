"""The calibration's ROS side: camera_node publishes CameraInfo from a calibration YAML, capture
collects (image, /arm/ee_pose) views, and `pld-robot sim --calibration` stores the calibration with
every recorded episode."""

from __future__ import annotations

import os
import random
import threading
import time

import numpy as np
import pytest
import rclpy
from charuco_render import BoardRenderer, look_at_board
from geometry_msgs.msg import PoseStamped
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from pld_robot.calibration.board import BoardDetector, BoardSpec
from pld_robot.calibration.camera_info import save_camera_yaml
from pld_robot.calibration.views import load_views
from pld_robot.cameras.base import CameraIntrinsics, Frame
from pld_robot.config import ConfigError
from pld_robot.nodes.camera_node import CameraNode
from pld_robot.nodes.image_msgs import numpy_to_image, to_time

NOMINAL = CameraIntrinsics(160, 120, 100.0, 100.0, 79.5, 59.5)
CALIBRATED = CameraIntrinsics(160, 120, 103.2, 102.9, 81.1, 58.7, (0.05, -0.1, 0.001, 0.0, 0.0))


class StillCamera:
    """A camera that delivers one grey frame every 20 ms."""

    name = "still"
    intrinsics = NOMINAL

    def __init__(self):
        self._seq = 0

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def read(self, timeout: float = 1.0) -> Frame:
        time.sleep(0.02)
        self._seq += 1
        return Frame(np.full((120, 160, 3), 128, np.uint8), time.time(), self._seq)


@pytest.fixture
def context():
    ctx = Context()
    # a private DDS domain: other test sessions on this machine publish camera topics too
    rclpy.init(context=ctx, domain_id=random.Random(os.getpid() + 7).randint(120, 230))
    yield ctx
    rclpy.try_shutdown(context=ctx)


def spin_until(context, node, done, timeout=10.0) -> None:
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    executor.shutdown()


def test_camera_node_publishes_camera_info_from_the_calibration(tmp_path, context):
    path = tmp_path / "still.yaml"
    save_camera_yaml(path, CALIBRATED, "still")
    name = f"still_{os.getpid()}"
    node = CameraNode("camera_still", camera=StillCamera(), context=context, parameter_overrides=[
        Parameter("name", value=name), Parameter("width", value=160), Parameter("height", value=120),
        Parameter("calibration", value=str(path))])
    listener = rclpy.create_node("info_listener", context=context)
    got: list[CameraInfo] = []
    listener.create_subscription(CameraInfo, f"/camera/{name}/color/camera_info", got.append, qos_profile_sensor_data)
    try:
        spin_until(context, listener, lambda: len(got) >= 2)
    finally:
        listener.destroy_node()
        node.destroy_node()
    assert got, "no camera_info"
    info = got[-1]
    assert list(info.k) == [103.2, 0.0, 81.1, 0.0, 102.9, 58.7, 0.0, 0.0, 1.0]
    assert list(info.d) == [0.05, -0.1, 0.001, 0.0, 0.0]
    assert (info.width, info.height, info.distortion_model) == (160, 120, "plumb_bob")


def test_camera_node_refuses_a_calibration_of_another_resolution(tmp_path, context):
    path = tmp_path / "big.yaml"
    save_camera_yaml(path, CameraIntrinsics(640, 480, 600.0, 600.0, 320.0, 240.0), "still")
    with pytest.raises(ConfigError, match=r"big.yaml: calibrated at 640x480, but the camera streams 160x120"):
        CameraNode("camera_still", camera=StillCamera(), context=context,
                   parameter_overrides=[Parameter("calibration", value=str(path))])


def test_capture_saves_the_image_with_the_arm_pose(tmp_path, context):
    from pld_robot.nodes.calibration_capture import capture_views

    board = BoardSpec()
    intrinsics = CameraIntrinsics(320, 240, 300.0, 300.0, 159.5, 119.5)
    image = BoardRenderer(board, intrinsics).render(look_at_board(board, 0.45, [0.2, 0.1, 0.0]))
    rgb = np.repeat(image[:, :, None], 3, axis=2)
    publisher_node = rclpy.create_node("fake_robot", context=context)
    images = publisher_node.create_publisher(Image, "/camera/wrist/color/image_raw", qos_profile_sensor_data)
    poses = publisher_node.create_publisher(PoseStamped, "/arm/ee_pose", 10)
    stop = threading.Event()

    def publish():
        while not stop.is_set():
            now = time.time()
            images.publish(numpy_to_image(rgb, now, "wrist_color_optical_frame"))
            msg = PoseStamped()
            msg.header.stamp = to_time(now)
            msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = 0.4, -0.1, 0.3
            msg.pose.orientation.x, msg.pose.orientation.w = 1.0, 0.0  # tcp pointing down
            poses.publish(msg)
            time.sleep(0.05)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    answers = iter(["", "", "q"])

    def ask(prompt: str) -> str:
        time.sleep(1.5)  # discovery and the first messages
        return next(answers)

    try:
        count = capture_views("wrist", str(tmp_path / "views"), 5, BoardDetector(board), ask=ask, context=context)
    finally:
        stop.set()
        thread.join()
        publisher_node.destroy_node()
    assert count == 2
    found = load_views(tmp_path / "views")
    views = found.views
    assert found.camera == "wrist" and [v.name for v in views] == ["view_000.png", "view_001.png"]
    np.testing.assert_array_equal(views[0].image, rgb)
    np.testing.assert_allclose(views[1].tcp_pose[:3, 3], [0.4, -0.1, 0.3])
    np.testing.assert_allclose(views[1].tcp_pose[:3, :3], np.diag([1.0, -1.0, -1.0]), atol=1e-9)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sim_records_the_calibration_with_every_episode(tmp_path):
    from pld_robot.calibration.hand_eye import HandEyeResult, save_hand_eye
    from pld_robot.cli import main
    from pld_robot.data import EpisodeReader
    from pld_robot.paths import shipped_config

    save_camera_yaml(tmp_path / "front.yaml", CALIBRATED, "front")
    save_hand_eye(tmp_path / "front_hand_eye.yaml", HandEyeResult("eye_to_hand", np.eye(4), 15, 1.0, 0.1), "front")
    # franky-sim binds fixed ports: an address of this test's own. A text edit, not a YAML round trip,
    # keeps the sections in order: the graph starts them in that order, sim_node before arm_node.
    (tmp_path / "sim.yaml").write_text(shipped_config("sim.yaml").read_text().replace('"127.0.0.1"', '"127.0.0.67"'))
    os.environ["ROS_DOMAIN_ID"] = str(random.randint(201, 230))
    store = tmp_path / "episodes.zarr"
    assert main(["sim", "--config", str(tmp_path / "sim.yaml"), "--episodes", "1", "--max-steps", "15",
                 "--store", str(store), "--calibration", str(tmp_path / "front.yaml"),
                 str(tmp_path / "front_hand_eye.yaml")]) == 0
    reader = EpisodeReader(store)
    assert reader.num_episodes >= 1
    stored = reader.info(0).cameras["front"]
    assert stored["intrinsics"]["camera_matrix"]["data"] == [103.2, 0.0, 81.1, 0.0, 102.9, 58.7, 0.0, 0.0, 1.0]
    assert stored["intrinsics"]["file"] == str(tmp_path / "front.yaml")
    assert (stored["hand_eye"]["mode"], stored["hand_eye"]["parent_frame"]) == ("eye_to_hand", "base")
