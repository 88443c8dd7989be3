"""RealSenseCamera and CameraNode on a pyrealsense2 software device: frames go through the real SDK
(sensor, syncer, align) and, end to end, through rclpy and DDS to a subscriber."""

from __future__ import annotations

import os
import random
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from pld_robot.cameras import make_camera
from pld_robot.cameras.base import CameraConfig, CameraError, CameraIntrinsics
from pld_robot.cameras.realsense import RealSenseCamera, SoftwareRealSense, select_device
from pld_robot.nodes.camera_node import CameraNode
from pld_robot.nodes.image_msgs import from_time, image_to_numpy

W, H, FPS = 640, 480, 30
INTRINSICS = CameraIntrinsics(W, H, fx=615.5, fy=616.25, cx=321.0, cy=239.5)
# A domain of our own: other test sessions on this machine publish camera topics too.
DOMAIN_ID = random.Random(os.getpid()).randint(120, 230)


def color_image(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (H, W, 3), dtype=np.uint8)


def depth_image(n: int) -> np.ndarray:
    # Piecewise constant: the SDK's align keeps values and only leaves a few holes.
    y, x = np.mgrid[0:H, 0:W]
    return (400 + 10 * n + 100 * ((x // 32) % 7) + 37 * ((y // 24) % 5)).astype(np.uint16)


def assert_aligned_depth(got: np.ndarray, pushed: np.ndarray) -> None:
    """Color and depth share intrinsics, so aligned depth is the pushed depth, up to the SDK's align:
    it leaves a few holes (0) and may move a block edge by a pixel, so edges are not compared."""
    assert got.shape == (H, W) and got.dtype == np.uint16
    padded = np.pad(pushed, 1, mode="edge")
    interior = np.ones((H, W), bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            interior &= padded[1 + dy : H + 1 + dy, 1 + dx : W + 1 + dx] == pushed
    filled = got > 0
    assert filled.mean() > 0.9
    compared = filled & interior
    assert compared.mean() > 0.8
    np.testing.assert_array_equal(got[compared], pushed[compared])


@contextmanager
def pushing(sw: SoftwareRealSense, depth: bool = False):
    """Feed frames 1, 2, ... on a fixed FPS schedule, as a camera does, until the block ends; yields
    {frame number: capture stamp}. The SDK pairs color with depth only at about that cadence."""
    pushed: dict[int, float] = {}
    stop = threading.Event()

    def feed():
        next_due = time.monotonic()
        n = 0
        while not stop.is_set():
            n += 1
            pushed[n] = time.time()
            sw.push(color_image(n), pushed[n], n, depth_image(n) if depth else None)
            next_due += 1 / FPS
            stop.wait(max(0.0, next_due - time.monotonic()))

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        yield pushed
    finally:
        stop.set()
        feeder.join()


def open_camera(serial: str, depth: bool = False, name: str = "front"):
    sw = SoftwareRealSense(serial, W, H, FPS, depth=depth, intrinsics=INTRINSICS)
    camera = RealSenseCamera(CameraConfig(name=name, serial=serial, depth=depth), devices=[sw.device])
    camera.start()
    return sw, camera


def test_reads_back_injected_rgb_frames_with_their_stamps():
    sw, camera = open_camera("SW-READ")
    try:
        for n in range(1, 6):
            stamp = time.time()
            sw.push(color_image(n), stamp, n)
            frame = camera.read(timeout=1.0)
            assert frame.color.shape == (H, W, 3) and frame.color.dtype == np.uint8
            np.testing.assert_array_equal(frame.color, color_image(n))
            assert frame.seq == n
            assert abs(frame.stamp - stamp) < 1e-6
            assert frame.depth is None
            time.sleep(1 / FPS)
        # Nothing new: read waits, then names the camera instead of repeating the last frame.
        with pytest.raises(CameraError, match="camera 'front'.*no new frame"):
            camera.read(timeout=0.1)
    finally:
        camera.stop()


def test_slow_reader_gets_the_newest_frame():
    sw, camera = open_camera("SW-NEWEST")
    try:
        for n in range(1, 4):
            sw.push(color_image(n), time.time(), n)
        time.sleep(0.2)  # the reader is busy elsewhere meanwhile
        frame = camera.read(timeout=1.0)
        assert frame.seq == 3
        np.testing.assert_array_equal(frame.color, color_image(3))
    finally:
        camera.stop()


def test_depth_is_aligned_to_color_in_millimetres():
    sw, camera = open_camera("SW-DEPTH", depth=True)
    try:
        with pushing(sw, depth=True):
            frames = [camera.read(timeout=1.0) for _ in range(4)]
        assert [f.seq for f in frames] == sorted({f.seq for f in frames})
        for frame in frames:
            np.testing.assert_array_equal(frame.color, color_image(frame.seq))
            assert_aligned_depth(frame.depth, depth_image(frame.seq))
    finally:
        camera.stop()


def test_depth_in_other_units_is_converted_to_millimetres():
    # The D405 counts depth in 0.1 mm.
    sw = SoftwareRealSense("SW-D405", W, H, FPS, depth=True, intrinsics=INTRINSICS, depth_units=0.0001)
    camera = RealSenseCamera(CameraConfig(serial="SW-D405", depth=True), devices=[sw.device])
    camera.start()
    try:
        with pushing(sw, depth=True):
            frame = camera.read(timeout=1.0)
        assert_aligned_depth(frame.depth, np.rint(depth_image(frame.seq) * 0.1).astype(np.uint16))
    finally:
        camera.stop()


def test_intrinsics_come_from_the_stream_profile_as_plumb_bob():
    distortion = (0.125, -0.25, 0.001, -0.002, 0.0625)
    intrinsics = CameraIntrinsics(W, H, 600.5, 601.5, 318.25, 242.75, distortion)
    sw = SoftwareRealSense("SW-INTR", W, H, FPS, intrinsics=intrinsics)
    camera = RealSenseCamera(CameraConfig(serial="SW-INTR"), devices=[sw.device])
    camera.start()
    try:
        got = camera.intrinsics
        assert (got.width, got.height, got.fx, got.fy, got.cx, got.cy) == (W, H, 600.5, 601.5, 318.25, 242.75)
        assert got.distortion_model == "plumb_bob"
        np.testing.assert_allclose(got.distortion, distortion, rtol=1e-6)  # the SDK keeps float32
    finally:
        camera.stop()


def test_missing_serial_names_the_serial():
    # No camera is attached here, so this is the production path (rs.context) finding nothing.
    camera = make_camera(CameraConfig(name="wrist", serial="123456789012"))
    with pytest.raises(CameraError, match="wrist.*'123456789012'"):
        camera.start()


def test_device_selection_lists_the_connected_serials():
    devices = [SoftwareRealSense("AAA111").device, SoftwareRealSense("BBB222").device]
    assert select_device(devices, "BBB222", "front") is devices[1]
    with pytest.raises(CameraError, match="'CCC333'; connected: AAA111, BBB222"):
        select_device(devices, "CCC333", "front")
    with pytest.raises(CameraError, match=r"2 RealSense devices connected \(AAA111, BBB222\); set `serial`"):
        select_device(devices, "", "front")


def test_unsupported_resolution_lists_what_the_device_offers():
    sw = SoftwareRealSense("SW-RES", W, H, FPS)
    camera = RealSenseCamera(CameraConfig(serial="SW-RES", width=1280, height=720), devices=[sw.device])
    with pytest.raises(CameraError, match="no color stream 1280x720@30 rgb8; available: 640x480@30 rgb8"):
        camera.start()


@pytest.fixture
def ros_context():
    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    yield context
    rclpy.try_shutdown(context=context)


def test_camera_node_publishes_each_frame_over_ros(ros_context):
    name = f"rs_e2e_{os.getpid()}"
    sw = SoftwareRealSense("SW-NODE", W, H, FPS, depth=True, intrinsics=INTRINSICS)
    camera = RealSenseCamera(CameraConfig(name=name, serial="SW-NODE", depth=True), devices=[sw.device])
    node = CameraNode(
        camera=camera,
        context=ros_context,
        parameter_overrides=[
            Parameter("name", value=name),
            Parameter("serial", value="SW-NODE"),
            Parameter("depth", value=True),
        ],
    )
    listener = Node("camera_test_listener", context=ros_context)
    got: dict[str, list] = {"color": [], "info": [], "depth": []}
    prefix = f"/camera/{name}"
    for kind, msg_type, topic in [
        ("color", Image, "color/image_raw"),
        ("info", CameraInfo, "color/camera_info"),
        ("depth", Image, "aligned_depth_to_color/image_raw"),
    ]:
        listener.create_subscription(msg_type, f"{prefix}/{topic}", got[kind].append, qos_profile_sensor_data)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(listener)
    try:
        deadline = time.monotonic() + 8.0
        with pushing(sw, depth=True) as pushed:
            while min(len(v) for v in got.values()) < 3 and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown()
        listener.destroy_node()
        node.destroy_node()

    assert min(len(v) for v in got.values()) >= 3, {k: len(v) for k, v in got.items()}

    def frame_of(msg) -> int:
        stamp = from_time(msg.header.stamp)
        matches = [n for n, t in pushed.items() if abs(t - stamp) < 1e-6]
        assert len(matches) == 1, f"header stamp {stamp} is no pushed frame's capture time"
        return matches[0]

    color_frames = [frame_of(msg) for msg in got["color"]]
    assert len(set(color_frames)) == len(color_frames), "a frame was published twice"
    for msg, n in zip(got["color"], color_frames):
        assert (msg.width, msg.height, msg.encoding, msg.step) == (W, H, "rgb8", W * 3)
        assert msg.header.frame_id == f"{name}_color_optical_frame"
        np.testing.assert_array_equal(image_to_numpy(msg), color_image(n))
    for msg in got["depth"]:
        n = frame_of(msg)
        assert (msg.width, msg.height, msg.encoding, msg.step) == (W, H, "16UC1", W * 2)
        assert_aligned_depth(image_to_numpy(msg), depth_image(n))
    for msg in got["info"]:
        frame_of(msg)
        i = INTRINSICS
        assert list(msg.k) == [i.fx, 0.0, i.cx, 0.0, i.fy, i.cy, 0.0, 0.0, 1.0]
        assert (msg.width, msg.height, msg.distortion_model) == (W, H, "plumb_bob")
        assert msg.header.frame_id == f"{name}_color_optical_frame"
