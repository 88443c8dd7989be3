"""OpenCVCamera on a video file written here with a lossless codec (FFV1): cv2 opens files through
the same VideoCapture API as /dev/videoN, so decoding, colour order and read semantics are real."""

from __future__ import annotations

import os
import random
import time

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from pld_robot.cameras import make_camera
from pld_robot.cameras.base import CameraConfig, CameraError
from pld_robot.nodes.camera_node import CameraNode
from pld_robot.nodes.image_msgs import image_to_numpy

W, H, FPS, FRAMES = 160, 120, 30, 8


def rgb_frame(n: int) -> np.ndarray:
    """Left half pure red, right half pure blue (in RGB), the frame number (mod 25) in the green of row 0."""
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:, : W // 2, 0] = 255
    rgb[:, W // 2 :, 2] = 255
    rgb[0, :, 1] = n % 25 * 10
    return rgb


def write_clip(path: str, frames: int) -> str:
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"FFV1"), FPS, (W, H))
    assert writer.isOpened(), "this OpenCV build cannot write FFV1"
    for n in range(frames):
        writer.write(cv2.cvtColor(rgb_frame(n), cv2.COLOR_RGB2BGR))  # files hold BGR, as cameras deliver
    writer.release()
    return path


def webcam(device: str) -> CameraConfig:
    return CameraConfig(name="webcam", driver="opencv", device=device, width=W, height=H, fps=FPS)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    return write_clip(str(tmp_path_factory.mktemp("video") / "clip.avi"), FRAMES)


def test_reads_every_frame_in_rgb_order_then_reports_the_end(video):
    camera = make_camera(webcam(video))
    camera.start()
    try:
        seen = []
        t0 = time.time()
        with pytest.raises(CameraError, match="camera 'webcam': video file ended"):
            while True:
                frame = camera.read(timeout=1.0)
                assert frame.color.shape == (H, W, 3) and frame.color.dtype == np.uint8
                np.testing.assert_array_equal(frame.color, rgb_frame(frame.seq))
                assert t0 - 0.1 < frame.stamp < time.time()
                seen.append(frame.seq)
        # The file plays at the camera's rate: a reader keeping up sees most frames, each once, in order.
        assert seen == sorted(set(seen)) and seen[-1] == FRAMES - 1
        assert len(seen) >= FRAMES // 2
    finally:
        camera.stop()


def test_a_slow_reader_gets_the_newest_frame_never_a_repeat(video):
    camera = make_camera(webcam(video))
    camera.start()
    try:
        first = camera.read(timeout=1.0)
        time.sleep(1.0)  # the rest of the clip plays meanwhile
        later = camera.read(timeout=1.0)
        assert first.seq < FRAMES - 2 and later.seq == FRAMES - 1  # the newest, not the next
        np.testing.assert_array_equal(later.color, rgb_frame(later.seq))
        with pytest.raises(CameraError, match="video file ended"):
            camera.read(timeout=1.0)
    finally:
        camera.stop()


def test_nominal_intrinsics(video):
    camera = make_camera(CameraConfig(driver="opencv", device=video, width=W, height=H))
    i = camera.intrinsics
    assert (i.width, i.height, i.fx, i.fy, i.cx, i.cy) == (W, H, W, W, W / 2, H / 2)
    assert i.distortion == (0.0,) * 5


def test_size_mismatch_names_both_sizes(video):
    camera = make_camera(CameraConfig(name="webcam", driver="opencv", device=video, width=640, height=480))
    with pytest.raises(CameraError, match=f"asked .* for 640x480, it delivers {W}x{H}"):
        camera.start()


def test_missing_source_is_named(tmp_path):
    missing = str(tmp_path / "nope.avi")
    camera = make_camera(CameraConfig(name="webcam", driver="opencv", device=missing))
    with pytest.raises(CameraError, match="camera 'webcam': cannot open video source .*nope.avi"):
        camera.start()


def test_sim_driver_points_to_sim_node():
    from pld_robot.config import ConfigError

    with pytest.raises(ConfigError, match="sim cameras are rendered and published by sim_node"):
        make_camera(CameraConfig(name="agentview", driver="sim"))


def test_camera_node_builds_the_camera_from_its_parameters(tmp_path):
    video = write_clip(str(tmp_path / "long.avi"), 5 * FPS)  # long enough for discovery under load
    context = Context()
    # A private DDS domain: other test sessions on this machine publish camera topics too.
    rclpy.init(context=context, domain_id=random.Random(os.getpid()).randint(120, 230))
    name = f"uvc_{os.getpid()}"
    params = dict(name=name, driver="opencv", device=video, width=W, height=H, fps=FPS)
    node = listener = executor = None
    try:
        node = CameraNode("camera_uvc", context=context,
                          parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        listener = rclpy.create_node("uvc_listener", context=context)
        got = []
        topic = f"/camera/{name}/color/image_raw"
        listener.create_subscription(Image, topic, got.append, qos_profile_sensor_data)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(listener)
        deadline = time.monotonic() + 5.0
        while len(got) < 2 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
    finally:
        for n in (listener, node):
            if n is not None:
                n.destroy_node()
        if executor is not None:
            executor.shutdown()
        rclpy.try_shutdown(context=context)
    assert len(got) >= 2
    for msg in got:
        assert (msg.encoding, msg.header.frame_id) == ("rgb8", f"{name}_color_optical_frame")
        rgb = image_to_numpy(msg)
        np.testing.assert_array_equal(rgb, rgb_frame(int(rgb[0, 0, 1]) // 10))
