"""numpy <-> sensor_msgs/Image, CameraInfo and stamps, checked on content, not just shapes."""

from __future__ import annotations

import array

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image

from pld_robot.cameras.base import CameraIntrinsics
from pld_robot.nodes.image_msgs import camera_info, from_time, image_to_numpy, numpy_to_image, to_time

RNG = np.random.default_rng(7)


def test_rgb8_round_trip():
    rgb = RNG.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    msg = numpy_to_image(rgb, 1700000000.25, "front_color_optical_frame")
    assert (msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian) == (480, 640, "rgb8", 1920, 0)
    assert msg.header.frame_id == "front_color_optical_frame"
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1700000000, 250_000_000)
    assert isinstance(msg.data, array.array) and len(msg.data) == 480 * 1920
    assert bytes(msg.data[:6]) == rgb[0, :2].tobytes()  # row-major, R G B per pixel
    np.testing.assert_array_equal(image_to_numpy(msg), rgb)


def test_depth_16uc1_round_trip():
    depth = RNG.integers(0, 65536, (480, 640), dtype=np.uint16)
    msg = numpy_to_image(depth, 12.5, "front_color_optical_frame")
    assert (msg.encoding, msg.step, len(msg.data)) == ("16UC1", 1280, 480 * 1280)
    back = image_to_numpy(msg)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, depth)


def test_mono8_round_trip():
    mono = RNG.integers(0, 256, (48, 64), dtype=np.uint8)
    msg = numpy_to_image(mono, 0.0, "f")
    assert (msg.encoding, msg.step) == ("mono8", 64)
    np.testing.assert_array_equal(image_to_numpy(msg), mono)


def test_non_contiguous_input_is_published_as_seen():
    rgb = RNG.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    view = rgb[::2, ::-1]  # strided and reversed: must be packed, not sent as raw memory
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(view, 0.0, "f")), view)


def test_decodes_padded_rows_and_big_endian_depth():
    depth = RNG.integers(0, 65536, (4, 5), dtype=np.uint16)
    msg = Image(height=4, width=5, encoding="16UC1", is_bigendian=1, step=12)  # 2 bytes of padding per row
    rows = np.zeros((4, 12), np.uint8)
    rows[:, :10] = depth.astype(">u2").view(np.uint8).reshape(4, 10)
    msg.data = array.array("B", rows.tobytes())
    np.testing.assert_array_equal(image_to_numpy(msg), depth)


def test_rejects_what_it_cannot_represent():
    with pytest.raises(ValueError, match="unsupported image encoding 'bgra8'"):
        image_to_numpy(Image(height=1, width=1, encoding="bgra8", step=4, data=[0, 0, 0, 0]))
    with pytest.raises(ValueError, match="step 3 and 3 data bytes are too small for rows of 6 bytes"):
        image_to_numpy(Image(height=1, width=2, encoding="rgb8", step=3, data=[0, 0, 0]))
    with pytest.raises(ValueError, match="shape \\(4, 4, 4\\) and dtype uint8"):
        numpy_to_image(np.zeros((4, 4, 4), np.uint8), 0.0, "f")
    with pytest.raises(ValueError, match="dtype float32"):
        numpy_to_image(np.zeros((4, 4), np.float32), 0.0, "f")


@pytest.mark.parametrize(
    "stamp, sec, nanosec",
    [(0.0, 0, 0), (1.5, 1, 500_000_000), (1700000000.123456, 1700000000, 123456001), (2.9999999999, 3, 0)],
)
def test_stamp_conversion(stamp, sec, nanosec):
    t = to_time(stamp)
    assert t.sec == sec and abs(t.nanosec - nanosec) <= 1000  # float seconds near 1.7e9 resolve ~0.24 us
    assert 0 <= t.nanosec < 1_000_000_000
    assert abs(from_time(t) - stamp) < 1e-6
    assert from_time(Time(sec=5, nanosec=250_000_000)) == 5.25


def test_camera_info_from_intrinsics():
    intr = CameraIntrinsics(640, 480, 615.5, 616.25, 321.0, 239.5, (0.1, -0.2, 0.001, 0.002, 0.03))
    msg = camera_info(intr, 42.75, "wrist_color_optical_frame")
    assert (msg.width, msg.height, msg.distortion_model) == (640, 480, "plumb_bob")
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (
        42, 750_000_000, "wrist_color_optical_frame")
    assert list(msg.k) == [615.5, 0.0, 321.0, 0.0, 616.25, 239.5, 0.0, 0.0, 1.0]
    assert list(msg.p) == [615.5, 0.0, 321.0, 0.0, 0.0, 616.25, 239.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert list(msg.r) == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert list(msg.d) == [0.1, -0.2, 0.001, 0.002, 0.03]
