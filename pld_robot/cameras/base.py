"""The camera contract every backend (RealSense, OpenCV UVC, sim) fulfils."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Protocol

import numpy as np


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics in the `sensor_msgs/CameraInfo` sense (plumb_bob distortion)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    distortion_model: str = "plumb_bob"


@dataclass(frozen=True)
class Frame:
    """One capture. `stamp` is wall-clock seconds (time.time()) at capture, the ROS header stamp."""

    color: np.ndarray  # HxWx3 uint8, RGB order
    stamp: float
    seq: int
    depth: Optional[np.ndarray] = None  # HxW uint16 millimetres, aligned to color when present


@dataclass(frozen=True)
class CameraConfig:
    """One camera of a robot config (`camera_node` parameters)."""

    name: str = "front"
    driver: Literal["realsense", "opencv", "sim"] = "realsense"
    width: int = 640
    height: int = 480
    fps: int = 30
    serial: str = ""  # RealSense: pick this device; empty = the only one connected
    device: str = "0"  # OpenCV: /dev/videoN path or index
    depth: bool = False  # RealSense: also stream depth aligned to color
    frame_id: str = ""  # default: <name>_color_optical_frame
    calibration: str = ""  # intrinsics YAML (pld-robot calibrate intrinsics): camera_info from it, not the driver

    def __post_init__(self):
        if self.width <= 0 or self.height <= 0 or self.fps <= 0:
            raise ValueError(f"camera '{self.name}': width, height and fps must be positive")


class Camera(Protocol):
    """Opened on `start()`; `read()` returns the newest frame, blocking up to `timeout` s."""

    name: str

    def start(self) -> None: ...

    def read(self, timeout: float = 1.0) -> Frame: ...

    @property
    def intrinsics(self) -> CameraIntrinsics: ...

    def stop(self) -> None: ...


class CameraError(RuntimeError):
    """A camera could not be opened or stopped delivering frames."""
